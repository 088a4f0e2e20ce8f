"""Hooks a suite's conftest.py can implement to wire releasegate to its environments."""

from __future__ import annotations

import pytest


@pytest.hookspec
def pytest_releasegate_prepare(config: pytest.Config, env: object, progress: object) -> None:
    """Called once before any gate runs, e.g. to start an embedded sandbox that is not up.

    Raise ``releasegate.errors.ReleasegateError`` to report a problem: it is shown as one line
    and the gates then fail on what is missing, as they would against any broken target.
    """
