"""Granter's example environment end to end against its replica (the local platform):
the whole gate suite (every section the example has that needs no Kubernetes API), pointed
at the replica by sandbox/replicas/granter.toml. A good release exits 0, a bad one 11
with the failed gate named, a bad migration 10 with the database untouched. The runs are
ordered so that each starts from the stable release (bad migration, bad release, then the
good one, which stays). One file per system, so that the three run side by side."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from replicas_stack import Replica, failed_gates, rows, run_gates, running, schema_version, serving


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
