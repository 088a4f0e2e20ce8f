"""Runs split over workers, and the rollback suite: ``pytest rollback/``, a drill, a dry run.

Each test works a real sandbox the way an operator would and asserts what they would see: exit
codes, which release every instance serves, the schema and the rows, and what the ledger says
happened.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from gate_runs import (
    database,
    environment,
    run_gates,
    run_suite,
    runs,
    serving,
)
from sandbox_env import sandbox_down, sandbox_up, write_sandbox_env

pytestmark = pytest.mark.integration

ONE_ZERO = [("1.0.0", "healthy", "1.0.0")] * 3
TWO_ZERO = [("2.0.0", "healthy", "2.0.0")] * 3


def platform_history(env_file: Path) -> list[tuple[str, str | None, str | None]]:
    """The local platform's own record of what it rolled out (the sandbox's log of rollouts)."""
    state = json.loads((Path(environment(env_file).platform.local.state_dir) / "state.json").read_text())
    return [(h["action"], h["from"], h["to"]) for h in state["history"]]


def test_four_workers_back_up_roll_out_and_roll_back_exactly_once(sandbox_dir: Path) -> None:
    env_file = write_sandbox_env(
        sandbox_dir, metrics=None, **{"verify.max_db_latency_ms": 0.001}
    )  # verify must fail
    sandbox_up(env_file)
    try:
        before = platform_history(env_file)
        run = run_gates(env_file, "2.0.0", "-n", "4")

        assert run.code == 11, run.output
        assert serving(env_file) == ONE_ZERO
        record = runs(env_file)[0]
        assert [i.action for i in record.intents] == ["migrate", "policy", "deploy"]
        assert sorted(record.results) == [
            "backup",
            "deploy",
            "lease",
            "migrate",
            "migration_review",
            "policy",
            "previous_release",
            "rehearsal",
            "scratch",
        ]
        assert record.undo_ok is True and record.undo_by is not None
        assert len(list(Path(environment(env_file).backup.dir).glob("*.dump"))) == 1, "one pg_dump"
        assert platform_history(env_file)[len(before) :] == [
            ("deploy", "1.0.0", "2.0.0"),
            ("rollback", "2.0.0", "1.0.0"),
        ]
        workers = {line.split("]")[0] for line in run.output.splitlines() if "releasegate | [gw" in line}
        assert workers, "the workers' progress lines reach the controller's terminal"
    finally:
        sandbox_down(env_file)


def test_rollback_refuses_to_undo_a_success_unless_told_where_to_go(sandbox_env: Path) -> None:
    assert run_gates(sandbox_env, "2.0.0").code == 0

    refused = run_suite("rollback/", sandbox_env)
    assert refused.code == 4
    assert "ended in SUCCESS: nothing failed to undo" in refused.output
    assert "--release=1.0.0" in refused.output
    assert serving(sandbox_env) == TWO_ZERO

    back = run_suite("rollback/", sandbox_env, "--release=1.0.0")
    assert back.code == 0, back.output
    assert serving(sandbox_env) == ONE_ZERO
    assert database(sandbox_env)["version"] == "0002", "rollback.database = never keeps the migrated schema"


def test_a_drill_goes_back_and_forward_and_is_recorded(sandbox_dir: Path) -> None:
    env_file = write_sandbox_env(sandbox_dir, metrics=None, **{"rollback.database": "restore"})
    sandbox_up(env_file)
    try:
        assert run_gates(env_file, "2.0.0").code == 0
        after_deploy = database(env_file)

        drill = run_suite("rollback/", env_file, "--drill")

        assert drill.code == 0, drill.output
        assert serving(env_file) == TWO_ZERO
        assert database(env_file) == after_deploy, "back on 2.0.0 with its schema and every row"
        record = runs(env_file)[0]
        assert (record.kind, record.release, record.decision) == ("drill", "1.0.0", "SUCCESS")
        checks = [e.check for e in record.evidence]
        assert "rolled back for the drill" in checks and "application rolled back to 1.0.0" in checks
        assert "rolled forward to 2.0.0" in checks and "after the drill: schema version" in checks
    finally:
        sandbox_down(env_file)


def test_a_dry_run_changes_nothing(sandbox_env: Path) -> None:
    env = environment(sandbox_env)
    platform_dir = Path(env.platform.local.state_dir)

    def snapshot() -> dict[str, object]:
        dump = subprocess.run(
            ["pg_dump", "--schema-only", f"--dbname={env.database.dsn}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        # pg_dump marks each dump with a random \restrict key: everything else must be equal.
        schema = [line for line in dump.splitlines() if not line.startswith(("\\restrict", "\\unrestrict"))]
        return {
            "database": database(sandbox_env),
            "schema": schema,
            "serving": serving(sandbox_env),
            "state": (platform_dir / "state.json").read_bytes(),
            "upstream": Path(env.platform.local.nginx_upstream_file).read_bytes(),
            "backups": sorted(Path(env.backup.dir).glob("*")) if Path(env.backup.dir).exists() else [],
            "reports": sorted((sandbox_env.parent / "reports").glob("*")),
        }

    before = snapshot()
    plan = run_gates(sandbox_env, "2.0.0", "--dry-run")

    assert plan.code == 0, plan.output
    assert snapshot() == before
    assert "releasegate plan (dry run: nothing is changed): 2.0.0 to sandbox" in plan.output
    assert "serving now: 1.0.0" in plan.output
    assert "action  migrate demo: 0002_customer_tier" in plan.output
    assert "threshold verify.max_db_latency_ms = 100" in plan.output
    assert "in deploy, verify, observe, finalize: no further gate runs; roll back to 1.0.0" in plan.output
