"""The notes service (tests/notes_service): a service with its own conventions, gated as a new user
would gate it. Its schema is alembic's, its metrics are its own, and its first release goes onto an
empty platform: what the demo never showed (issue 10, items 1, 4 and 5)."""

from __future__ import annotations

from pathlib import Path

from gate_runs import run_gates, run_suite, runs, serving
from notes_service.stack import (
    NOTES,
    REVISIONS,
    notes_database,
    notes_environment,
    running_notes,
    seed,
    write_notes_env,
)

from releasegate.platforms import make_platform


def assert_restored_to_stable(env_file: Path, report: str) -> None:
    """psql shows 1.4.0's revision, columns and every row; the report's check after the restore
    read alembic's revision and passed."""
    revision = REVISIONS["1.4.0"]
    assert notes_database(env_file) == {
        "revision": revision,
        "columns": ["body", "created_at", "id"],
        "rows": NOTES,
    }
    restored = [line for line in report.splitlines() if "after restore: schema version" in line]
    assert restored and f"| == {revision} | pass |" in restored[-1], restored


def test_the_initial_release_goes_onto_an_empty_platform_and_a_restore_is_checked_by_alembic(
    sandbox_dir: Path,
) -> None:
    """Nothing serves and the database is empty: 1.4.0 goes out as the initial release, its own
    migration creating the schema, though nginx's upstream file is not there. Then a release that
    fails verify is rolled back with the database restored, the restore checked by alembic's
    revision: exit 11, not a false ROLLBACK_FAILED."""
    env_file = write_notes_env(sandbox_dir, **{"rollback.database": "restore"})
    with running_notes(env_file, serving=None):
        upstream = Path(notes_environment(env_file).platform.local.nginx_upstream_file)
        upstream.unlink()  # a new user's nginx includes a file nobody has written yet

        first = run_gates(env_file, "1.4.0")
        assert first.code == 0, first.output
        assert serving(env_file) == [("1.4.0", "healthy", "1.4.0")] * 2
        assert notes_database(env_file)["revision"] == REVISIONS["1.4.0"]
        assert "nothing: initial release" in first.report
        assert upstream.exists()

        seed(notes_environment(env_file))
        broken = run_gates(env_file, "1.5.0-stale-version")
        assert broken.code == 11, broken.output
        assert serving(env_file) == [("1.4.0", "healthy", "1.4.0")] * 2
        assert_restored_to_stable(env_file, broken.report)
        assert "ROLLBACK_FAILED" not in broken.output

        again = run_suite("rollback/", env_file)  # the run was undone already: nothing is restored twice
        assert again.code == 0, again.output
        assert notes_database(env_file)["rows"] == NOTES


def test_a_failed_initial_release_is_withdrawn_not_rolled_back_to_nothing(sandbox_dir: Path) -> None:
    """No previous release to go back to: the failed initial release is stopped and nothing serves,
    as before the run; the report says so."""
    env_file = write_notes_env(sandbox_dir)
    with running_notes(env_file, serving=None):
        run = run_gates(env_file, "1.5.0-stale-version")
        assert run.code == 11, run.output
        assert make_platform(notes_environment(env_file)).status().instances == ()
        assert "nothing to go back to, stopping its instances" in run.output
        withdrawn = [
            line for line in run.report.splitlines() if "left running after the initial release" in line
        ]
        assert withdrawn and "| == 0 | pass |" in withdrawn[-1], withdrawn


def test_a_query_that_answers_nothing_for_the_serving_release_is_named_in_preflight(
    sandbox_dir: Path,
) -> None:
    """[metrics.queries] overridden for the SLOs, but request_rate left at a name this service does
    not have: preflight names the query and ABORTS, instead of a baseline waiting for ever."""
    env_file = write_notes_env(
        sandbox_dir,
        **{
            "metrics.queries.request_rate": 'sum(rate(http_requests_total{job="{service}",release="{release}"}[{window}]))'
        },
    )
    with running_notes(env_file):
        run = run_gates(env_file, "1.5.0")
        assert run.code == 10, run.output
        assert (
            "every query answers for the serving release: no: fail - no data from request_rate" in run.output
        )
        assert "http_requests_total" in run.output
        assert notes_database(env_file)["revision"] == REVISIONS["1.4.0"]  # nothing was changed


def test_a_migration_that_fails_on_production_is_restored_and_checked_by_alembic(sandbox_dir: Path) -> None:
    """No rehearsal: alembic fails half way on the real database, which is restored from this
    run's backup; the check after the restore reads alembic's revision: ABORTED (exit 10), not a
    false ROLLBACK_FAILED, and every row is there."""
    env_file = write_notes_env(sandbox_dir, **{"migrate.rehearse": False})
    with running_notes(env_file):
        run = run_gates(env_file, "1.5.0-bad-migration")
        assert run.code == 10, run.output
        assert_restored_to_stable(env_file, run.report)
        assert serving(env_file) == [("1.4.0", "healthy", "1.4.0")] * 2


def test_pytest_rollback_restores_an_alembic_database_and_checks_alembic_s_revision(
    sandbox_dir: Path,
) -> None:
    """A release that went out (SUCCESS) is taken back by hand with ``pytest rollback/``: the
    database is restored from that run's backup and the check after it reads alembic's revision
    with the environment's version_query, as its title says: exit 0, not a false ROLLBACK_FAILED,
    and no "restore the database by hand" left to do."""
    env_file = write_notes_env(sandbox_dir, **{"rollback.database": "restore"})
    with running_notes(env_file):
        out = run_gates(env_file, "1.5.0")
        assert out.code == 0, out.output
        assert notes_database(env_file)["revision"] == REVISIONS["1.5.0"]

        back = run_suite("rollback/", env_file, "--release=1.4.0")
        assert back.code == 0, back.output
        assert serving(env_file) == [("1.4.0", "healthy", "1.4.0")] * 2
        assert notes_database(env_file) == {
            "revision": REVISIONS["1.4.0"],
            "columns": ["body", "created_at", "id"],
            "rows": NOTES,
        }
        version_query = notes_environment(env_file).migrate.version_query
        assert "alembic_version" in version_query
        undo = runs(env_file)[0]
        assert undo.kind == "rollback"
        titles = [
            g["title"] for g in undo.gates if g["gate"].endswith("test_the_schema_is_what_the_policy_says")
        ]
        assert titles == [f"{version_query}: the previous version when the database was undone."]
        assert "schema_migrations" not in back.report
        checked = [line for line in back.report.splitlines() if "| schema version |" in line]
        assert checked and f"| == {REVISIONS['1.4.0']} | pass |" in checked[-1], checked
        assert "by hand" not in back.output
