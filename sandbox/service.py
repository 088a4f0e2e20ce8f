"""The demo service: ``python -m sandbox.service --release R --port P``.

A small but real service over the sandbox's data: Starlette under uvicorn on 127.0.0.1,
PostgreSQL through a small psycopg pool (``DEMO_DATABASE_URL``), Redis as a read cache
(``DEMO_REDIS_URL``) and Prometheus metrics. What a release does differently (its schema, its
faults) is in ``sandbox.releases``.

Endpoints: ``/health/live`` (the process answers), ``/health`` (database, cache and schema
checks, 503 when any fails), ``/health/db`` (a timed ``SELECT 1``), ``/metrics``, and the API:
``GET /api/customers?limit=N``, ``GET /api/customers/{id}`` (cached), ``POST /api/orders``; under
``/granter`` the sandbox's Granter (sandbox/granter.py) and under ``/summit`` its Summit
(sandbox/summit.py).

Every release answers a share of its API requests (``/api/...``; not ``/metrics``, ``/health*``,
``/granter`` or ``/summit``) with a 500, at random: the background error rate, 0 by default, that a
real service has on a good day. It is ``DEMO_BACKGROUND_ERROR_RATE`` in the instance's environment
(an environment file's ``platform.local.env`` sets it for every instance started with that file),
else the sandbox's own setting, ``python -m sandbox up --background-error-rate 0.0005``, which
``up`` keeps in the sandbox's database (table ``demo_settings``) and every instance reads when it
starts, whoever starts it (a deployment, a canary, a rollback), else 0. ``/metrics`` shows it as
``demo_background_error_rate``.

``/metrics`` has what the runbooks watch: requests by route and status, request latency, database
query latency, connections in use, cache hits and misses, and the process's CPU and memory; the
Release Manager guide's four names (``release_manager_requests_total``, ...) show the same series.

Logs are one line per event with its level, so a scan for ``ERROR`` finds the failures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
import redis.asyncio as aioredis
import uvicorn
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from sandbox.common import SETTINGS_TABLE
from sandbox.granter import Granter
from sandbox.releases import RELEASES, Release
from sandbox.summit import Summit
from sandbox.web import first_line, loopback_server, select_one_ms

log = logging.getLogger("demo")
disable_created_metrics()  # no *_created series: the runbooks' queries do not use them

CACHE_TTL_S = 60
CHECK_TIMEOUT_S = 3.0
POOL_MAX_SIZE = 4
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.004,
    0.005,
    0.006,
    0.007,
    0.008,
    0.009,
    0.010,
    0.011,
    0.012,
    0.013,
    0.014,
    0.015,
    0.0165,
    0.018,
    0.02,
    0.022,
    0.024,
    0.026,
    0.028,
    0.03,
    0.033,
    0.036,
    0.04,
    0.044,
    0.048,
    0.052,
    0.056,
    0.06,
    0.065,
    0.07,
    0.075,
    0.08,
    0.09,
    0.1,
    0.125,
    0.15,
    0.2,
    0.25,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
)
"""About 10 % apart between 5 and 100 ms, where this service answers: a quantile interpolated
inside a bucket is off by up to half its width, and the canary judges differences of 20 %."""

DOWNSTREAM_MEDIAN_S, DOWNSTREAM_SIGMA = 0.010, 0.3
"""Every API request waits on a simulated downstream call (pricing, permissions): lognormal,
median 10 ms, p95 about 16 ms, p99 about 20 ms. Latencies are then those of a service, not of
a loopback round trip that any busy neighbour doubles, so comparing releases means something;
the spread is small enough that a p95 over a few seconds of traffic is steady."""

# The faulty builds (sandbox.releases): what each one does wrong, and how much.
ERROR_EVERY = 50
"""bad-errors: every 50th API request answers 500 (2 %), counted per instance."""
SLOWDOWN = 1.0
"""bad-latency: every answer waits as long again as it took, so each latency is twice 2.0.0's (p95
about 40 ms against 20). Against a baseline 25 % is the limit; a busy machine's bursts move a p95
measured before the rollout by a fifth and more, and a 1.6 times slower build slipped through."""
FIVE_TIMES = 5.0
FIVE_TIMES_WITHOUT_BACKGROUND = 0.005
"""errors-5x: its API fails FIVE_TIMES as often as the background rate; on a sandbox without one
(rate 0), 0.5 %, five times the runbooks' 0.1 % error objective."""
SLOW_ROUTE, SLOW_ROUTE_SLOWDOWN = "/api/customers", 0.5
"""slow-endpoint: GET /api/customers (the list) waits half as long again as it took (its whole
latency, and so its p95, times 1.5); every other route answers as 2.0.0 does. The list is one path
in eight of the sandbox's load ([metrics.load] paths; /api/customers/{id} is the other seven), so
the fault is diluted in the service's overall p95: only a judgement per route sees all of it."""
LEAK_BYTES_PER_TICK, LEAK_TICK_S, LEAK_CAP_BYTES = 1 << 20, 0.25, 384 << 20
"""slow-leak: 4 MiB more resident memory every second, up to 384 MiB (then it stops growing)."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


class Metrics:
    """The names the runbooks query: http_requests_total, http_request_duration_seconds, ..."""

    def __init__(self, release: Release, connections_in_use: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.db_query = Histogram(
            "db_query_duration_seconds",
            "Database query latency by query",
            ["query"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.cache_hits = Counter(
            "cache_hits_total", "Cache lookups answered from Redis", registry=self.registry
        )
        self.cache_misses = Counter(
            "cache_misses_total", "Cache lookups that went to the database", registry=self.registry
        )
        self.errors = Counter(
            "errors_total", "Errors by type (http_5xx, exception)", ["type"], registry=self.registry
        )
        for kind in ("http_5xx", "exception"):  # present at 0 from the start: no data is not "no errors"
            self.errors.labels(kind)
        in_use = Gauge(
            "db_connections_in_use", "Database connections lent out by the pool", registry=self.registry
        )
        in_use.set_function(connections_in_use)
        self.registry.register(ReleaseManagerNames(self.requests, self.latency, self.errors, in_use))
        Gauge("db_connections_max", "The size limit of the database pool", registry=self.registry).set(
            POOL_MAX_SIZE
        )
        ProcessCollector(
            registry=self.registry
        )  # process_cpu_seconds_total, process_resident_memory_bytes...
        Gauge("demo_build_info", "The running build", ["release", "schema"], registry=self.registry).labels(
            release.name, release.schema
        ).set(1)
        self.background_error_rate = Gauge(
            "demo_background_error_rate",
            "The share of API requests every release answers with a 500 (a setting, not a fault)",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


RELEASE_MANAGER_NAMES = {
    "http_requests": "release_manager_requests",
    "http_request_duration_seconds": "release_manager_request_duration_seconds",
    "errors": "release_manager_errors",
    "db_connections_in_use": "release_manager_db_connections_active",
}
"""The Release Manager guide's /metrics names for the demo's own series, so the sandbox can show
its profile: the same samples under the guide's names, nothing counted twice."""


class ReleaseManagerNames:
    """A collector re-exposing ``RELEASE_MANAGER_NAMES``' metrics under the guide's names."""

    def __init__(self, *sources: Any) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        for source in self.sources:
            for family in source.collect():
                name = RELEASE_MANAGER_NAMES.get(family.name)
                if name is None:
                    continue
                renamed = Metric(name, family.documentation, family.type)
                renamed.samples = [
                    sample._replace(name=name + sample.name.removeprefix(family.name))
                    for sample in family.samples
                ]
                yield renamed


class MetricsMiddleware:
    """Counts and times every request by its route template (``/api/customers/{id}``)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except Exception:
            self.metrics.errors.labels("exception").inc()
            raise
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            # A route's 500 series exists at 0 from its first request: rate() cannot see the
            # first error of a series that appears with it, and an error ratio would miss it.
            self.metrics.requests.labels(scope["method"], route, "500")
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(scope["method"], route).observe(time.perf_counter() - started)
            if status >= 500:
                self.metrics.errors.labels("http_5xx").inc()


class SlowMiddleware:
    """bad-latency: every answer but /metrics waits ``slowdown`` times as long as it took;
    slow-endpoint: only the answers of ``route`` (a route template) do."""

    def __init__(self, app: ASGIApp, slowdown: float = SLOWDOWN, route: str | None = None) -> None:
        self.app = app
        self.slowdown = slowdown
        self.route = route

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] == "/metrics":
            await self.app(scope, receive, send)
        else:
            await self.app(scope, receive, self._late(scope, send, time.perf_counter()))

    def _late(self, scope: Scope, send: Any, started: float) -> Callable[[Message], Awaitable[None]]:
        async def late_send(message: Message) -> None:
            if message["type"] == "http.response.start" and (
                self.route is None or getattr(scope.get("route"), "path", None) == self.route
            ):
                await asyncio.sleep(self.slowdown * (time.perf_counter() - started))
            await send(message)

        return late_send


class Service:
    def __init__(
        self,
        release: Release,
        port: int,
        database_url: str,
        redis_url: str,
        background_error_rate: float = 0.0,
    ) -> None:
        self.release = release
        self.port = port
        self.pool = AsyncConnectionPool(
            database_url,
            open=False,
            min_size=1,
            max_size=POOL_MAX_SIZE,
            timeout=2.0,
            name=f"demo-{port}",
            check=AsyncConnectionPool.check_connection,
            kwargs={"autocommit": True, "connect_timeout": 2, "application_name": f"demo-{release.name}"},
        )
        self.cache = aioredis.Redis.from_url(redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self.metrics = Metrics(release, self._connections_in_use)
        self.server: uvicorn.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._api_requests = 0
        self._downstream = random.Random(port)  # the same latencies on every run
        # Which requests fail is drawn afresh on every run (not every Nth, not the same ones): a
        # benchmark's healthy deployments are independent trials.
        self._failures = random.Random()
        self.background_error_rate = background_error_rate
        self.error_rate = background_error_rate
        if release.fault == "errors-5x":
            self.error_rate = min(
                1.0,
                FIVE_TIMES * background_error_rate
                if background_error_rate
                else FIVE_TIMES_WITHOUT_BACKGROUND,
            )
        self.metrics.background_error_rate.set(background_error_rate)
        middleware = [Middleware(MetricsMiddleware, metrics=self.metrics)]
        if release.fault == "bad-latency":
            middleware.append(Middleware(SlowMiddleware))
        elif release.fault == "slow-endpoint":
            middleware.append(Middleware(SlowMiddleware, slowdown=SLOW_ROUTE_SLOWDOWN, route=SLOW_ROUTE))
        self.app = Starlette(
            routes=[
                Route("/", self.index),
                Route("/health/live", self.live),
                Route("/health", self.health),
                Route("/health/db", self.health_db),
                Route("/metrics", self.metrics_endpoint),
                Route("/api/customers", self._api(self.list_customers)),
                Route("/api/customers/{customer_id:int}", self._api(self.get_customer)),
                Route("/api/orders", self._api(self.create_order), methods=["POST"]),
                Mount("/granter", routes=Granter(self.pool, release.fault).routes()),
                Mount("/summit", routes=Summit(self.pool, release.name).routes()),
            ],
            middleware=middleware,
            lifespan=self.lifespan,
        )

    @asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        await self.pool.open(wait=False)  # the database may be down: /health says so, live stays up
        self._tasks.append(asyncio.create_task(self._when_serving()))
        if self.release.fault == "slow-leak":
            self._tasks.append(asyncio.create_task(self._leak()))
        yield
        log.info("shutting down: in-flight requests finished")
        for task in self._tasks:
            task.cancel()
        await self.pool.close(timeout=2.0)
        await self.cache.aclose()

    async def _when_serving(self) -> None:
        while self.server is None or not self.server.started:
            await asyncio.sleep(0.05)
        log.info(
            "release %s serving on 127.0.0.1:%d (needs schema %s)",
            self.release.name,
            self.port,
            self.release.schema,
        )
        if self.release.fault == "crashloop":
            await asyncio.sleep(1.0)
            log.error("fatal: cache warm-up failed: KeyError 'customer_tiers'; exiting with code 1")
            logging.shutdown()
            os._exit(1)

    async def _leak(self) -> None:
        """Keep a little more memory every tick, as a cache that is never evicted would."""
        kept: list[bytes] = []
        while len(kept) * LEAK_BYTES_PER_TICK < LEAK_CAP_BYTES:
            kept.append(b"\xa5" * LEAK_BYTES_PER_TICK)  # written, so resident: not just reserved
            await asyncio.sleep(LEAK_TICK_S)
        log.warning("leaked %d MiB; not growing further", LEAK_CAP_BYTES >> 20)
        await asyncio.Event().wait()  # keep what was leaked until shutdown

    def _api(
        self, endpoint: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """An API endpoint; it answers 500 instead with probability ``error_rate`` (the background
        rate; five times it in errors-5x), and in bad-errors to every ERROR_EVERY-th request too."""

        async def api(request: Request) -> Response:
            await asyncio.sleep(
                self._downstream.lognormvariate(math.log(DOWNSTREAM_MEDIAN_S), DOWNSTREAM_SIGMA)
            )
            if self.error_rate and self._failures.random() < self.error_rate:
                log.error("internal error: %s %s: downstream call failed", request.method, request.url.path)
                return JSONResponse({"error": "internal error"}, status_code=500)
            if self.release.fault == "bad-errors":
                self._api_requests += 1
                if self._api_requests % ERROR_EVERY == 0:
                    log.error(
                        "internal error: %s %s: tier cache out of sync", request.method, request.url.path
                    )
                    return JSONResponse({"error": "internal error"}, status_code=500)
            return await endpoint(request)

        return api

    def _query(self, name: str) -> AbstractAsyncContextManager[None]:
        return _timed(self.metrics.db_query.labels(name))

    # -- health -------------------------------------------------------------------------------

    async def index(self, _request: Request) -> JSONResponse:
        return JSONResponse({"service": "demo", "version": self.release.name})

    async def live(self, _request: Request) -> JSONResponse:
        return JSONResponse({"status": "alive", "version": self.release.name})

    async def health(self, _request: Request) -> JSONResponse:
        database, schema = await self._check_database()
        if self.release.fault == "bad-health":
            database = "fail: connection pool exhausted"
            log.error("database check failed: connection pool exhausted (leaked connections)")
        checks = {"database": database, "cache": await self._check_cache(), "schema": schema}
        healthy = all(value == "ok" for value in checks.values())
        if not healthy:
            log.warning(
                "health check failed: %s", ", ".join(f"{k}={v}" for k, v in checks.items() if v != "ok")
            )
        body = {
            "status": "healthy" if healthy else "unhealthy",
            "version": self.release.name,
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "checks": checks,
        }
        return JSONResponse(body, status_code=200 if healthy else 503)

    async def health_db(self, _request: Request) -> JSONResponse:
        try:
            latency_ms = await select_one_ms(self.pool)
        except (PoolTimeout, psycopg.Error) as exc:
            return JSONResponse({"status": "error", "error": first_line(exc)}, status_code=503)
        return JSONResponse({"status": "connected", "latency_ms": round(latency_ms, 3)})

    async def _check_database(self) -> tuple[str, str]:
        """("ok" or the failure, the schema verdict) from one real query."""
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S), self.pool.connection(timeout=2.0) as conn:
                try:
                    rows = await (await conn.execute("SELECT version FROM schema_migrations")).fetchall()
                except psycopg.errors.UndefinedTable:
                    rows = []
        except (PoolTimeout, psycopg.Error, TimeoutError) as exc:
            return f"fail: {first_line(exc)}", "unknown: database unreachable"
        versions = sorted((row[0] for row in rows), key=_version_key)
        have = versions[-1] if versions else None
        if have is not None and _version_key(have) >= _version_key(self.release.schema):
            return "ok", "ok"
        return "ok", f"behind: have {have or 'none'}, need {self.release.schema}"

    async def _check_cache(self) -> str:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                await self.cache.ping()
        except (aioredis.RedisError, OSError, TimeoutError) as exc:
            return f"fail: {first_line(exc)}"
        return "ok"

    async def metrics_endpoint(self, _request: Request) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    def _connections_in_use(self) -> float:
        stats = self.pool.get_stats()
        return float(stats.get("pool_size", 0) - stats.get("pool_available", 0))

    # -- the API ------------------------------------------------------------------------------

    @property
    def _customer_columns(self) -> str:
        return "id, name, email, created_at" + (", tier" if self.release.customer_tier else "")

    async def list_customers(self, request: Request) -> JSONResponse:
        try:
            limit = min(max(int(request.query_params.get("limit", "20")), 1), 100)
        except ValueError:
            return JSONResponse({"error": "limit must be an integer"}, status_code=422)
        async with self.pool.connection() as conn, self._query("list_customers"):
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(f"SELECT {self._customer_columns} FROM customers ORDER BY id LIMIT %s", [limit])
            customers = [_jsonable(row) for row in await cur.fetchall()]
        return JSONResponse({"customers": customers, "count": len(customers)})

    async def get_customer(self, request: Request) -> JSONResponse:
        customer_id = request.path_params["customer_id"]
        key = f"demo:{self.release.name}:customer:{customer_id}"
        cached = await self._cache_get(key)
        if cached is not None:
            self.metrics.cache_hits.inc()
            return JSONResponse(json.loads(cached), headers={"X-Cache": "hit"})
        self.metrics.cache_misses.inc()
        async with self.pool.connection() as conn, self._query("get_customer"):
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"SELECT {self._customer_columns}, "
                "(SELECT count(*) FROM orders WHERE customer_id = customers.id) AS order_count "
                "FROM customers WHERE id = %s",
                [customer_id],
            )
            row = await cur.fetchone()
        if row is None:
            return JSONResponse({"error": f"customer {customer_id} not found"}, status_code=404)
        customer = _jsonable(row)
        await self._cache_set(key, json.dumps(customer))
        return JSONResponse(customer, headers={"X-Cache": "miss"})

    async def create_order(self, request: Request) -> JSONResponse:
        try:
            body = await request.json()
            customer_id, amount_cents = int(body["customer_id"]), int(body["amount_cents"])
            if amount_cents <= 0:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return JSONResponse(
                {"error": 'expected {"customer_id": int, "amount_cents": int > 0}'}, status_code=422
            )
        try:
            async with self.pool.connection() as conn, self._query("create_order"):
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    "INSERT INTO orders (customer_id, amount_cents) VALUES (%s, %s) "
                    "RETURNING id, customer_id, amount_cents, created_at",
                    [customer_id, amount_cents],
                )
                order = _jsonable(await cur.fetchone() or {})
        except psycopg.errors.ForeignKeyViolation:
            return JSONResponse({"error": f"customer {customer_id} not found"}, status_code=404)
        await self._cache_delete(f"demo:{self.release.name}:customer:{customer_id}")
        log.info("order %s created for customer %s", order["id"], customer_id)
        return JSONResponse(order, status_code=201)

    async def _cache_get(self, key: str) -> bytes | None:
        try:
            return await self.cache.get(key)
        except (aioredis.RedisError, OSError) as exc:
            log.warning("cache unavailable, reading the database: %s", first_line(exc))
            return None

    async def _cache_set(self, key: str, value: str) -> None:
        try:
            await self.cache.set(key, value, ex=CACHE_TTL_S)
        except (aioredis.RedisError, OSError) as exc:
            log.warning("cache unavailable, not caching %s: %s", key, first_line(exc))

    async def _cache_delete(self, key: str) -> None:
        try:
            await self.cache.delete(key)
        except (aioredis.RedisError, OSError) as exc:
            log.warning("cache unavailable, %s may be stale for %d s: %s", key, CACHE_TTL_S, first_line(exc))


@asynccontextmanager
async def _timed(histogram: Any) -> AsyncIterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        histogram.observe(time.perf_counter() - started)


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def _version_key(version: str) -> tuple[int, str]:
    digits = "".join(ch for ch in version if ch.isdigit())
    return (int(digits) if digits else -1, version)


BACKGROUND_ERROR_RATE_ENV = "DEMO_BACKGROUND_ERROR_RATE"


def background_error_rate(database_url: str) -> float:
    """``DEMO_BACKGROUND_ERROR_RATE`` when set, else the sandbox's stored setting, else 0.

    A value outside [0, 1] raises ValueError. A database that cannot be asked (it may be down
    while the instance starts) gives 0, said in the log."""
    raw = os.environ.get(BACKGROUND_ERROR_RATE_ENV, "").strip()
    where = BACKGROUND_ERROR_RATE_ENV
    if not raw:
        where = f"the sandbox's {SETTINGS_TABLE}"
        try:
            with psycopg.connect(database_url, connect_timeout=2, autocommit=True) as conn:
                row = conn.execute(
                    f"SELECT value FROM {SETTINGS_TABLE} WHERE name = 'background_error_rate'"
                ).fetchone()
        except psycopg.errors.UndefinedTable:
            return 0.0
        except psycopg.Error as exc:
            log.warning("background error rate unknown, 0: the database did not answer: %s", first_line(exc))
            return 0.0
        raw = row[0] if row else ""
    if not raw:
        return 0.0
    try:
        rate = float(raw)
    except ValueError:
        rate = math.nan
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"{where}: background error rate {raw!r} is not a fraction between 0 and 1")
    return rate


def _configure_logging(release: str, port: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)s demo[{release}:{port}] %(name)s: %(message)s")
    )
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.service", description="the sandbox's demo service"
    )
    parser.add_argument("--release", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1", help="a loopback address (default: 127.0.0.1)")
    args = parser.parse_args(argv)
    _configure_logging(args.release, args.port)
    release = RELEASES.get(args.release)
    if release is None:
        log.error("unknown release %s (known: %s)", args.release, ", ".join(RELEASES))
        return 2
    missing = [name for name in ("DEMO_DATABASE_URL", "DEMO_REDIS_URL") if not os.environ.get(name)]
    if missing:
        log.error("%s not set: the service needs its database and cache", " and ".join(missing))
        return 2
    try:
        rate = background_error_rate(os.environ["DEMO_DATABASE_URL"])
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    if rate:
        log.info("background error rate %g of API requests", rate)
    service = Service(release, args.port, os.environ["DEMO_DATABASE_URL"], os.environ["DEMO_REDIS_URL"], rate)
    service.server = loopback_server(service.app, args.port, args.host)
    service.server.run()
    return 0 if service.server.started else 1


if __name__ == "__main__":
    sys.exit(main())
