"""Migrate: rehearse on the restored copy, then migrate the real database, watched while it runs.

Summit GA 3.2 "Test migration (dry run)" on a clone of production, 3.3 "Production migration"
and its check of the latest schema_migrations version; Release Manager `alembic upgrade
head`; Granter phase 2. A failure restores the database from this run's backup and ABORTS.

A migration must not block users: the locks it holds that user queries wait on are sampled from
pg_locks while it runs (the rehearsal's over migrate.max_lock_s stops the run before production),
and user routes are requested while the real one runs.
"""

import pytest

from releasegate.probes.postgres import BLOCKING_LOCKS_SQL

pytestmark = pytest.mark.phase("migrate")


@pytest.mark.threshold("migrate.review.lint")
def test_the_migration_sql_is_reviewed_before_it_runs(migration_review, env, check):
    """Migration SQL reviewed (Release Manager production 3, `alembic upgrade --sql`): the exact
    SQL kept with the evidence, and squawk's findings on what would lock users out."""
    review, lint = migration_review, env.migrate.review.lint
    if review.sql_path is None:
        check.record("migration SQL", None, detail=review.source)
        return
    check.record("migration SQL", review.sql_path, detail=f"sha256 {review.sha256}; from {review.source}")
    if not review.linted:
        check.record("squawk", "not linted", detail="migrate.review.lint = off, or no SQL to run")
        return
    for finding in review.findings:
        check.record(f"squawk {finding.rule}", f"{finding.file}:{finding.line}", detail=finding.message)
    found = len(review.findings)
    if lint == "fail":
        check.at_most("locking operations found by squawk", found, 0, detail="migrate.review.lint = fail")
    else:
        check.record(
            "locking operations found by squawk",
            found,
            detail="migrate.review.lint = warn: for a person to read before production" if found else "",
        )


def test_rehearsal_on_the_restored_copy(rehearsal, check):
    """Dry run first: the release's migrations on the scratch copy restored from the backup."""
    check.record("rehearsal applied", ", ".join(rehearsal.applied) or "nothing pending")
    _command_output(check, rehearsal, "rehearsal")
    check.holds("rehearsal succeeded", rehearsal.ok, detail=rehearsal.error)
    if rehearsal.expected_version is None:  # the command knows its head; production must reach it too
        check.present(
            "rehearsal schema version",
            rehearsal.version_after,
            detail="neither migrate.expected_version nor expected_version_command is set: production must "
            "reach the version the rehearsal reached",
        )
    else:
        check.equals(
            "rehearsal schema version",
            rehearsal.version_after,
            rehearsal.expected_version,
            detail=f"expected by {rehearsal.expected_from}" if rehearsal.expected_from else "",
        )


@pytest.mark.threshold("migrate.max_lock_s")
def test_rehearsal_holds_no_lock_users_would_wait_on_too_long(rehearsal, env, check):
    """The longest lock the rehearsal held that user reads or writes wait on (pg_locks, sampled
    while it ran): over the limit, production is not touched."""
    _locks_held(check, rehearsal.locks, env.migrate.max_lock_s, "rehearsal")


@pytest.mark.threshold("migrate.lock_timeout", "migrate.statement_timeout")
def test_migrations_apply(migration, check):
    """Run migration: completes with exit code 0 (each file in its own transaction)."""
    check.record("schema version before", migration.version_before)
    check.record(
        "migrations applied",
        ", ".join(migration.applied) or "nothing pending",
        detail=f"in {migration.duration_s:.2f} s",
    )
    _command_output(check, migration, "migration")
    check.holds("migrations succeeded", migration.ok, detail=migration.error)


@pytest.mark.threshold("migrate.max_failed_requests", "verify.request_timeout_s")
def test_users_were_served_during_the_migration(migration, env, check):
    """User routes requested through the load balancer while the migration ran: a request that
    failed (5xx) or got no answer within verify.request_timeout_s counts against the limit."""
    traffic = migration.traffic
    if traffic is None:
        pytest.skip(f"no user traffic during the migration: {migration.unwatched or 'not watched'}")
    answers = ", ".join(f"{kind} x{count}" for kind, count in sorted(traffic.statuses.items()))
    check.at_least(
        "user requests sent during the migration",
        traffic.sent,
        1,
        source=traffic.url,
        detail=f"in {traffic.duration_s:.1f} s; answers: {answers or 'none'}",
    )
    check.record(
        "user requests that timed out during the migration",
        traffic.timed_out,
        detail=f"no answer within {traffic.timeout_s:g} s",
        source=traffic.url,
    )
    check.at_most(
        "user requests failed during the migration (5xx or no answer)",
        traffic.failed,
        env.migrate.max_failed_requests,
        source=traffic.url,
        detail="; ".join(traffic.failures),
    )


@pytest.mark.threshold("migrate.max_lock_s")
def test_migration_held_no_lock_users_would_wait_on_too_long(migration, env, check):
    """The same lock watch on the real migration (the only one when rehearse = false)."""
    if migration.locks is None:
        pytest.skip("no migration ran")
    _locks_held(check, migration.locks, env.migrate.max_lock_s, "migration")


def test_schema_version_is_what_the_release_expects(request, migration, postgres, env, check):
    """{migrate.version_query}: the latest migration (what the release ships: its newest file,
    migrate.expected_version or expected_version_command; without them, the version the rehearsal reached)."""
    query = env.migrate.version_query
    expected, why = migration.expected_version, f"expected by {migration.expected_from or 'the release'}"
    if expected is None and env.migrate.rehearse:
        expected, why = request.getfixturevalue("rehearsal").version_after, "reached by the rehearsal"
    now = postgres.schema_version(query=query)
    if expected is None:  # nothing says what the release expects: the command's word and a version
        check.present(
            "schema version", now, source=postgres.source(query), detail="no expected version known"
        )
        return
    check.equals("schema version", now, expected, source=postgres.source(query), detail=why)


@pytest.mark.threshold("database.max_blocking_locks")
def test_no_locks_left_waiting(migration, postgres, env, check):
    """Check for locks or blocking queries after the migration."""
    check.at_most(
        "lock requests waiting (pg_locks NOT granted)",
        postgres.blocking_locks(),
        env.database.max_blocking_locks,
        source=postgres.source(BLOCKING_LOCKS_SQL),
    )


def _command_output(check, result, what):
    """A failed command's last lines of stderr, where a traceback's cause is."""
    if not result.ok and result.stderr_tail:
        check.record(
            f"{what} command's stderr (last {len(result.stderr_tail)} lines)",
            result.stderr_tail[-1],
            detail="\n".join(result.stderr_tail),
        )


def _locks_held(check, locks, max_lock_s, what):
    """Evidence of the lock watch, then its verdict; a watch that could not sample is no data."""
    if locks is None:
        check.fail(f"locks held by the {what}", "the lock watch did not run")
    check.at_least(
        f"lock watch samples during the {what}",
        locks.samples,
        1,
        source=locks.source,
        detail=f"every {locks.interval_s:g} s for {locks.duration_s:.2f} s",
    )
    if locks.error:
        check.fail(f"locks held by the {what}", locks.error, source=locks.source)
    for held in locks.held[1:5]:
        check.record(f"also held by the {what}", round(held.seconds, 2), unit="s", detail=held.describe())
    check.record(
        f"lock requests of other sessions waiting on the {what} (most at once)",
        locks.max_waiting,
        source=locks.source,
    )
    longest = locks.longest
    check.at_most(
        f"longest lock users wait on held by the {what}",
        round(longest.seconds, 2) if longest else 0.0,
        max_lock_s,
        unit="s",
        source=locks.source,
        detail=longest.describe() if longest else "none seen: no SHARE, EXCLUSIVE or ACCESS EXCLUSIVE lock",
    )
