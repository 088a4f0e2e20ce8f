"""Summit's example environment end to end against its replica (the local platform):
the whole gate suite (every section the example has that needs no Kubernetes API), pointed
at the replica by sandbox/replicas/summit.toml. A good release exits 0, a bad one 11
with the failed gate named, a bad migration 10 with the database untouched. The runs are
ordered so that each starts from the stable release (bad migration, bad release, then the
good one, which stays). One file per system, so that the three run side by side."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from replicas_stack import Replica, failed_gates, rows, run_gates, running, schema_version, serving


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
