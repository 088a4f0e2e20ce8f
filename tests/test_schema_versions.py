"""The schema version a release expects comes from what it ships (issue 11, part 3).

The notes service's alembic layout (releases/<release>.ini, migrate.workdir = tests/notes_service)
is the real thing: `alembic heads` on a release's script directories says what its migration must
reach. A hand-set ``expected_version`` wins over the command; without either, the gates expect
what the rehearsal reached. End to end: a release whose migration stops short of what it ships
is stopped at the rehearsal (exit 10), both versions named, production untouched.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from gate_runs import run_gates
from notes_service.stack import (
    NOTES,
    REVISIONS,
    notes_database,
    notes_migrate_settings,
    running_notes,
    write_notes_env,
)
from pydantic import ValidationError

from releasegate.actions.migrate import expected_version_of
from releasegate.config import MigrateSettings
from releasegate.errors import ActionError

ROOT = Path(__file__).resolve().parents[1]
NOTES_DIR = ROOT / "tests" / "notes_service"
HEADS = ["{python}", "-m", "alembic", "-c", "releases/{release}.ini", "heads"]

pytestmark = pytest.mark.timeout(300)


def notes_settings(**overrides: object) -> MigrateSettings:
    """With `alembic heads` saying what a release expects."""
    return notes_migrate_settings(**{"expected_version_command": [sys.executable, *HEADS[1:]], **overrides})


@pytest.mark.parametrize("release", ["1.4.0", "1.5.0"])
def test_alembic_heads_of_the_release_s_scripts_is_the_expected_version(release: str) -> None:
    expected = expected_version_of(notes_settings(), release)

    assert expected.version == REVISIONS[release], "`3f9d4b6a2c10 (head)`: its first word"
    assert expected.source.startswith("migrate.expected_version_command `")
    assert f"releases/{release}.ini heads" in expected.source and str(NOTES_DIR) in expected.source


def test_a_hand_set_version_wins_over_the_command() -> None:
    settings = notes_settings(expected_version="v{release}-schema")

    assert expected_version_of(settings, "1.5.0").version == "v1.5.0-schema"
    assert expected_version_of(settings, "1.5.0").source == "migrate.expected_version"


def test_without_either_nothing_is_expected_and_the_rehearsal_decides() -> None:
    expected = expected_version_of(notes_settings(expected_version_command=None), "1.5.0")

    assert (expected.version, expected.source) == (None, "")


def test_the_last_non_empty_line_of_stdout_is_read() -> None:
    script = "print('INFO  [alembic] loading'); print('9a8b7c6d5e4f (head)'); print(); print('  ')"
    settings = notes_settings(expected_version_command=[sys.executable, "-c", script])

    assert expected_version_of(settings, "1.5.0").version == "9a8b7c6d5e4f"


@pytest.mark.parametrize(
    ("script", "problem"),
    [
        (
            "import sys; print('FAILED: no config', file=sys.stderr); sys.exit(3)",
            "exited with 3: FAILED: no config",
        ),
        ("print('   ')", "printed no version"),
    ],
    ids=["fails", "prints-nothing"],
)
def test_a_version_nobody_could_read_is_an_error_never_a_pass(script: str, problem: str) -> None:
    settings = notes_settings(expected_version_command=[sys.executable, "-c", script])

    with pytest.raises(ActionError, match=problem):
        expected_version_of(settings, "1.5.0")


def test_the_sql_runner_expects_its_newest_file_and_refuses_a_command() -> None:
    with pytest.raises(ValidationError, match="the sql runner expects its newest file"):
        MigrateSettings(runner="sql", directory="m/{release}", expected_version_command=["true"])


def test_the_dry_run_prints_the_version_the_release_ships(tmp_path: Path) -> None:
    """Nothing is started: the plan reads the expected version as the run will (alembic heads)."""
    env_file = write_notes_env(tmp_path, **{"migrate.expected_version_command": HEADS})

    plan = run_gates(env_file, "1.5.0", "--dry-run")

    assert plan.code == 0, plan.output
    assert f"expecting {REVISIONS['1.5.0']} (migrate.expected_version_command `" in plan.output, plan.output


# End to end against the notes service --------------------------------------------------------


@pytest.fixture
def notes(sandbox_dir: Path) -> Iterator[Path]:
    """The notes service serving 1.4.0; its release's migration command stops at 1.4.0's revision
    (a pinned `upgrade 7c1e0a2f9b01` left in a deploy script), while `alembic heads` says what ships."""
    env_file = write_notes_env(
        sandbox_dir,
        **{
            "migrate.command": [
                "{python}",
                "-m",
                "alembic",
                "-c",
                "releases/{release}.ini",
                "upgrade",
                "7c1e0a2f9b01",
            ],
            "migrate.expected_version_command": HEADS,
        },
    )
    with running_notes(env_file) as running:
        yield running


@pytest.mark.integration
def test_a_migration_that_does_not_reach_what_the_release_ships_aborts_at_the_rehearsal(notes: Path) -> None:
    run = run_gates(notes, "1.5.0")

    assert run.code == 10, run.output
    assert notes_database(notes) == {
        "revision": REVISIONS["1.4.0"],
        "columns": ["body", "created_at", "id"],
        "rows": NOTES,
    }
    report = run.report
    assert "**Decision: ABORTED** (exit code 10)" in report
    assert "Failed gate: `gates/test_20_migrate.py::test_rehearsal_on_the_restored_copy`" in report
    row = next(line for line in report.splitlines() if "| rehearsal schema version |" in line)
    assert REVISIONS["1.4.0"] in row and f"== {REVISIONS['1.5.0']}" in row and "fail" in row, row
    assert "expected by migrate.expected_version_command `" in row and "releases/1.5.0.ini heads" in row, row
    assert "migrating notes:" not in run.output, "production was never migrated"
