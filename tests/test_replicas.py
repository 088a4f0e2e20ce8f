"""Every example environment end to end against its system's replica: the whole gate suite
(every section the example has that needs no Kubernetes API), pointed at the replica by its
override file. A good release exits 0, a bad one 11 with the failed gate named, a bad migration
10 with the database untouched. One stack per system; the runs are ordered so that each starts
from the stable release (bad migration, bad release, then the good one, which stays)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from replicas_stack import Replica, rows, run_gates, running, schema_version, serving


def failed_gates(output: str) -> list[str]:
    """The gates pytest's summary lists as failed (``FAILED gates/test_x.py::name[param]``)."""
    return [m[1] for m in re.finditer(r"^FAILED gates/\S+?\.py::(.+?)(?: - .*)?$", output, re.M)]


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


@pytest.fixture(scope="module")
def granter(module_sandbox_dir: Path) -> Iterator[Replica]:
    with running("granter", module_sandbox_dir / "granter") as replica:
        yield replica


def granter_serves(replica: Replica) -> set[tuple[str, int, str, str]]:
    """What every instance answers: backend-core's health has no version, its services are up."""
    return {
        (r, s, h["status"], ",".join(f"{k}={v}" for k, v in h["services"].items()))
        for r, s, h in serving(replica)
    }


class TestGranter:
    """granter-production.example.toml with sandbox/replicas/granter.toml."""

    def test_a_bad_migration_aborts_and_leaves_the_database_as_it_was(self, granter: Replica) -> None:
        before = rows(granter)
        run = run_gates(granter, "2.0.0-bad-migration")
        assert run.code == 10, run.output[-3000:]
        assert "test_rehearsal_on_the_restored_copy" in failed_gates(run.output), run.output[-3000:]
        assert schema_version(granter) == "UsersAndGrants20260127000050"
        assert rows(granter) == before
        assert granter_serves(granter) == {("1.9.0", 200, "healthy", "database=up,api=up")}

    def test_a_bad_release_is_rolled_back_and_the_database_restored(self, granter: Replica) -> None:
        before = rows(granter)
        run = run_gates(granter, "2.0.0-bad-extraction")
        assert run.code == 11, run.output[-3000:]
        assert "test_user_journey_passes_on_the_new_release[granter]" in failed_gates(run.output), run.output[
            -3000:
        ]
        assert "IA flow" in run.report
        assert schema_version(granter) == "UsersAndGrants20260127000050", "rollback.database = restore"
        assert rows(granter) == before
        assert granter_serves(granter) == {("1.9.0", 200, "healthy", "database=up,api=up")}

    def test_the_good_release_goes_out(self, granter: Replica) -> None:
        before = rows(granter)
        run = run_gates(granter, "2.0.0")
        assert run.code == 0, run.output[-3000:]
        assert schema_version(granter) == "GrantTags20260128001000"
        assert rows(granter) == before
        assert granter_serves(granter) == {("2.0.0", 200, "healthy", "database=up,api=up")}


@pytest.fixture(scope="module")
def summit(module_sandbox_dir: Path) -> Iterator[Replica]:
    with running("summit", module_sandbox_dir / "summit") as replica:
        yield replica


def summit_serves(replica: Replica) -> set[tuple[str, int, str, str]]:
    return {(r, s, h["status"], h["version"]) for r, s, h in serving(replica)}


def policy_version(replica: Replica) -> str:
    return httpx.get(f"{replica.env.platform.url}/health/policy", timeout=5).json()["bundleVersion"]


class TestSummit:
    """summit-production.example.toml with sandbox/replicas/summit.toml."""

    def test_a_bad_migration_aborts_and_leaves_the_database_as_it_was(self, summit: Replica) -> None:
        before = rows(summit)
        run = run_gates(summit, "4.0.0-bad-migration")
        assert run.code == 10, run.output[-3000:]
        assert "test_rehearsal_on_the_restored_copy" in failed_gates(run.output), run.output[-3000:]
        assert schema_version(summit) == "20251001000000"
        assert rows(summit)["entities"] == before["entities"]
        assert summit_serves(summit) == {("3.0.0", 200, "healthy", "v3.0.0-ga")}
        assert policy_version(summit) == "v3.0.0"

    def test_a_bad_policy_bundle_is_rolled_back_with_the_application(self, summit: Replica) -> None:
        run = run_gates(summit, "4.0.0-bad-policy")
        assert run.code == 11, run.output[-3000:]
        assert "test_policy_decides_the_case_as_expected[TS user reads an S entity]" in failed_gates(
            run.output
        ), run.output[-3000:]
        assert summit_serves(summit) == {("3.0.0", 200, "healthy", "v3.0.0-ga")}
        assert policy_version(summit) == "v3.0.0", "GA 7.2: the previous bundle is back"
        assert schema_version(summit) == "20260115000000", "GA 7.3: rollback.database = never"

    def test_the_good_release_goes_out(self, summit: Replica) -> None:
        before = rows(summit)
        run = run_gates(summit, "4.0.0")
        assert run.code == 0, run.output[-3000:]
        assert schema_version(summit) == "20260115000000"
        assert rows(summit)["entities"] == before["entities"], "the journeys' entities are cleaned up"
        assert rows(summit)["audit_log"] > before["audit_log"], "the journeys' audit events stay"
        assert summit_serves(summit) == {("4.0.0", 200, "healthy", "v4.0.0-ga")}
        assert policy_version(summit) == "v4.0.0"
