"""The runbooks' phase time limits, enforced (issue 11, part 4), against the notes service.

- ``migrate.timeout_s``: a migration over it is stopped; the migrate gate fails, the database is
  restored from this run's backup, ABORTED (exit 10). 1.5.0-lock's migration holds its lock 6 s.
- ``rollback.timeout_s``: a rollback is never stopped half way; it runs to its end, then its
  measured time is judged, and one over the limit is ROLLBACK_FAILED (exit 12), the report and the
  terminal saying it took too long and what is left to do by hand.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from gate_runs import run_gates
from notes_service.stack import NOTES, REVISIONS, notes_database, running_notes, write_notes_env

pytestmark = [pytest.mark.timeout(300), pytest.mark.integration]

UNCHANGED = {"revision": REVISIONS["1.4.0"], "columns": ["body", "created_at", "id"], "rows": NOTES}


@pytest.fixture
def notes(sandbox_dir: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """The notes service serving 1.4.0, its environment with the test's overrides."""
    with running_notes(write_notes_env(sandbox_dir, **request.param)) as env_file:
        yield env_file


SLOW_MIGRATION = {
    "migrate.timeout_s": 2,
    "migrate.rehearse": False,  # the real migration itself must be the one stopped
    "migrate.max_lock_s": 30,
}


@pytest.mark.parametrize("notes", [SLOW_MIGRATION], indirect=True, ids=["migrate-timeout-2s"])
def test_a_migration_over_migrate_timeout_s_fails_the_gate_and_the_database_is_restored(notes: Path) -> None:
    run = run_gates(notes, "1.5.0-lock")

    assert run.code == 10, run.output
    assert notes_database(notes) == UNCHANGED, "restored from this run's backup"
    report = run.report
    assert "**Decision: ABORTED** (exit code 10)" in report
    assert "Failed gate: `gates/test_20_migrate.py::test_migrations_apply`" in report
    assert "migration command did not finish within 2 s" in report
    assert "Database restore: verified" in report


SLOW_ROLLBACK = {"rollback.timeout_s": 0.5}


@pytest.mark.parametrize("notes", [SLOW_ROLLBACK], indirect=True, ids=["rollback-timeout-0.5s"])
def test_a_rollback_over_rollback_timeout_s_runs_to_its_end_and_is_rollback_failed(notes: Path) -> None:
    """1.5.0-stale-version reports 1.4.0: caught after the rollout, rolled back to 1.4.0, which
    serves again; but not within the runbook's time."""
    run = run_gates(notes, "1.5.0-stale-version")

    assert run.code == 12, run.output
    report = run.report
    assert "**Decision: ROLLBACK_FAILED** (exit code 12)" in report
    row = next(line for line in report.splitlines() if "| rollback duration |" in line)
    took = re.search(
        r"\| rollback duration \| ([\d.]+) s \(every step verified\) \| <= 0\.5 s \| fail \| rollback.timeout_s \|",
        row,
    )
    assert took is not None and float(took.group(1)) > 0.5, row
    assert "application rolled back to 1.4.0" in report, "it was not stopped half way"
    assert "over rollback.timeout_s 0.5 s (every step ran to its end and was verified" in run.output
    assert "left to do by hand:" in run.output and "confirm 1.4.0 serves" in run.output
