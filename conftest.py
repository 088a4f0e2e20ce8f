"""Suite wiring: environments with a [sandbox] section get the embedded sandbox started."""

from __future__ import annotations

import pytest


@pytest.hookimpl(optionalhook=True)  # optional: `pytest -p no:releasegate` still collects
def pytest_releasegate_prepare(config, env, progress):
    if env.sandbox is None or not env.sandbox.autostart:
        return
    from sandbox.stack import ensure_up

    down = ensure_up(env, progress)
    if down:
        progress(
            f"sandbox is partly up, not repairing it: {', '.join(down)} down (python -m sandbox up repairs it)"
        )
