"""Migrate: rehearse on the restored copy, then migrate the real database.

Summit GA 3.2 "Test migration (dry run)" on a clone of production, 3.3 "Production migration"
and its check of the latest schema_migrations version; Release Manager `alembic upgrade
head`; Granter phase 2. A failure restores the database from this run's backup and ABORTS.
"""

import pytest

from releasegate.probes.postgres import BLOCKING_LOCKS_SQL

pytestmark = pytest.mark.phase("migrate")


def test_rehearsal_on_the_restored_copy(rehearsal, check):
    """Dry run first: the release's migrations on the scratch copy restored from the backup."""
    check.record("rehearsal applied", ", ".join(rehearsal.applied) or "nothing pending")
    check.holds("rehearsal succeeded", rehearsal.ok, detail=rehearsal.error)
    check.equals("rehearsal schema version", rehearsal.version_after, rehearsal.expected_version)


@pytest.mark.threshold("migrate.lock_timeout", "migrate.statement_timeout")
def test_migrations_apply(migration, check):
    """Run migration: completes with exit code 0 (each file in its own transaction)."""
    check.record("schema version before", migration.version_before)
    check.record(
        "migrations applied",
        ", ".join(migration.applied) or "nothing pending",
        detail=f"in {migration.duration_s:.2f} s",
    )
    check.holds("migrations succeeded", migration.ok, detail=migration.error)


def test_schema_version_is_what_the_release_expects(migration, postgres, env, check):
    """SELECT version FROM schema_migrations ORDER BY version DESC LIMIT 1: the latest migration."""
    query = env.migrate.version_query
    check.equals(
        "schema version",
        postgres.schema_version(query=query),
        migration.expected_version,
        source=postgres.source(query),
    )


@pytest.mark.threshold("database.max_blocking_locks")
def test_no_locks_left_waiting(migration, postgres, env, check):
    """Check for locks or blocking queries after the migration."""
    check.at_most(
        "lock requests waiting (pg_locks NOT granted)",
        postgres.blocking_locks(),
        env.database.max_blocking_locks,
        source=postgres.source(BLOCKING_LOCKS_SQL),
    )
