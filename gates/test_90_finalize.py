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
