"""The notes service: ``python tests/notes_service/app.py --release R --port P``.

A second service for the tests, written with none of the demo's conventions, so that whatever
releasegate assumes about the demo shows up: the standard library's threaded HTTP server instead
of Starlette, a synchronous psycopg pool, readiness at ``/ping``, health at
``/internal/status``, user routes under ``/v1/notes``, metrics named ``notes_*`` with labels
``handler`` and ``code``, a health answer of its own shape (``{"ok": true, "build":
{"version": ...}, "dependencies": {...}}``) and a schema managed by alembic (``alembic_version``), not by
``schema_migrations``. Its database is ``NOTES_DATABASE_URL``.

What a release does differently is in ``RELEASES``: 1.4.0 is the stable one, 1.5.0 the good
next one (its migration adds ``notes.pinned``), and the faulty builds each break one thing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.process_collector import ProcessCollector
from psycopg_pool import ConnectionPool, PoolTimeout


@dataclass(frozen=True)
class Release:
    name: str
    reports: str | None = None
    """The version /internal/status reports, when not its own (a build that forgot to bump it)."""
    failure_ratio: float = 0.0
    """The share of user requests answered 500."""
    pinned: bool = False
    """Its schema has notes.pinned (1.5.0's migration), which it reads."""


RELEASES = {
    release.name: release
    for release in (
        Release("1.4.0"),
        Release("1.5.0", pinned=True),
        Release("1.5.0-lock", pinned=True),
        Release("1.5.0-bad-migration", pinned=True),
        Release("1.5.0-stale-version", reports="1.4.0", pinned=True),
        Release("1.5.0-flaky", failure_ratio=0.05, pinned=True),
    )
}
"""Each release's migrations are named by ``releases/<release>.ini`` beside this file."""

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
NOTE = re.compile(r"^/v1/notes/(\d+)$")


class Notes:
    """The service's state: its release, its pool, its metrics."""

    def __init__(self, release: Release, database_url: str) -> None:
        self.release = release
        self.pool = ConnectionPool(
            database_url, min_size=1, max_size=4, timeout=3.0, open=True, kwargs={"autocommit": True}
        )
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "notes_requests", "Requests by handler and code", ["handler", "code"], registry=self.registry
        )
        self.latency = Histogram(
            "notes_request_seconds",
            "Request time by handler",
            ["handler"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        ProcessCollector(registry=self.registry)
        self.random = random.Random()

    def answer(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a GET of ``path``."""
        route, _, query = path.partition("?")
        if route == "/ping":
            return 200, "text/plain", b"pong"
        if route == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if route == "/internal/status":
            return self._status()
        handler = "/v1/notes/:id" if NOTE.match(route) else route
        started = time.perf_counter()
        self.requests.labels(handler, "500")  # the error series exists at 0 from the start
        code, body = self._user(route, query)
        self.requests.labels(handler, str(code)).inc()
        self.latency.labels(handler).observe(time.perf_counter() - started)
        return code, "application/json", json.dumps(body).encode()

    def _status(self) -> tuple[int, str, bytes]:
        try:
            with self.pool.connection() as conn:
                conn.execute("SELECT 1")
            postgres = "ok"
        except (psycopg.Error, PoolTimeout) as exc:
            postgres = f"failing: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        healthy = postgres == "ok"
        body = {  # its own shape: a boolean, the build under its own key, its dependencies
            "ok": healthy,
            "build": {"version": self.release.reports or self.release.name, "commit": "0f3c2a1"},
            "dependencies": {"postgres": "reachable" if healthy else postgres},
        }
        return (200 if healthy else 503), "application/json", json.dumps(body).encode()

    def _user(self, route: str, query: str) -> tuple[int, Any]:
        if self.release.failure_ratio and self.random.random() < self.release.failure_ratio:
            return 500, {"error": "internal error"}
        columns = "id, body" + (", pinned" if self.release.pinned else "")
        try:
            with self.pool.connection() as conn:
                match = NOTE.match(route)
                if match:
                    row = conn.execute(
                        f"SELECT {columns} FROM notes WHERE id = %s", [int(match.group(1))]
                    ).fetchone()
                    return (200, list(row)) if row else (404, {"error": "no such note"})
                if route == "/v1/notes":
                    limit = int(dict(p.split("=", 1) for p in query.split("&") if "=" in p).get("limit", 10))
                    rows = conn.execute(
                        f"SELECT {columns} FROM notes ORDER BY id LIMIT %s", [limit]
                    ).fetchall()
                    return 200, [list(r) for r in rows]
        except (psycopg.Error, PoolTimeout, ValueError) as exc:
            print(f"ERROR {route}: {exc}".splitlines()[0], file=sys.stderr, flush=True)
            return 500, {"error": "database"}
        return 404, {"error": "not found"}


class Handler(BaseHTTPRequestHandler):
    notes: Notes
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        code, content_type, body = self.notes.answer(self.path)
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: one line per request would drown the log the gates read."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    release = RELEASES.get(args.release)
    if release is None:
        print(f"ERROR unknown release {args.release} (known: {', '.join(RELEASES)})", file=sys.stderr)
        return 2
    Handler.notes = Notes(release, os.environ["NOTES_DATABASE_URL"])
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"INFO notes {release.name} listening on 127.0.0.1:{args.port}", flush=True)
    server.serve_forever()
    Handler.notes.pool.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
