"""The gates end to end and the database: a failing migration, one failing half way, and what a
rollback does to the schema and the rows as the environment says (restore or down-migrations).

Each test starts ``pytest gates/`` in a subprocess and asserts what the person at the terminal
would see afterwards: the exit code, the decision in the report, which release every instance
serves (asked of each instance directly), the schema version and the rows in PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from gate_runs import database, instance_ports, run_gates, serving
from sandbox_env import sandbox_down, sandbox_up, write_sandbox_env

pytestmark = pytest.mark.integration


def test_a_failing_migration_changes_nothing(sandbox_env: Path) -> None:
    before, ports = database(sandbox_env), instance_ports(sandbox_env)

    run = run_gates(sandbox_env, "2.0.0-bad-migration")

    assert run.code == 10, run.output
    assert database(sandbox_env) == before, "schema and rows exactly as before"
    assert (
        instance_ports(sandbox_env) == ports and serving(sandbox_env) == [("1.0.0", "healthy", "1.0.0")] * 3
    )
    report = run.report
    assert "**Decision: ABORTED** (exit code 10)" in report
    assert "test_rehearsal_on_the_restored_copy" in report and "0003_segment_unique.sql failed" in report
    assert "None: nothing in the target was changed." in report


def test_a_migration_failing_half_way_on_the_target_is_restored_from_the_backup(sandbox_dir: Path) -> None:
    env_file = write_sandbox_env(sandbox_dir, metrics=None, **{"migrate.rehearse": False})
    sandbox_up(env_file)
    try:
        before, ports = database(env_file), instance_ports(env_file)

        run = run_gates(env_file, "2.0.0-bad-migration")

        assert run.code == 10, run.output
        after = database(env_file)
        assert after == before and "segment" not in after["columns"], (
            "0002 had committed; the restore undid it"
        )
        assert instance_ports(env_file) == ports, "the application was not touched"
        report = run.report
        assert "Failed gate: `gates/test_20_migrate.py::test_migrations_apply`" in report
        assert "Database restore: verified" in report
        assert "anything written after the backup was taken is lost" in report
        assert "after restore: schema version | 0001 | == 0001 | pass" in report
    finally:
        sandbox_down(env_file)


@pytest.mark.parametrize("policy", ["down-migrations", "restore"])
def test_a_rollback_takes_the_database_back_as_the_environment_says(sandbox_dir: Path, policy: str) -> None:
    """2.0.0 migrates, deploys, then fails verify on a threshold: app and schema both go back."""
    env_file = write_sandbox_env(
        sandbox_dir, metrics=None, **{"rollback.database": policy, "verify.max_db_latency_ms": 0.001}
    )
    sandbox_up(env_file)
    try:
        before = database(env_file)

        run = run_gates(env_file, "2.0.0")

        assert run.code == 11, run.output
        assert serving(env_file) == [("1.0.0", "healthy", "1.0.0")] * 3
        assert database(env_file) == before, "schema 0001 and every row as before"
        report = run.report
        assert "Failed gate: `gates/test_40_verify.py::test_database_answers_in_time`" in report
        assert "Rollback: verified" in report
        lost = "anything written after the backup was taken is lost" in report
        assert lost is (policy == "restore"), "only a restore loses writes, and the report says so"
    finally:
        sandbox_down(env_file)
