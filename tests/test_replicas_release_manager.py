"""Release Manager's example environment end to end against its replica (the local platform):
the whole gate suite (every section the example has that needs no Kubernetes API), pointed
at the replica by sandbox/replicas/release-manager.toml. A good release exits 0, a bad one 11
with the failed gate named, a bad migration 10 with the database untouched. The runs are
ordered so that each starts from the stable release (bad migration, bad release, then the
good one, which stays). One file per system, so that the three run side by side."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from replicas_stack import Replica, failed_gates, rows, run_gates, running, schema_version, serving


@pytest.fixture(scope="module")
def release_manager(module_sandbox_dir: Path) -> Iterator[Replica]:
    with running("release-manager", module_sandbox_dir / "release-manager") as replica:
        yield replica


class TestReleaseManager:
    """release-manager-production.example.toml with sandbox/replicas/release-manager.toml."""

    def test_a_bad_migration_aborts_and_leaves_the_database_as_it_was(self, release_manager: Replica) -> None:
        before = rows(release_manager)
        run = run_gates(release_manager, "2024.01.15-bad-migration")
        assert run.code == 10, run.output[-3000:]
        assert "test_rehearsal_on_the_restored_copy" in failed_gates(run.output), run.output[-3000:]
        assert schema_version(release_manager) == "4a7e2c91d0b3"
        assert rows(release_manager) == before
        assert {(r, s, h["version"]) for r, s, h in serving(release_manager)} == {
            ("2024.01.08", 200, "v2024.01.08")
        }

    def test_a_bad_release_is_rolled_back(self, release_manager: Replica) -> None:
        run = run_gates(release_manager, "2024.01.15-bad-queue")
        assert run.code == 11, run.output[-3000:]
        # the first run that migrates: step 3's `alembic upgrade --sql`, reviewed before it ran
        reviewed = (run.reports / "migration-2024.01.15-bad-queue.sql").read_text()
        assert "-- Running upgrade 4a7e2c91d0b3 -> 9c3f51e8a276" in reviewed
        assert "ALTER TABLE deployments ADD COLUMN strategy" in reviewed
        assert "| locking operations found by squawk |" in run.report
        assert "test_every_instance_is_healthy_on_the_release" in failed_gates(run.output), run.output[-3000:]
        assert {(r, s, h["version"]) for r, s, h in serving(release_manager)} == {
            ("2024.01.08", 200, "v2024.01.08")
        }

    def test_a_release_whose_error_rate_breaks_the_runbook_s_limit_is_rolled_back_by_the_metrics(
        self, release_manager: Replica
    ) -> None:
        """Its health stays healthy: only the error rate from Prometheus shows it (the decision
        tree's "metrics acceptable? NO -> ROLLBACK"), judged on the example's 0.1 %."""
        run = run_gates(release_manager, "2024.01.15-bad-errors")
        assert run.code == 11, run.output[-3000:]
        assert failed_gates(run.output) == ["test_slo_holds_on_the_new_release[error_ratio]"], run.output[
            -3000:
        ]
        assert "the counts show it" in run.output
        assert {(r, s, h["version"]) for r, s, h in serving(release_manager)} == {
            ("2024.01.08", 200, "v2024.01.08")
        }

    def test_the_good_release_goes_out(self, release_manager: Replica) -> None:
        before = rows(release_manager)
        run = run_gates(release_manager, "2024.01.15")
        assert run.code == 0, run.output[-3000:]
        assert schema_version(release_manager) == "9c3f51e8a276"
        # already migrated by the bad builds before it (rollback.database = never): no SQL to review
        assert (run.reports / "migration-2024.01.15.sql").read_text().strip() == ""
        assert rows(release_manager) == before
        answers = serving(release_manager)
        assert {(r, s, h["version"], h["status"]) for r, s, h in answers} == {
            ("2024.01.15", 200, "v2024.01.15", "healthy")
        }
        assert all(
            h["checks"] == {"database": "ok", "cache": "ok", "message_queue": "ok"} for _, _, h in answers
        )
