"""Release Manager's replica: ``python -m sandbox.replicas.release_manager --release R --port P``.

As the deployment guide documents it ("Health Check Verification"):

- ``GET /health``: ``{"status": "healthy", "version": "v2024.01.15", "timestamp":
  "2024-01-15T14:30:00Z", "checks": {"database": "ok", "cache": "ok", "message_queue": "ok"}}``.
  The version is the git tag, ``v{release}`` with a date-like release; 503 ``unhealthy`` when a
  check fails;
- ``GET /metrics``: ``release_manager_requests_total``, ``release_manager_request_duration_seconds``,
  ``release_manager_errors_total``, ``release_manager_db_connections_active`` (and the process's);
- the API the probes and users call: ``GET /api/releases``, ``GET /api/deployments``.

Its database is ``DATABASE_URL`` (tables ``releases``, ``deployments``, ``audit_log``, managed by
alembic: ``release_manager_migrations/releases/<release>/alembic.ini``), its cache ``REDIS_URL``.
The replica has no message queue of its own: the check reports the one it would use as ok, except
in the bad build.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import redis.asyncio as aioredis
from prometheus_client import Counter, Gauge, Histogram
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sandbox.replicas.runner import BUCKETS, CRASH_ON_START, HttpMetrics, Release, main

MIGRATIONS = Path(__file__).resolve().parent / "release_manager_migrations"
STABLE, GOOD = "2024.01.08", "2024.01.15"
RELEASES = {
    r.name: r
    for r in (
        Release(STABLE),
        Release(GOOD),
        Release(f"{GOOD}-bad-queue", fault="message queue unreachable"),
        Release(f"{GOOD}-bad-errors"),
        Release(f"{GOOD}-bad-migration"),
        Release(f"{GOOD}-crashloop", fault=CRASH_ON_START),
    )
}
"""Each release's migrations are ``release_manager_migrations/releases/<release>/alembic.ini``;
``-bad-queue`` cannot reach its message queue (its /health says so), ``-bad-errors`` answers
one GET /api/deployments in five with a 500 while its /health stays healthy (only the error
rate shows it), ``-bad-migration``'s migration fails, ``-crashloop`` exits as it starts (on
Kubernetes: CrashLoopBackOff)."""
COMMITS = {release: hashlib.sha1(f"release-manager v{release}".encode()).hexdigest() for release in RELEASES}
"""The commit each release's tag (``v{release}``) names in the replica's repository: its images
are ``release-manager:prod-<short sha>``, as the guide builds them."""
FAILING_EVERY = 5
"""``-bad-errors``: every fifth request to /api/deployments fails."""
CACHE_KEY = "release-manager:releases"
REVISIONS = {STABLE: "4a7e2c91d0b3", GOOD: "9c3f51e8a276"}
"""The alembic revision each release's schema is at."""


class ReleaseManager:
    def __init__(self, release: Release, port: int, database_url: str, redis_url: str) -> None:
        self.release = release
        self.fails_deployments = release.name.endswith("-bad-errors")
        self.deployment_requests = 0
        self.pool = AsyncConnectionPool(
            database_url, open=False, min_size=1, max_size=4, timeout=2.0, kwargs={"autocommit": True}
        )
        self.cache = aioredis.Redis.from_url(redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self.metrics = HttpMetrics(
            "release_manager_requests_total",
            "release_manager_request_duration_seconds",
            "release_manager_errors_total",
        )
        active = Gauge(
            "release_manager_db_connections_active",
            "Database connections lent out by the pool",
            registry=self.metrics.registry,
        )
        active.set_function(self._connections_active)
        self.db_query = Histogram(
            "db_query_duration_seconds",
            "Database query latency",
            buckets=BUCKETS,
            registry=self.metrics.registry,
        )
        self.cache_hits = Counter("cache_hits", "Reads answered by the cache", registry=self.metrics.registry)
        self.cache_misses = Counter(
            "cache_misses", "Reads that went to the database", registry=self.metrics.registry
        )

    def _connections_active(self) -> float:
        stats = self.pool.get_stats()
        return float(stats.get("pool_size", 0) - stats.get("pool_available", 0))

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/health", self.health),
                Route("/metrics", self.metrics.endpoint),
                Route("/api/releases", self.releases),
                Route("/api/deployments", self.deployments),
            ],
            middleware=[Middleware(self.metrics.middleware)],
            lifespan=self.lifespan,
        )

    @asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        await self.pool.open(wait=False)
        yield
        await self.pool.close(timeout=2.0)
        await self.cache.aclose()

    async def health(self, _request: Request) -> JSONResponse:
        checks = {
            "database": await self._database(),
            "cache": await self._cache(),
            "message_queue": f"failing: {self.release.fault}" if self.release.fault else "ok",
        }
        healthy = all(value == "ok" for value in checks.values())
        body = {
            "status": "healthy" if healthy else "unhealthy",
            "version": f"v{self.release.name}",
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "checks": checks,
        }
        return JSONResponse(body, status_code=200 if healthy else 503)

    async def _database(self) -> str:
        try:
            async with self.pool.connection(timeout=2.0) as conn:
                await conn.execute("SELECT 1 FROM releases LIMIT 1")
        except (PoolTimeout, psycopg.Error) as exc:
            return f"failing: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
        return "ok"

    async def _cache(self) -> str:
        try:
            await self.cache.ping()
        except (aioredis.RedisError, OSError) as exc:
            return f"failing: {type(exc).__name__}"
        return "ok"

    async def releases(self, _request: Request) -> JSONResponse:
        """The releases, read through the cache (60 s): what the guide's cache hit rate measures."""
        try:
            cached = await self.cache.get(CACHE_KEY)
        except (aioredis.RedisError, OSError):
            cached = None
        if cached is not None:
            self.cache_hits.inc()
            return JSONResponse(json.loads(cached))
        self.cache_misses.inc()
        body = [
            {"id": r[0], "name": r[1]} for r in await self._query("SELECT id, name FROM releases ORDER BY id")
        ]
        with suppress(aioredis.RedisError, OSError):
            await self.cache.set(CACHE_KEY, json.dumps(body), ex=60)
        return JSONResponse(body)

    async def deployments(self, _request: Request) -> JSONResponse:
        self.deployment_requests += 1
        if self.fails_deployments and self.deployment_requests % FAILING_EVERY == 0:
            return JSONResponse({"error": "deployments could not be read"}, status_code=500)
        columns = ["id", "environment", "status"] + (["strategy"] if self.release.name != STABLE else [])
        found = await self._query(f"SELECT {', '.join(columns)} FROM deployments ORDER BY id DESC LIMIT 20")
        return JSONResponse([dict(zip(columns, r, strict=True)) for r in found])

    async def _query(self, query: str) -> list[tuple[object, ...]]:
        async with self.pool.connection() as conn:
            started = time.perf_counter()
            found = await (await conn.execute(query)).fetchall()  # type: ignore[arg-type]
            self.db_query.observe(time.perf_counter() - started)
        return found


def _app(release: Release, port: int) -> Starlette:
    return ReleaseManager(release, port, os.environ["DATABASE_URL"], os.environ.get("REDIS_URL", "")).app()


if __name__ == "__main__":
    sys.exit(main("release-manager", RELEASES, _app))
