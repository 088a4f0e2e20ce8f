"""Keys under which the plugin keeps a run's state on pytest's config and items, and the roles
a pytest process plays under pytest-xdist."""

from __future__ import annotations

import pytest

from releasegate.config import Environment, Phase
from releasegate.evidence import Evidence
from releasegate.run import Run

ENV_KEY = pytest.StashKey[Environment]()
RUN_KEY = pytest.StashKey[Run]()
EVIDENCE_KEY = pytest.StashKey[list[Evidence]]()
ROLLBACK_KEY = pytest.StashKey[object]()
"""The RollbackSession of a ``pytest rollback/`` invocation."""
WORKER_RUN_ID = "releasegate_run_id"
"""The key under which the xdist controller hands its run id to every worker."""


def phase_of(item: pytest.Item) -> Phase | None:
    """The phase a gate declares with ``pytestmark = pytest.mark.phase("verify")``."""
    marker = item.get_closest_marker("phase")
    if marker is None or not marker.args:
        return None
    return Phase(marker.args[0])


def is_worker(config: pytest.Config) -> bool:
    """An xdist worker: runs gates, never decides, never undoes, never writes the final reports."""
    return hasattr(config, "workerinput")


def is_controller(config: pytest.Config) -> bool:
    """The xdist controller: runs no gate itself; decides, undoes and reports for all workers.

    Only known once xdist has configured itself (after releasegate's own configure)."""
    return not is_worker(config) and config.pluginmanager.hasplugin("dsession")
