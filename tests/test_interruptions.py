"""Runs that die and runs that are interrupted: kill -9, Ctrl-C, SIGTERM from a CI runner, and
``--resume``.

Each test works a real sandbox the way an operator would and asserts what they would see: exit
codes, which release every instance serves, the schema and the rows, and what the ledger says
happened.
"""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest
from gate_runs import (
    ROOT,
    database,
    interrupt_when,
    ledger,
    run_gates,
    run_suite,
    runs,
    serving,
    start_gates,
)
from sandbox_env import sandbox_down, sandbox_up, write_sandbox_env

pytestmark = pytest.mark.integration

ONE_ZERO = [("1.0.0", "healthy", "1.0.0")] * 3
TWO_ZERO = [("2.0.0", "healthy", "2.0.0")] * 3


def test_kill_9_mid_rollout_then_rollback_restores_the_previous_release(sandbox_env: Path) -> None:
    gates = start_gates(sandbox_env, "2.0.0")
    output = interrupt_when(gates, lambda line: "ready after" in line and "2.0.0" in line, signal.SIGKILL)
    assert gates.returncode == -signal.SIGKILL, output
    killed = runs(sandbox_env)[0]
    assert killed.status == "running" and killed.intent("deploy").done_at is None, (
        "the ledger says where it stopped"
    )

    refused = run_gates(sandbox_env, "2.0.0")
    assert refused.code == 4
    assert f"has an unfinished run {killed.id}" in refused.output and "pytest rollback/" in refused.output

    rollback = run_suite("rollback/", sandbox_env)
    assert rollback.code == 0, rollback.output
    assert serving(sandbox_env) == ONE_ZERO
    closed = ledger(sandbox_env).run(killed.id)
    assert closed.status == "finished" and closed.decision == "ROLLED_BACK" and closed.undo_ok is True
    assert closed.rolled_back_by == runs(sandbox_env)[0].id
    assert "stopped during deploy without finishing" in closed.failure
    assert "Decision: SUCCESS" in rollback.report and "plan | roll the application back" in rollback.report

    again = run_suite("rollback/", sandbox_env)
    assert again.code == 0, "safe to run twice"
    assert "nothing to undo" in again.report and serving(sandbox_env) == ONE_ZERO


def test_sigterm_during_the_migration_restores_the_database(sandbox_dir: Path) -> None:
    releases = sandbox_dir / "releases"
    shutil.copytree(ROOT / "sandbox" / "releases" / "1.0.0", releases / "1.0.0")
    slow = releases / "2.0.0-slow" / "migrations"
    slow.mkdir(parents=True)
    (slow / "0002_slow.sql").write_text(
        "ALTER TABLE customers ADD COLUMN note text; UPDATE customers SET note = 'x'; SELECT pg_sleep(60);"
    )
    env_file = write_sandbox_env(
        sandbox_dir,
        metrics=None,
        readiness=None,  # a release made up here ships no scan reports, SBOM or provenance
        compliance=None,
        **{
            "migrate.directory": str(releases / "{release}" / "migrations"),
            "migrate.rehearse": False,
            "migrate.statement_timeout": "5min",
        },
    )
    sandbox_up(env_file)
    try:
        before = database(env_file)
        gates = start_gates(env_file, "2.0.0-slow")
        output = interrupt_when(gates, lambda line: "migrating demo" in line, signal.SIGTERM)

        assert gates.returncode == 10, output
        assert database(env_file) == before, "schema and rows as before the run"
        assert serving(env_file) == ONE_ZERO
        run = runs(env_file)[0]
        assert (run.decision, run.interrupted, run.failed_phase) == ("ABORTED", "SIGTERM", "migrate"), output
        assert run.undo_ok is True
    finally:
        sandbox_down(env_file)


def test_ctrl_c_during_the_rollout_rolls_back(sandbox_env: Path) -> None:
    gates = start_gates(sandbox_env, "2.0.0")
    output = interrupt_when(gates, lambda line: "ready after" in line and "2.0.0" in line, signal.SIGINT)

    assert gates.returncode == 11, output
    assert serving(sandbox_env) == ONE_ZERO
    run = runs(sandbox_env)[0]
    assert (run.decision, run.interrupted, run.failed_phase, run.undo_ok) == (
        "ROLLED_BACK",
        "SIGINT",
        "deploy",
        True,
    )


def test_resume_continues_a_killed_run(sandbox_env: Path) -> None:
    gates = start_gates(sandbox_env, "2.0.0")
    interrupt_when(gates, lambda line: "ready after" in line and "2.0.0" in line, signal.SIGKILL)
    killed = runs(sandbox_env)[0]

    resumed = run_gates(sandbox_env, "2.0.0", "--resume")

    assert resumed.code == 0, resumed.output
    assert serving(sandbox_env) == TWO_ZERO
    record = ledger(sandbox_env).run(killed.id)
    assert (record.status, record.decision) == ("finished", "SUCCESS"), "the same run, finished"
    assert f"resuming run {killed.id}" in resumed.output
    before = {g["gate"]: g["outcome"] for g in killed.gates if g["phase"] == "preflight"}
    after = {g["gate"]: g["outcome"] for g in record.gates if g["phase"] == "preflight"}
    assert "passed" in before.values() and after == before, "what passed before the kill is not run again"
    assert [i.action for i in record.intents] == ["migrate", "policy", "deploy", "deploy"], (
        "the rollout, resumed"
    )
