"""Preflight: is the target fit to be changed? Nothing in this phase changes anything.

Summit GA 2.2 "Verify infrastructure"; Release Manager "Infrastructure & Monitoring";
Granter checklist 2 "Infrastructure check" and 5 "Database migration scripts ready".
A failure here ABORTS the run (exit 10) after every preflight check has had its say.
"""

from pathlib import Path

import pytest

from releasegate.actions.migrate import migrations_directory, read_migrations
from releasegate.config import duration_seconds
from releasegate.probes.disk import free_bytes
from releasegate.probes.postgres import BLOCKING_LOCKS_SQL, OLDEST_TRANSACTION_SQL, PRIMARY_SQL
from releasegate.release_names import fill
from releasegate.verification import health_is

pytestmark = pytest.mark.phase("preflight")

MIB = 1024 * 1024
INITIAL = "initial release: nothing serves yet"


def test_database_primary_accepts_writes(postgres, check):
    """psql -c "SELECT pg_is_in_recovery(), pg_current_wal_lsn()": f (not in recovery), a valid LSN."""
    in_recovery, lsn = postgres.primary_state()
    check.equals("pg_is_in_recovery()", in_recovery, False, source=postgres.source(PRIMARY_SQL))
    check.present("current WAL LSN", lsn, source=postgres.source(PRIMARY_SQL))


@pytest.mark.threshold("database.max_blocking_locks")
def test_no_blocking_locks(postgres, env, check):
    """No session is waiting on a lock: a migration would queue behind it."""
    check.at_most(
        "lock requests waiting (pg_locks NOT granted)",
        postgres.blocking_locks(),
        env.database.max_blocking_locks,
        source=postgres.source(BLOCKING_LOCKS_SQL),
    )


@pytest.mark.threshold("database.max_transaction_age_s")
def test_no_long_running_transaction(postgres, env, check):
    """No transaction older than the limit: it would hold locks the migration needs."""
    check.at_most(
        "oldest open transaction",
        round(postgres.oldest_transaction_age_s(), 1),
        env.database.max_transaction_age_s,
        unit="s",
        source=postgres.source(OLDEST_TRANSACTION_SQL),
    )


def test_redis_answers_pong(redis, check):
    """redis-cli ping: PONG."""
    reply, elapsed_ms = redis.ping()
    check.equals("Redis PING", reply, "PONG", source=redis.source, detail=f"{elapsed_ms:.1f} ms")


def test_current_release_is_recorded(previous_release, release, platform, check):
    """Previous version identified (Granter 6): the release a rollback goes back to; or, on an
    empty platform, the initial release: nothing to compare with and nothing to go back to."""
    if previous_release is None:
        running = platform.status().instances
        check.equals(
            "instances running without a recorded release",
            len(running),
            0,
            source="platform state",
            detail=", ".join(f"{i.name} {i.release}" for i in running),
        )
        check.record(
            "release serving now",
            "nothing: initial release",
            source="platform state",
            detail="no canary, no baseline; if a gate fails its instances are stopped",
        )
        return
    check.present("release serving now", previous_release, source="platform state")
    check.that(
        "release to deploy is not already serving", release, "!=", previous_release, source="platform state"
    )


@pytest.mark.threshold("verify.health_path")
def test_current_release_is_healthy(service, env, previous_release, check):
    """Target environment health verified: we start from a healthy release, or not at all."""
    if previous_release is None:
        pytest.skip(INITIAL)
    health_is(check, service, env.verify, previous_release, "current release")


@pytest.mark.threshold("backup.free_space_factor")
def test_free_disk_for_the_backup(postgres, env, check):
    """Room for the dump before it is taken: the databases' size times backup.free_space_factor."""
    size = sum(postgres.database_size(db) for db in env.backup.databases)
    where, free = free_bytes(Path(env.backup.dir))
    needed = size * env.backup.free_space_factor
    check.at_least(
        "free disk at the backup directory",
        round(free / MIB, 1),
        round(needed / MIB, 1),
        unit="MiB",
        source=str(where),
        detail=f"{size / MIB:.1f} MiB of databases x {env.backup.free_space_factor:g}",
    )


def test_migration_scripts_ready(env, release, postgres, check):
    """Database migration scripts ready (Granter 5): the release's migrations exist and read."""
    if env.migrate is None:
        pytest.skip("no [migrate] section: this service has no migrations")
    if env.migrate.runner != "sql":
        check.record("migration command", " ".join(fill(p, release) for p in env.migrate.command or []))
        return
    directory = migrations_directory(env.migrate, release)
    migrations = read_migrations(directory)
    check.record(
        "migrations shipped with the release",
        ", ".join(m.label for m in migrations) or "none",
        source=str(directory),
    )
    check.record(
        "schema version now",
        postgres.schema_version(query=env.migrate.version_query),
        source=postgres.source(env.migrate.version_query),
    )


def test_every_query_answers_for_the_serving_release(prometheus, env, previous_release, run, check):
    """Every PromQL query the run will ask, asked once of the release serving now: a metric or
    label name that does not match this service answers nothing, and is named here, not found
    later as a baseline that waits for ever or a canary judged on no data."""
    if previous_release is None:
        pytest.skip(INITIAL)
    metrics = env.metrics
    queries = metrics.queries_in_use()
    wait = duration_seconds(metrics.window) + 3 * metrics.scrape_interval_s
    run.progress(
        f"asking Prometheus each of {len(queries)} queries for {previous_release} (up to {wait:g} s)"
    )

    def needed(name: str) -> bool:
        return not _inconclusive_allowed(env, name)

    answers = prometheus.answers(
        queries,
        release=previous_release,
        histograms=metrics.histogram_queries(),  # their sample's value: the requests counted
        timeout_s=wait,
        needed=needed,
    )
    for name, sample in answers.items():
        check.record(f"{name} of {previous_release}", sample.value, source=sample.source)
    silent = [f"{n} ({s.source})" for n, s in answers.items() if s.value is None and needed(n)]
    check.holds(
        "every query answers for the serving release",
        not silent,
        detail=f"no data from {'; '.join(silent)}: check the metric and label names in [metrics.queries]"
        if silent
        else "",
        source=metrics.prometheus_url,
    )


def _inconclusive_allowed(env, query: str) -> bool:
    """No data is a failure unless every check asking this query says on_no_data = "inconclusive"."""
    users = [
        slo for slo in env.metrics.slo.values() if query in (slo.query, slo.events, slo.total, slo.histogram)
    ]
    return bool(users) and all(slo.on_no_data == "inconclusive" for slo in users)


def test_baseline_of_the_serving_release(baseline, previous_release, env, check):
    """Error rate baseline established (Granter 7): every SLO metric of the release serving now,
    the "production" a new release must stay within 10-20 % of."""
    if previous_release is None:
        pytest.skip(f"{INITIAL}: the new release is held to the absolute thresholds alone")
    for name, measured in baseline.items():
        slo = env.metrics.slo[name]
        label, detail = _baseline_line(name, measured, previous_release)
        if slo.relative_ratio is None and slo.relative_points is None:
            check.record(label, measured["value"], unit=slo.unit, source=measured["source"], detail=detail)
        else:  # the baseline of a relative limit: without it the comparison cannot be made
            check.present(
                label,
                measured["value"],
                unit=slo.unit,
                source=measured["source"],
                on_no_data=slo.on_no_data,
                detail=detail,
            )


def _baseline_line(name: str, measured: dict, previous_release: str) -> tuple[str, str]:
    """How the baseline reads: measured now (the median of its samples), or the previous
    release's history at this time of previous days, each day with its value or none."""

    def shown(value):
        return "none" if value is None else f"{value:.4g}"

    if "history" not in measured:
        samples = ", ".join(shown(v) for v in measured["samples"])
        return f"{name} of {previous_release}", f"median of {samples}"
    days = measured["history"]
    label = f"{name} of {previous_release} at this time {', '.join(days)} ago"
    if measured["value"] is None:
        return label, (
            f"no history of {previous_release} then: it did not serve, or Prometheus keeps less; "
            'set [metrics.baseline] offsets to days it served, or source = "before"'
        )
    return label, "; ".join(f"{offset} ago: {shown(v)}" for offset, v in days.items())
