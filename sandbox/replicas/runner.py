"""What the three replicas share: the command line (``--release R --port P``, or ``migrate
--release R`` for the SQL-file tools), serving a Starlette app under uvicorn on 127.0.0.1, the
HTTP metrics each system's runbook names, and applying SQL migration files as a tool would."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sandbox.web import loopback_server

log = logging.getLogger("replica")
disable_created_metrics()

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0)
Scope = MutableMapping[str, Any]


@dataclass(frozen=True)
class Release:
    """One build of a replicated system: its SQL migration files (none for alembic's, which are
    named by its ini file) and its fault, if it is one of the bad builds (CRASH_ON_START, a build
    that exits at once, or the system's own)."""

    name: str
    migrations: tuple[str, ...] = ()
    fault: str | None = None


CRASH_ON_START = "crash-on-start"
"""A build that exits 1 as it starts, whatever its host does: a crash-looping image on Kubernetes."""


class HttpMetrics:
    """Requests by method, route and status, and their latency, under the names a runbook uses."""

    def __init__(self, requests: str, duration: str, errors: str | None = None) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            requests.removesuffix("_total"),
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            duration, "HTTP request latency", ["method", "route"], buckets=BUCKETS, registry=self.registry
        )
        self.errors = (
            Counter(errors.removesuffix("_total"), "Errors by type", ["type"], registry=self.registry)
            if errors
            else None
        )
        if self.errors is not None:
            self.errors.labels("http_5xx")  # present at 0: no data is not "no errors"
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, process_start_time_seconds

    async def endpoint(self, _request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    def middleware(self, app: Any) -> Any:
        """An ASGI middleware counting every request by its route template."""
        metrics = self

        async def counted(scope: Scope, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            started, status = time.perf_counter(), [500]

            async def send_status(message: MutableMapping[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                await send(message)

            try:
                await app(scope, receive, send_status)
            finally:
                route = getattr(scope.get("route"), "path", "unmatched")
                metrics.requests.labels(scope["method"], route, "500")  # the error series exists at 0
                metrics.requests.labels(scope["method"], route, str(status[0])).inc()
                metrics.duration.labels(scope["method"], route).observe(time.perf_counter() - started)
                if status[0] >= 500 and metrics.errors is not None:
                    metrics.errors.labels("http_5xx").inc()

        return counted


def main(
    prog: str,
    releases: dict[str, Release],
    make_app: Callable[[Release, int], Starlette],
    migrate: Callable[[Release, str], int] | None = None,
) -> int:
    """``prog --release R --port P`` serves the release; ``prog migrate --release R`` (the SQL
    tools' stand-in) applies its migrations to ``$DATABASE_URL``."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("command", nargs="?", choices=["serve", "migrate"], default="serve")
    parser.add_argument("--release", required=True)
    parser.add_argument("--port", type=int)
    parser.add_argument("--host", default="127.0.0.1", help="a loopback address (default: 127.0.0.1)")
    args = parser.parse_args()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {prog}[{args.release}] %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    release = releases.get(args.release)
    if release is None:
        log.error("unknown release %s (known: %s)", args.release, ", ".join(releases))
        return 2
    if not os.environ.get("DATABASE_URL"):
        log.error("DATABASE_URL is not set")
        return 2
    if args.command == "migrate":
        assert migrate is not None, f"{prog} has no migrate command"
        return migrate(release, os.environ["DATABASE_URL"])
    if args.port is None:
        parser.error("--port is required to serve")
    if release.fault == CRASH_ON_START:
        log.error("FATAL: release %s cannot start: configuration key 'auth.issuer' is missing", release.name)
        return 1
    server = loopback_server(make_app(release, args.port), args.port, args.host)
    log.info("release %s listening on %s:%d", release.name, args.host, args.port)
    server.run()
    return 0 if server.started else 1


def timed_cursors(histogram: Histogram) -> type[psycopg.AsyncCursor[Any]]:
    """A cursor class (a pool's ``kwargs={"cursor_factory": ...}``) whose every ``execute`` is
    observed in ``histogram``: the ``db_query_duration_seconds`` the runbooks' database query time
    is read from, for code (the sandbox's Granter and Summit) that runs its own queries."""

    class TimedCursor(psycopg.AsyncCursor[Any]):
        async def execute(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            started = time.perf_counter()
            try:
                return await super().execute(*args, **kwargs)
            finally:
                histogram.observe(time.perf_counter() - started)

    return TimedCursor


@dataclass(frozen=True)
class SqlTool:
    """How a migration tool records what it applied: the table, its DDL, and the row for a file."""

    table: str
    create: str
    applied: str
    record: str
    row: Callable[[str], tuple[Any, ...]]


def apply_sql_files(tool: SqlTool, directory: Path, release: Release, dsn: str) -> int:
    """Apply the release's SQL files not yet recorded, in order, each in one transaction with its
    record; a failing file rolls back and stops (exit 1, its error on stderr, as the tools do)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(tool.create)
        done = {row[0] for row in conn.execute(tool.applied)}
        for name in release.migrations:
            key = tool.row(name)[-1]
            if key in done:
                continue
            try:
                with conn.transaction():
                    conn.execute((directory / name).read_text(encoding="utf-8"))  # type: ignore[arg-type]
                    conn.execute(tool.record, tool.row(name))
            except psycopg.Error as exc:
                print(f"ERROR Migration {name} failed: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
                return 1
            print(f"Migration {name.removesuffix('.sql')} complete", flush=True)
    return 0


def migrate_from(base_schema: Path, tool: SqlTool, directory: Path, release: Release, dsn: str) -> int:
    """The base tables (idempotent), then the release's migrations not yet recorded."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(base_schema.read_text(encoding="utf-8"))  # type: ignore[arg-type]
    return apply_sql_files(tool, directory, release, dsn)


def pooled_app(
    metrics: HttpMetrics, routes: Callable[[AsyncConnectionPool], list[BaseRoute]], **pool_kwargs: Any
) -> tuple[Starlette, AsyncConnectionPool]:
    """A Starlette app over a small pool to DATABASE_URL, opened with the app and closed after it,
    its requests counted and timed by ``metrics`` (/metrics served too)."""
    pool = AsyncConnectionPool(
        os.environ["DATABASE_URL"],
        open=False,
        min_size=1,
        max_size=4,
        timeout=2.0,
        kwargs={"autocommit": True, **pool_kwargs},
    )

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await pool.open(wait=False)
        yield
        await pool.close(timeout=2.0)

    app = Starlette(
        routes=[*routes(pool), Route("/metrics", metrics.endpoint)],
        middleware=[Middleware(metrics.middleware)],
        lifespan=lifespan,
    )
    return app, pool
