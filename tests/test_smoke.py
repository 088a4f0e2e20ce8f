"""``pytest smoke/`` and ``pytest e2e/`` run alone, as an SRE runs them (a subprocess, its exit
code, its reports), against a real sandbox: no deployment run, no --release, a failure is
pytest's plain exit 1."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from gate_runs import CRITICAL_PATH_STEPS, ROOT, TEST_PLUGINS_OFF, environment, run_suite
from sandbox_env import running_sandbox, set_key, write_sandbox_env

from releasegate.ledger import Ledger
from sandbox.releases import policy_bundle

pytestmark = pytest.mark.integration

TOKEN_VAR = "RG_TEST_SMOKE_TOKEN"
TOKEN = "smoke-admin-t0ken-that-must-not-leak"


@pytest.fixture(scope="module")
def env_file(module_sandbox_dir: Path) -> Iterator[Path]:
    """A sandbox whose Granter and Summit guard their test data with a token the journeys read
    from ${...}."""
    os.environ[TOKEN_VAR] = TOKEN
    token = "${" + TOKEN_VAR + "}"
    path = write_sandbox_env(
        module_sandbox_dir,
        metrics=None,
        **{
            "platform.local.secret_env": {"GRANTER_ADMIN_TOKEN": token, "SUMMIT_ADMIN_TOKEN": token},
            "smoke.journeys.granter.token": token,
            "smoke.journeys.summit.token": token,
            "smoke.journeys.summit-critical-path.token": token,
        },
    )
    try:
        with running_sandbox(path) as running:
            yield running
    finally:
        os.environ.pop(TOKEN_VAR, None)


def variant(env_file: Path, name: str, **overrides: object) -> Path:
    """The same sandbox described by another file (other journeys' settings, other reports)."""
    import tomllib

    import tomli_w

    raw = tomllib.loads(env_file.read_text())
    raw["report"]["dir"] = str(env_file.parent / f"reports-{name}")
    for dotted, value in overrides.items():
        set_key(raw, dotted, value)
    path = env_file.parent / f"{name}.toml"
    path.write_text(tomli_w.dumps(raw))
    return path


def test_smoke_runs_alone_in_parallel_and_passes_with_evidence_and_no_secret(env_file: Path) -> None:
    run = run_suite("smoke/", env_file, "-n", "2")

    assert run.code == 0, run.output
    assert "3 passed" in run.output
    assert "releasegate:" not in run.output, "no deployment decision outside a deployment"
    assert Ledger(run.reports / "ledger.sqlite").runs(environment(env_file).name) == [], "no run started"
    suite = ET.parse(run.reports / "junit.xml").getroot().find("testsuite")
    evidence = [p.get("value") for p in suite.iter("property") if p.get("name") == "evidence"]
    assert any(line.startswith("granter step 4: search flow: query + filters: ") for line in evidence)
    assert any(
        line.startswith("/metrics exposes release_manager_errors_total: yes: pass") for line in evidence
    )
    assert any(
        line.startswith("summit step 4: user is denied access to restricted entities: ") for line in evidence
    )
    for path in run.reports.rglob("*"):
        if path.is_file():
            assert TOKEN not in path.read_text(errors="replace"), f"the token leaked into {path}"
    assert TOKEN not in run.output


def test_a_failing_journey_is_a_plain_exit_1_naming_what_failed(env_file: Path) -> None:
    failing = variant(
        env_file,
        "missing-metric",
        **{
            "smoke.journeys.release-manager.metrics": [
                "release_manager_requests_total",
                "release_manager_queue_depth",
            ]
        },
    )
    run = run_suite("smoke/test_release_manager.py", failing)

    assert run.code == 1, run.output
    assert "/metrics exposes release_manager_queue_depth: no: fail" in run.output
    assert "1 failed" in run.output and "Traceback" not in run.output


def test_a_journey_the_environment_does_not_configure_is_skipped_with_the_reason(env_file: Path) -> None:
    only_rm = variant(env_file, "no-granter", **{"smoke.journeys.granter": None})
    run = run_suite("smoke/", only_rm, "-rs")

    assert run.code == 0, run.output
    assert "2 passed, 1 skipped" in run.output
    assert "configures no granter journey ([smoke.journeys.granter])" in run.output


def test_two_smoke_runs_at_once_do_not_interfere(env_file: Path) -> None:
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pytest",
                *TEST_PLUGINS_OFF,
                "smoke/test_granter.py",
                f"--env={variant(env_file, f'twin-{n}')}",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for n in (1, 2)
    ]
    outputs = [proc.communicate(timeout=300)[0] for proc in runs]

    assert [proc.returncode for proc in runs] == [0, 0], outputs
    with psycopg.connect(environment(env_file).database.dsn) as conn:
        left = conn.execute("SELECT count(*) FROM granter_grants WHERE source LIKE 'rg-smoke-%%'").fetchone()[
            0
        ]
    assert left == 0


def test_the_dry_run_plan_shows_each_journey_gate_and_where_it_goes(env_file: Path) -> None:
    run = run_suite("gates/", env_file, "--release=2.0.0", "--dry-run")

    assert run.code == 0, run.output
    url = environment(env_file).platform.url
    assert (
        f"source    journey granter at {url}/granter; test data rg-smoke-<id>, removed at the end"
        in run.output
    )
    assert f"source    journey release-manager at {url}\n" in run.output
    assert f"source    journey summit-critical-path at {url}/summit; test data rg-smoke-<id>" in run.output


def test_e2e_runs_the_critical_path_alone_each_step_timed(env_file: Path) -> None:
    run = run_suite("e2e/", env_file)

    assert run.code == 0, run.output
    assert "1 passed" in run.output and "releasegate:" not in run.output
    suite = ET.parse(run.reports / "junit.xml").getroot().find("testsuite")
    evidence = [p.get("value") for p in suite.iter("property") if p.get("name") == "evidence"]
    for n, step in enumerate(CRITICAL_PATH_STEPS, 1):
        assert any(line.startswith(f"summit-critical-path step {n}: {step}: ") for line in evidence), step
    html = (run.reports / "report.html").read_text()
    assert "summit-critical-path step 5: approver logs in and approves" in html
    for path in run.reports.rglob("*"):
        if path.is_file():
            assert TOKEN not in path.read_text(errors="replace"), f"the token leaked into {path}"


def test_e2e_under_a_bad_policy_bundle_is_a_plain_exit_1_naming_the_denial(env_file: Path) -> None:
    summit = f"{environment(env_file).platform.url}/summit/v1/policy/bundles/main"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    bad = httpx.put(summit, content=policy_bundle("2.0.0-bad-policy").read_bytes(), headers=auth)
    assert bad.status_code == 200, bad.text
    try:
        run = run_suite("e2e/", variant(env_file, "bad-policy"))
    finally:
        good = httpx.put(summit, content=policy_bundle("1.0.0").read_bytes(), headers=auth)
        assert good.status_code == 200

    assert run.code == 1, run.output
    assert "1 failed" in run.output and "Traceback" not in run.output
    assert "-entity (C): HTTP status: 403 == 201: fail" in run.output
    assert "clearance S is not == classification C" in run.output
