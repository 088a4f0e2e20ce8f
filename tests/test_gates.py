"""The gates end to end, run the way an SRE runs them, against a real sandbox each time.

Each test starts ``pytest gates/`` in a subprocess and asserts what the person at the terminal
would see afterwards: the exit code, the decision in the report, which release every instance
serves (asked of each instance directly), the schema version and the rows in PostgreSQL.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from sandbox_env import sandbox_down, sandbox_up, write_sandbox_env

from releasegate.config import Environment, load_environment
from releasegate.ledger import Ledger
from releasegate.platforms import make_platform
from sandbox import stack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
SECRET = "s3cr3t-Pa55-for-the-report-test"


@dataclass
class GateRun:
    code: int
    output: str
    reports: Path

    @property
    def report(self) -> str:
        return (self.reports / "deployment-report.md").read_text()


def run_gates(env_file: Path, release: str, **env_vars: str) -> GateRun:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "gates/", f"--env={env_file}", f"--release={release}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env_vars},
    )
    output = proc.stdout + proc.stderr
    return GateRun(proc.returncode, output, env_file.parent / "reports")


def environment(env_file: Path) -> Environment:
    return load_environment(str(env_file), ROOT)


def serving(env_file: Path) -> list[tuple[str, str, str]]:
    """(release, /health status, /health version) asked of every instance nginx routes to."""
    status = make_platform(environment(env_file)).status()
    answers = []
    for instance in status.instances:
        if instance.name in status.in_service:
            body = httpx.get(f"{instance.url}/health", timeout=5).json()
            answers.append((instance.release, body["status"], body["version"]))
    return answers


def database(env_file: Path) -> dict[str, object]:
    """What an SRE would look at in psql: schema version, columns, rows."""
    with psycopg.connect(environment(env_file).database.dsn) as conn:
        version = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
        columns = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'customers' ORDER BY 1"
            )
        ]
        customers = conn.execute("SELECT count(*) FROM customers").fetchone()[0]
        orders = conn.execute("SELECT count(*), sum(amount_cents) FROM orders").fetchone()
    return {"version": version, "columns": columns, "customers": customers, "orders": tuple(orders)}


def instance_ports(env_file: Path) -> list[str]:
    return sorted(i.url for i in make_platform(environment(env_file)).status().instances)


def test_a_good_release_goes_through_every_gate(tmp_path: Path) -> None:
    env_file = write_sandbox_env(tmp_path, **{"database.password": "${RG_IT_DB_PASSWORD}"})
    sandbox_up(env_file)
    try:
        before = database(env_file)
        run = run_gates(env_file, "2.0.0", RG_IT_DB_PASSWORD=SECRET)

        assert run.code == 0, run.output
        assert "releasegate: SUCCESS (exit 0)" in run.output
        assert serving(env_file) == [("2.0.0", "healthy", "2.0.0")] * 3
        after = database(env_file)
        assert after["version"] == "0002"
        assert "tier" in after["columns"]
        assert (after["customers"], after["orders"]) == (before["customers"], before["orders"]), (
            "rows survived"
        )
        with psycopg.connect(environment(env_file).database.dsn) as conn:
            assert conn.execute("SELECT count(*) FROM customers WHERE tier IS NULL").fetchone()[0] == 0

        report = run.report
        assert "**Decision: SUCCESS** (exit code 0)" in report
        assert "| Previous release | 1.0.0 |" in report
        for phase in ("preflight", "backup", "migrate", "deploy", "verify", "finalize"):
            assert f"| {phase} | passed |" in report
        assert "| migrate | apply 0002_customer_tier to demo |" in report
        assert "requests failed during the rollout | 0 | <= 0 | pass" in report

        suite = ET.parse(run.reports / "junit.xml").getroot().find("testsuite")
        # 31 gates: 24, and the 7 of gates/test_05_kubernetes.py, skipped on the sandbox
        assert (int(suite.get("tests")), int(suite.get("failures")), int(suite.get("errors"))) == (31, 0, 0)
        assert suite.find(".//property[@name='evidence']") is not None
        html = (run.reports / "report.html").read_text()
        assert "Decision: SUCCESS" in html and "releasegate-evidence" in html

        # The secret was resolved and used, and appears nowhere a person or an auditor can read.
        for path in run.reports.rglob("*"):
            if path.is_file():
                assert SECRET.encode() not in path.read_bytes(), path
        assert SECRET not in run.output
    finally:
        sandbox_down(env_file)


def test_an_unhealthy_release_is_rolled_back_and_the_sandbox_is_started_when_down(tmp_path: Path) -> None:
    env_file = write_sandbox_env(tmp_path)
    try:
        run = run_gates(env_file, "2.0.0-bad-health")  # the sandbox is not up: the gates start it

        assert "sandbox up in" in run.output
        assert run.code == 11, run.output
        assert "releasegate: ROLLED_BACK (exit 11)" in run.output
        assert serving(env_file) == [("1.0.0", "healthy", "1.0.0")] * 3
        report = run.report
        assert "**Decision: ROLLED_BACK** (exit code 11)" in report
        assert (
            "Failed gate: `gates/test_40_verify.py::test_every_instance_is_healthy_on_the_release`" in report
        )
        assert "Rollback: verified, took" in report
        assert "| rollback | passed |" in report
        ledger = Ledger(run.reports / "ledger.sqlite")
        record = ledger.run(ledger.runs("sandbox")[0])
        assert [i.action for i in record.intents] == ["deploy"]
        assert record.intents[0].undo["previous_release"] == "1.0.0"
    finally:
        sandbox_down(env_file)


def test_a_crashlooping_release_is_caught_during_the_rollout(sandbox_env: Path) -> None:
    run = run_gates(sandbox_env, "2.0.0-crashloop")

    assert run.code == 11, run.output
    assert serving(sandbox_env) == [("1.0.0", "healthy", "1.0.0")] * 3
    report = run.report
    assert "Failed gate: `gates/test_30_deploy.py::test_rollout_completes` in phase **deploy**" in report
    assert "exited with code 1" in report
    assert "Rollback: verified, took" in report
    assert "| verify | skipped |" in report


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


def test_a_migration_failing_half_way_on_the_target_is_restored_from_the_backup(tmp_path: Path) -> None:
    env_file = write_sandbox_env(tmp_path, **{"migrate.rehearse": False})
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


def test_postgres_down_aborts_at_preflight_naming_the_database(sandbox_env: Path) -> None:
    env = environment(sandbox_env)
    ports = instance_ports(sandbox_env)
    stack.load(sandbox_env).postgres.stop()  # the outage: the database server is gone

    run = run_gates(sandbox_env, "2.0.0")

    assert run.code == 10, run.output
    port = env.database.dsn.rsplit(":", 1)[1].split("/")[0]
    assert f"PostgreSQL database 'demo' at 127.0.0.1:{port}: Connection refused" in run.output
    assert "Traceback" not in run.output
    assert instance_ports(sandbox_env) == ports
    report = run.report
    assert (
        "Failed gate: `gates/test_00_preflight.py::test_database_primary_accepts_writes` in phase **preflight**"
        in report
    )
    assert "None: nothing in the target was changed." in report


@pytest.mark.parametrize("policy", ["down-migrations", "restore"])
def test_a_rollback_takes_the_database_back_as_the_environment_says(tmp_path: Path, policy: str) -> None:
    """2.0.0 migrates, deploys, then fails verify on a threshold: app and schema both go back."""
    env_file = write_sandbox_env(tmp_path, **{"rollback.database": policy, "verify.max_db_latency_ms": 0.001})
    sandbox_up(env_file)
    try:
        before = database(env_file)

        run = run_gates(env_file, "2.0.0")

        assert run.code == 11, run.output
        assert serving(env_file) == [("1.0.0", "healthy", "1.0.0")] * 3
        assert database(env_file) == before, "schema 0001 and every row as before"
        report = run.report
        assert "Failed gate: `gates/test_40_verify.py::test_database_health_latency`" in report
        assert "Rollback: verified" in report
        lost = "anything written after the backup was taken is lost" in report
        assert lost is (policy == "restore"), "only a restore loses writes, and the report says so"
    finally:
        sandbox_down(env_file)
