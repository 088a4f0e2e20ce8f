"""The journeys as verify-phase gates: a release that breaks only a user journey is caught by it
and rolled back (exit 11), and the rollback's verification runs the journeys again on the
previous release ("smoke passes")."""

from __future__ import annotations

from pathlib import Path

import pytest
from gate_runs import run_gates, serving
from sandbox_env import sandbox_down, sandbox_up, write_sandbox_env

pytestmark = pytest.mark.integration


def test_a_release_that_breaks_a_journey_is_rolled_back_and_smoke_passes_on_the_previous_one(
    sandbox_dir: Path,
) -> None:
    env_file = write_sandbox_env(sandbox_dir, metrics=None)
    sandbox_up(env_file)
    try:
        run = run_gates(env_file, "2.0.0-bad-extraction")

        assert run.code == 11, run.output
        assert "releasegate: ROLLED_BACK (exit 11)" in run.output
        assert (
            "failed gate: gates/test_46_smoke.py::test_user_journey_passes_on_the_new_release[granter]"
            in run.output
        )
        assert serving(env_file) == [("1.0.0", "healthy", "1.0.0")] * 3
        report = run.report
        # Only the journey saw it: health on every instance, through nginx, the database and the policy passed.
        verify = report[report.index("### verify") : report.index("### observe")]
        assert verify.count("**PASS**") == 9 and verify.count("**FAIL**") == 1
        assert "**FAIL** Run Smoke Tests" in verify
        assert "| granter: extract a prose document: HTTP status | 422 (" in verify
        assert "| granter step 5: IA flow: extraction + fallback |" in verify
        assert "| granter: test data left after cleanup (rg-smoke-" in verify, "cleaned up all the same"
        # The rollback's verification: every journey again, on 1.0.0, each step timed, nothing left.
        rollback = report[report.index("## Rollback") :]
        assert "| granter step 5: IA flow: extraction + fallback |" in rollback
        assert "| release-manager step 2: GET /metrics: the critical metrics |" in rollback
        assert "| summit step 4: user is denied access to restricted entities |" in rollback
        assert "| summit-critical-path step 5: approver logs in and approves |" in rollback
        assert "| /health: version | 1.0.0 |" in rollback, "Summit's journey on the previous release"
        assert "| fallback document: extractor that answered | fallback | == fallback | pass |" in rollback
        assert "| 0 | == 0 | pass |" in rollback
        assert "| fail |" not in rollback
    finally:
        sandbox_down(env_file)
