"""The readiness gates in a run against a real sandbox (Prometheus with its alert rules): what the
report says when the checklist holds, and a failing item aborting before anything changed."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gate_runs import database, run_gates, run_suite, serving
from sandbox_env import running_sandbox, variant, write_sandbox_env

from releasegate.config import load_environment
from releasegate.platforms import make_platform

READINESS = "gates/test_01_readiness.py"


@pytest.fixture(scope="module")
def env_file(module_sandbox_dir: Path) -> Iterator[Path]:
    with running_sandbox(write_sandbox_env(module_sandbox_dir)) as env_file:
        scraping(env_file)
        yield env_file


def scraping(env_file: Path) -> None:
    """Until Prometheus has found every instance (file discovery, about 5 s after a start)."""
    url = load_environment(str(env_file), Path.cwd()).metrics.prometheus_url
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        targets = httpx.get(f"{url}/api/v1/targets", timeout=2).json()["data"]["activeTargets"]
        if len(targets) == 3 and all(t["health"] == "up" for t in targets):
            return
        time.sleep(0.5)
    raise AssertionError(f"Prometheus at {url} never scraped the three instances")


def readiness(env_file: Path, *extra: str) -> Any:
    return run_suite(READINESS, env_file, "--release=2.0.0", *extra)


def test_a_ready_release_shows_every_checklist_item_in_the_report(env_file):
    run = readiness(env_file)

    assert run.code == 0, run.output
    report = run.report
    for line in (
        "critical findings (Trivy, trivy.json) | 0 (2 finding(s), none critical) | <= 0 | pass",
        "critical findings (CodeQL, code-scan.sarif) | 0 (1 finding(s), none critical) | <= 0 | pass",
        "acceptance tests passed | 100 % (4 tests, 0 failed, 0 skipped) | >= 100 % | pass",
        "k6 thresholds crossed | 0 | <= 0 | pass",
        "scrape targets down | 0 | <= 0 | pass",
        "alerting rules loaded | 2 (DemoInstanceDown, DemoHighErrorRate) | >= 1 | pass",
        "alerts firing with severity critical | 0 (0 firing, none blocking) | <= 0 | pass",
        "release captain named | confirmed by demo (the sandbox)",
    ):
        assert line in report, line
    assert "deployment window open at" in report
    tls = f"127.0.0.1:{load_environment(str(env_file), Path.cwd()).sandbox.tls_port}"
    assert f"| certificate of {tls} | 90 days (expires " in report  # nginx's TLS listener, the sandbox's CA
    assert "issued by CN=releasegate sandbox CA) | > 30 days | pass |" in report
    assert "| SBOM | CycloneDX 1.5, 5 components" in report
    assert "| provenance | https://slsa.dev/provenance/v1 for releasegate/demo:2.0.0" in report
    logged = json.loads((run.reports / "compliance.jsonl").read_text(encoding="utf-8").splitlines()[-1])
    assert (logged["release"], logged["decision"], logged["exit_code"]) == ("2.0.0", "SUCCESS", 0)
    assert (
        logged["report"]["sha256"]
        == hashlib.sha256((run.reports / "deployment-report.md").read_bytes()).hexdigest()
    )
    assert (
        logged["sbom"]["path"].endswith("2.0.0/artifacts/sbom.cdx.json")
        and len(logged["sbom"]["sha256"]) == 64
    )


def test_an_unconfirmed_people_item_aborts_and_says_how_to_confirm_it(env_file):
    items = ["release captain named", "on-call alerted", "war room"]
    env = variant(env_file, "war-room", **{"readiness.checklist.items": items})

    missing = readiness(env)
    missing_report = missing.report  # the next run writes the same file
    confirmed = readiness(env, "--confirm", "war room=alice")

    assert missing.code == 10, missing.output
    assert 'not confirmed: --confirm "war room=YOUR NAME"' in missing_report
    assert "missing: war room" in missing_report
    assert confirmed.code == 0, confirmed.output
    assert "| war room | confirmed by alice (" in confirmed.report


def test_a_critical_finding_aborts_the_deployment_before_anything_changed(env_file, tmp_path):
    trivy = tmp_path / "trivy.json"
    trivy.write_text(
        json.dumps(
            {
                "SchemaVersion": 2,
                "Results": [
                    {
                        "Vulnerabilities": [
                            {"VulnerabilityID": "CVE-2026-4242", "PkgName": "openssl", "Severity": "CRITICAL"}
                        ]
                    }
                ],
            }
        ),
        encoding="utf-8",
    )
    env = variant(env_file, "critical", **{"readiness.security_scan.reports": [str(trivy)]})
    before = database(env)

    run = run_gates(env, "2.0.0")

    assert run.code == 10, run.output
    assert "CVE-2026-4242 in openssl" in run.report
    assert serving(env) == [("1.0.0", "healthy", "1.0.0")] * 3
    assert database(env) == before


def test_a_missing_artifact_is_one_line_naming_the_file_never_a_pass(env_file, tmp_path):
    env = variant(env_file, "no-k6", **{"readiness.performance.k6_summary": str(tmp_path / "k6.json")})

    run = readiness(env)

    assert run.code == 10, run.output
    assert f"k6 summary {tmp_path / 'k6.json'}: file not found" in run.output
    assert "Traceback" not in run.output


def test_a_critical_alert_firing_blocks_the_deployment(sandbox_dir):
    """An instance stops answering: its target goes down, DemoInstanceDown (critical) fires."""
    with running_sandbox(write_sandbox_env(sandbox_dir)) as env_file:
        scraping(env_file)
        env = load_environment(str(env_file), Path.cwd())
        port = make_platform(env).status().instances[0].url.rsplit(":", 1)[1]
        found = subprocess.run(
            ["pgrep", "-f", f"sandbox.service .*--port {port}"], capture_output=True, text=True
        )
        os.kill(int(found.stdout.split()[0]), signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            alerts = httpx.get(f"{env.metrics.prometheus_url}/api/v1/alerts", timeout=2).json()["data"][
                "alerts"
            ]
            if any(a["state"] == "firing" for a in alerts):
                break
            time.sleep(1)

        run = readiness(env_file)

        assert run.code == 10, run.output
        assert "scrape targets down | 1 (" in run.report
        assert "alerts firing with severity critical | 1 (DemoInstanceDown" in run.report


def test_a_provenance_that_does_not_name_the_release_aborts(env_file):
    other = (
        Path(__file__).resolve().parent.parent / "sandbox" / "releases" / "1.0.0" / "provenance.intoto.json"
    )
    env = variant(env_file, "provenance", **{"compliance.provenance": str(other)})

    run = readiness(env)

    assert run.code == 10, run.output
    assert "no subject names 2.0.0 (subjects: releasegate/demo:1.0.0)" in run.output
