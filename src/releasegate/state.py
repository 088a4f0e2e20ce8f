"""Keys under which the plugin keeps a run's state on pytest's config and items."""

from __future__ import annotations

import pytest

from releasegate.config import Environment, Phase
from releasegate.evidence import Evidence
from releasegate.run import Run

ENV_KEY = pytest.StashKey[Environment]()
RUN_KEY = pytest.StashKey[Run]()
EVIDENCE_KEY = pytest.StashKey[list[Evidence]]()


def phase_of(item: pytest.Item) -> Phase | None:
    """The phase a gate declares with ``pytestmark = pytest.mark.phase("verify")``."""
    marker = item.get_closest_marker("phase")
    if marker is None or not marker.args:
        return None
    return Phase(marker.args[0])
