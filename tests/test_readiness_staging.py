"""Passed in staging and rollback drilled there, read from staging's ledger by production's
readiness gates: a real sandbox named "staging" deploys 2.0.0 with ``pytest gates/`` and drills
its rollback with ``pytest rollback/ --drill``; "production" (the same sandbox, its own reports
and ledger) reads staging's ledger through [readiness.staging.ledger]."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from gate_runs import GateRun, run_gates, run_suite, runs
from sandbox_env import running_sandbox, variant, write_sandbox_env

READINESS = "gates/test_01_readiness.py"


@pytest.fixture(scope="module")
def staging(module_sandbox_dir: Path) -> Iterator[Path]:
    """A sandbox named staging, quick to deploy to: no Prometheus, no journeys, no other checks."""
    env = write_sandbox_env(
        module_sandbox_dir,
        metrics=None,
        smoke=None,
        readiness=None,
        compliance=None,
        **{"environment.name": "staging", "environment.tier": "staging", "platform.local.min_ready_s": 0},
    )
    with running_sandbox(env) as env_file:
        yield env_file


@pytest.fixture(scope="module")
def production(staging: Path) -> Path:
    """Production's readiness: only [readiness.staging], reading staging's ledger; its own
    directory, reports and ledger."""
    home = staging.parent / "production"
    home.mkdir()
    written = variant(
        staging,
        "production",
        **{
            "environment.name": "production",
            "environment.tier": "production",
            "report.dir": str(home / "reports"),
            "readiness": {
                "staging": {
                    "environment": "staging",
                    "within_days": 7,
                    "drill": True,
                    "ledger": {"path": str(staging_ledger(staging))},
                }
            },
        },
    )
    return written.rename(home / written.name)


def staging_ledger(staging: Path) -> Path:
    return staging.parent / "reports" / "ledger.sqlite"


def production_readiness(production: Path) -> GateRun:
    return run_suite(READINESS, production, "--release=2.0.0")


def test_a_release_goes_to_production_only_after_staging_passed_it_and_drilled_its_rollback(
    staging, production
):
    before_staging = production_readiness(production)  # staging has no ledger yet

    deployed = run_gates(staging, "2.0.0")
    assert deployed.code == 0, deployed.output
    staged_run = runs(staging)[0].id

    undrilled = production_readiness(production)
    undrilled_report = undrilled.report  # each run writes the same file

    drill = run_suite("rollback/", staging, "--drill")
    assert drill.code == 0, drill.output
    drill_run = runs(staging)[0].id

    ready = production_readiness(production)
    ready_report = ready.report

    ten_days_back(staging_ledger(staging))
    stale = production_readiness(production)

    assert before_staging.code == 10, before_staging.output
    assert (
        f"staging's ledger {staging_ledger(staging)}: file not found (check [readiness.staging.ledger] path)"
        in before_staging.output
    )
    assert undrilled.code == 10, undrilled.output
    assert (
        f"| days since 2.0.0 passed in staging | 0 days (run {staged_run} ended SUCCESS at "
        in undrilled_report
    )
    assert (
        "| days since the rollback drill of 2.0.0 in staging | no data (no rollback drill of 2.0.0 in staging: "
        "after deploying it there, pytest rollback/ --env=staging --drill) | <= 7 days | no data |"
    ) in undrilled_report
    assert ready.code == 0, ready.output
    assert f"(drill run {drill_run} went back to 1.0.0 and forward again, ended SUCCESS at " in ready_report
    assert f"| ledger {staging_ledger(staging)} |" in ready_report
    assert runs(staging)[0].id == drill_run, "production's checks wrote nothing into staging's ledger"
    assert stale.code == 10, stale.output
    assert (
        f"| days since 2.0.0 passed in staging | 10 days (run {staged_run} ended SUCCESS at " in stale.report
    )
    assert f"drill run {drill_run} went back to 1.0.0 and forward again" in stale.report
    assert stale.report.count("| <= 7 days | fail |") == 2


def ten_days_back(ledger: Path) -> None:
    """As if every run in the ledger had happened ten days earlier."""
    with sqlite3.connect(ledger) as db:
        db.execute(
            "UPDATE runs SET started_at = strftime('%Y-%m-%dT%H:%M:%f+00:00', started_at, '-10 days'), "
            "ended_at = strftime('%Y-%m-%dT%H:%M:%f+00:00', ended_at, '-10 days')"
        )
