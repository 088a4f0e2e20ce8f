"""The gates end to end, run the way an SRE runs them, against a real sandbox each time.

Each test starts ``pytest gates/`` in a subprocess and asserts what the person at the terminal
would see afterwards: the exit code, the decision in the report, which release every instance
serves (asked of each instance directly), the schema version and the rows in PostgreSQL.
"""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import psycopg
import pytest
from gate_runs import ROOT, database, environment, instance_ports, run_gates, serving
from sandbox_env import sandbox_down, sandbox_up, write_sandbox_env

from releasegate.ledger import Ledger
from sandbox import stack

pytestmark = pytest.mark.integration

SECRET = "s3cr3t-Pa55-for-the-report-test"


def test_a_good_release_goes_through_every_gate(sandbox_dir: Path) -> None:
    env_file = write_sandbox_env(
        sandbox_dir,
        **{
            "database.password": "${RG_IT_DB_PASSWORD}",
            # Four workers on two cores move a p95 by a third between the baseline and the watch;
            # the runbook's relative limit is for quieter machines (test_slo_verify tests it).
            "metrics.slo.latency_p95.max_increase_ratio": 0.6,
            # Every gate of the watch, sampled twice: test_slo_observe tests its schedule.
            "metrics.observe.schedule": [{"every_s": 4, "until_s": 8}],
        },
    )
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
        for phase in ("preflight", "backup", "migrate", "deploy", "verify", "observe", "finalize"):
            assert f"| {phase} | passed |" in report
        assert "latency_p95 of 1.0.0" in report, "the baseline, measured before the change"
        assert "error_ratio (error rate < 0.1 %" in report and "burn rate 60s/5s" in report
        assert "| migrate | apply 0002_customer_tier to demo |" in report
        assert "requests failed during the rollout | 0 | <= 0 | pass" in report

        suite = ET.parse(run.reports / "junit.xml").getroot().find("testsuite")
        # 29 gates (the queries asked once, the migration's SQL reviewed, the rehearsal's and the
        # migration's locks, users served during the migration among them), 9 of readiness, a
        # baseline, 8 SLOs in verify, 4 journeys, the policy bundle and 5 policy gates, 10 in
        # observe and the burn rate; no Kubernetes gate
        assert (int(suite.get("tests")), int(suite.get("failures")), int(suite.get("errors"))) == (68, 0, 0)
        assert suite.find(".//property[@name='evidence']") is not None
        html = (run.reports / "report.html").read_text()
        assert "Decision: SUCCESS" in html and "releasegate-evidence" in html

        results = list((run.reports / "allure-results").glob("*-result.json"))
        assert len(results) == 68
        assert "alerts firing with severity critical | 0 (0 firing, none blocking)" in report, "readiness"
        assert "issued by CN=releasegate sandbox CA) | > 30 days | pass |" in report, "over nginx's TLS"
        # The user journeys ran in verify: each step timed in the report, an Allure step each.
        assert (
            "**PASS** Run Smoke Tests" in report and "| granter step 3: scraper flow: multi-page |" in report
        )
        assert "| release-manager step 2: GET /metrics: the critical metrics |" in report
        # Summit's smoke list and its critical path on 2.0.0, each step timed in the report and the HTML.
        assert (
            "**PASS** Run Smoke Tests" in report
            and "| summit step 3: user can read permitted entities |" in report
        )
        assert "| summit-critical-path step 5: approver logs in and approves |" in report
        assert "summit-critical-path step 5: approver logs in and approves" in html
        assert "| /health: version | 2.0.0 |" in report, "Summit's /health on the new release"
        assert any('"name": "granter: IA flow: extraction + fallback"' in p.read_text() for p in results)
        made = subprocess.run(
            ["make", "report", f"REPORTS={run.reports}"], cwd=ROOT, capture_output=True, text=True
        )
        assert made.returncode == 0, made.stdout + made.stderr
        allure_html = run.reports / "allure" / "index.html"
        assert allure_html.stat().st_size > 100_000, "one self-contained file"

        # The secret was resolved and used, and appears nowhere a person or an auditor can read.
        for path in run.reports.rglob("*"):
            if path.is_file():
                assert SECRET.encode() not in path.read_bytes(), path
        assert SECRET not in run.output
    finally:
        sandbox_down(env_file)


def test_an_unhealthy_release_is_rolled_back_and_the_sandbox_is_started_when_down(sandbox_dir: Path) -> None:
    env_file = write_sandbox_env(sandbox_dir, metrics=None)
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
        assert [i.action for i in record.intents] == ["policy", "deploy"]
        assert record.intents[1].undo["previous_release"] == "1.0.0"
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
