"""Verify: the user journeys pass on the new release, each its own gate.

Granter 4.1 "Run Smoke Tests: must pass all 5 flows"; Release Manager verification step 3
"Smoke Tests (5-10 minutes)"; Summit's smoke tests. The journeys are the environment's
[smoke.journeys] (with smoke.on_verify); a failure ROLLS BACK (exit 11), and the rollback's
verification runs them again on the previous release.
"""

import pytest

from releasegate.journeys import run_journey
from releasegate.state import ENV_KEY

pytestmark = pytest.mark.phase("verify")


def pytest_generate_tests(metafunc):
    """One gate per journey of the environment: each is its own line in the reports."""
    if "journey_name" in metafunc.fixturenames:
        env = metafunc.config.stash.get(ENV_KEY, None)
        smoke = env.smoke if env is not None else None
        names = list(smoke.journeys) if smoke is not None and smoke.on_verify else []
        metafunc.parametrize("journey_name", names)


def test_user_journey_passes_on_the_new_release(journey_name, rollout, run, env, check):
    """Run Smoke Tests: the journey's steps pass, and it leaves no test data behind."""
    run_journey(journey_name, env, check, progress=run.progress)
