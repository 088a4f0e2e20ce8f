"""The rollback drill: "Rollback tested in staging" (Summit GA 1.1), "Rollback tested (on
staging)" (Granter 6). `pytest rollback/ --env=staging --drill` rolls the last release that
went out back to the one before, verifies it, rolls forward again, verifies that, and records
the drill in the ledger for production's readiness check to find.
"""

import pytest

pytestmark = pytest.mark.usefixtures("drill_only")


@pytest.fixture
def drill_only(request):
    if not request.config.getoption("rg_drill"):
        pytest.skip("only with --drill")


def test_drill_rolls_back(rollback, check):
    """Roll back exactly as a failed deployment would: application, then database by policy."""
    check.record("drill of", rollback.target.id, detail=f"{rollback.target.release} -> {rollback.back_to}")
    rollback.drill_back(check)


def test_the_previous_release_serves_during_the_drill(rollback, check):
    """Verify rollback: every instance healthy on the previous release."""
    rollback.verify_serving(check)


def test_drill_rolls_forward_again(rollback, check):
    """Back to the release that went out, with its schema and today's data."""
    rollback.drill_forward(check)
