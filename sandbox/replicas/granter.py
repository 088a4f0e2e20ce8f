"""Granter's replica: ``python -m sandbox.replicas.granter --release R --port P``, and
``python -m sandbox.replicas.granter migrate --release R`` (``npm run migration:run``'s stand-in).

As the sprint 4 runbook documents it, its three services in one process (one Deployment each in
production; their routes do not overlap):

- backend-core (3.3): ``GET /health`` -> ``{"status":"healthy","services":{"database":"up","api":"up"}}``,
  no version; the API of the five smoke flows (auth, search, scraper, IA) from sandbox.granter;
- data-service: ``GET /data-service/health``; web-frontend (4.3): ``GET /frontend/health``;
- ``/metrics``: the runbook names none; the usual ``http_requests_total`` (a ``status`` label),
  ``http_request_duration_seconds``, ``db_query_duration_seconds``, ``db_connections_in_use`` and
  the process's own, as a Node.js service with prom-client would expose them.

Its database is ``DATABASE_URL``. Migrations are SQL files in ``granter_migrations/`` recorded as
TypeORM records them (``migrations``: id, timestamp, name), after the sandbox's Granter tables
(``sandbox/seed_granter.sql``), which the first migration names as the runbook's ``users`` and
``grants``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from prometheus_client import Gauge, Histogram
from starlette.applications import Starlette

from sandbox.granter import Granter
from sandbox.replicas.runner import (
    BUCKETS,
    CRASH_ON_START,
    HttpMetrics,
    Release,
    SqlTool,
    main,
    migrate_from,
    pooled_app,
    timed_cursors,
)

HERE = Path(__file__).resolve().parent
MIGRATIONS = HERE / "granter_migrations"
BASE_SCHEMA = HERE.parent / "seed_granter.sql"
_BASE = ("20260127000050-UsersAndGrants.sql",)
RELEASES = {
    r.name: r
    for r in (
        Release("1.9.0", _BASE),
        Release("2.0.0", (*_BASE, "20260128001000-GrantTags.sql")),
        Release("2.0.0-bad-extraction", (*_BASE, "20260128001000-GrantTags.sql"), fault="bad-extraction"),
        Release("2.0.0-bad-migration", (*_BASE, "20260128001000-GrantReviewerBroken.sql")),
        Release("2.0.0-crashloop", (*_BASE, "20260128001000-GrantTags.sql"), fault=CRASH_ON_START),
    )
}
"""1.9.0 serves first, 2.0.0 is the good release; ``-bad-extraction``'s IA flow has no fallback
(smoke flow 4 fails), ``-bad-migration``'s migration fails, ``-crashloop`` exits as it starts
(on Kubernetes: CrashLoopBackOff)."""


def _typeorm_row(file: str) -> tuple[int, str]:
    """``20260128001000-GrantTags.sql`` -> (20260128001000, "GrantTags20260128001000"), TypeORM's."""
    timestamp, _, name = file.removesuffix(".sql").partition("-")
    return int(timestamp), f"{name}{timestamp}"


TYPEORM = SqlTool(
    table="migrations",
    create="CREATE TABLE IF NOT EXISTS migrations "
    "(id serial PRIMARY KEY, timestamp bigint NOT NULL, name varchar NOT NULL)",
    applied="SELECT name FROM migrations",
    record="INSERT INTO migrations (timestamp, name) VALUES (%s, %s)",
    row=_typeorm_row,
)


def migrate(release: Release, dsn: str) -> int:
    """The base tables (idempotent), then the release's migrations not yet recorded."""
    return migrate_from(BASE_SCHEMA, TYPEORM, MIGRATIONS, release, dsn)


def _app(release: Release, _port: int) -> Starlette:
    metrics = HttpMetrics("http_requests_total", "http_request_duration_seconds")
    queries = Histogram(
        "db_query_duration_seconds", "Database query latency", buckets=BUCKETS, registry=metrics.registry
    )
    app, pool = pooled_app(
        metrics, lambda pool: Granter(pool, release.fault).routes(), cursor_factory=timed_cursors(queries)
    )
    in_use = Gauge("db_connections_in_use", "Connections lent out by the pool", registry=metrics.registry)
    in_use.set_function(
        lambda: pool.get_stats().get("pool_size", 0) - pool.get_stats().get("pool_available", 0)
    )
    return app


if __name__ == "__main__":
    sys.exit(main("granter", RELEASES, _app, migrate))
