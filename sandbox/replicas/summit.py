"""Summit's replica: ``python -m sandbox.replicas.summit --release R --port P``, and
``python -m sandbox.replicas.summit migrate --release R`` (``pnpm db:migrate``'s stand-in).

As the MVP-4 GA guide documents it, at its host's root:

- 6.2: ``GET /health`` -> ``{"status": "healthy", "version": "v4.0.0-ga"}`` for release 4.0.0;
  ``GET /health/db`` -> ``{"status": "connected", "latency": "1.2ms"}`` (a timed query; GA's
  expectation is ``"<5ms"``); ``GET /health/policy`` -> ``{"status": "healthy", "bundleVersion":
  "v4.0.0"}``;
- 4.1, 5.1, 7.2: the policy engine (``/v1/policy/evaluate``, ``/v1/policy/bundles/main``), and
  6.1, 6.4: users, entities, approvals, the audit trail and test data: sandbox.summit, whose admin
  token is ``SUMMIT_ADMIN_TOKEN``;
- 6.3: ``/metrics`` with ``http_requests_total`` (a ``status`` label) and
  ``http_request_duration_seconds``, and the process's own series.

Each release ships its policy bundle (``summit_policy/<release>.json``, activated over HTTP
before the application, as GA 4.1 orders it). Its database is ``DATABASE_URL``; migrations are
SQL files in ``summit_migrations/`` recorded in ``schema_migrations`` (GA 3.3's ``SELECT version
FROM schema_migrations``), after the sandbox's Summit tables (``sandbox/seed_summit.sql``), which
the first migration names as GA 3.1's ``entities`` and ``audit_log``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from starlette.applications import Starlette

from sandbox.replicas.runner import (
    CRASH_ON_START,
    HttpMetrics,
    Release,
    SqlTool,
    main,
    migrate_from,
    pooled_app,
)
from sandbox.summit import Summit

HERE = Path(__file__).resolve().parent
MIGRATIONS = HERE / "summit_migrations"
POLICY = HERE / "summit_policy"
BASE_SCHEMA = HERE.parent / "seed_summit.sql"
_BASE = ("20251001000000_entities_and_audit_log.sql",)
_LABELS = "20260115000000_entity_labels.sql"
RELEASES = {
    r.name: r
    for r in (
        Release("3.0.0", _BASE),
        Release("4.0.0", (*_BASE, _LABELS)),
        Release("4.0.0-bad-policy", (*_BASE, _LABELS)),
        Release("4.0.0-bad-migration", (*_BASE, "20260115000000_entity_owner_broken.sql")),
        Release("4.0.0-crashloop", (*_BASE, _LABELS), fault=CRASH_ON_START),
    )
}
"""3.0.0 serves first, 4.0.0 is the good release; ``-bad-policy``'s bundle reads dominance as
equality (a TS user is denied an S entity), ``-bad-migration``'s migration fails, ``-crashloop``
exits as it starts (on Kubernetes: CrashLoopBackOff)."""

SCHEMA_MIGRATIONS = SqlTool(
    table="schema_migrations",
    create="CREATE TABLE IF NOT EXISTS schema_migrations "
    "(version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    applied="SELECT version FROM schema_migrations",
    record="INSERT INTO schema_migrations (version) VALUES (%s)",
    row=lambda file: (file.partition("_")[0],),
)


def policy_bundle(release: str) -> Path:
    """The policy bundle ``release`` ships."""
    return POLICY / f"{release}.json"


def migrate(release: Release, dsn: str) -> int:
    """The base tables (idempotent), then the release's migrations not yet recorded."""
    return migrate_from(BASE_SCHEMA, SCHEMA_MIGRATIONS, MIGRATIONS, release, dsn)


def _app(release: Release, _port: int) -> Starlette:
    metrics = HttpMetrics("http_requests_total", "http_request_duration_seconds")
    app, _pool = pooled_app(metrics, lambda pool: Summit(pool, f"v{release.name}-ga").routes())
    return app


if __name__ == "__main__":
    sys.exit(main("summit", RELEASES, _app, migrate))
