"""User journeys run alone: ``pytest smoke/ --env=staging -n auto``.

Each system's journey is one test (``test_granter.py``: ``journey("granter")``), skipped with
the reason when the environment configures no ``[smoke.journeys.NAME]``. Outside a deployment a
failure is pytest's plain exit 1; the verify phase runs the same journeys as gates
(gates/test_46_smoke.py), where a failure rolls back.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from releasegate.config import Environment
from releasegate.evidence import Checker
from releasegate.journeys import JourneyResult, run_journey


@pytest.fixture
def journey(env: Environment, check: Checker) -> Callable[[str], JourneyResult]:
    """``journey("granter")`` runs that journey as the environment configures it."""

    def run(name: str) -> JourneyResult:
        configured = env.smoke.journeys if env.smoke is not None else {}
        if name not in configured:
            pytest.skip(f"{env.name} configures no {name} journey ([smoke.journeys.{name}])")
        return run_journey(name, env, check)

    return run
