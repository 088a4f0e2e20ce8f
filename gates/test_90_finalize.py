"""Finalize: hand off (Summit GA 8.4). The deployment report is written when the session ends,
with every gate's evidence, from the ledger.
"""

import pytest

from releasegate.actions.backup import sha256

pytestmark = pytest.mark.phase("finalize")


def test_release_is_recorded_as_current(rollout, platform, release, previous_release, check):
    """The platform records the new release, and the one to roll back to."""
    check.equals("current release", platform.current_release(), release, source="platform state")
    check.record("rollback target", previous_release)


def test_backups_are_kept(backup, check):
    """The backups stay, intact, for the rollback window."""
    for dump in backup:
        check.equals(
            f"{dump.database} backup intact",
            sha256(dump.path) if dump.path.exists() else None,
            dump.sha256,
            source=str(dump.path),
        )


@pytest.mark.strategy("blue-green")
def test_the_previous_color_is_retired_after_the_warm_period(
    rollout, run, platform, previous_release, env, check
):
    """Decommission blue (old version): after keep_warm_s, while rolling back was still a switch."""

    def retire() -> dict:
        warm = platform.warm_remaining_s()
        with run.mutation("retire", f"stop the warm {previous_release} after {warm:.0f} s more", {}) as step:
            result = platform.retire(run.progress, wait=True)
            if not result.ok:
                step.failed(result.reason)
        return {"ok": result.ok, "reason": result.reason, "waited_s": warm}

    retired = run.once("retire", retire)
    check.record("kept warm for", round(retired["waited_s"], 1), unit="s more", source="platform")
    check.holds(f"{previous_release} retired", retired["ok"], detail=retired["reason"], source="platform")
