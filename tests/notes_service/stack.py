"""The notes service's stack for the tests: PostgreSQL, nginx and Prometheus on free loopback
ports (the sandbox's components, started the way the sandbox starts them), and the service's
instances, deployed by releasegate's local platform.

``write_notes_env(dir)`` writes an environment file as a team running the notes service would
write it from the README, with none of the demo's conventions; ``running_notes(env_file)`` brings
the stack up (serving 1.4.0, or nothing with ``serving=None``) and always down again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import psycopg
import tomli_w
from sandbox_env import free_port_block, set_key

from releasegate.config import Environment, MigrateSettings, load_environment
from releasegate.platforms.local import LocalPlatform
from sandbox.nginx import Nginx
from sandbox.postgres import Postgres
from sandbox.prometheus import Prometheus

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
STABLE = "1.4.0"
INSTANCE_PORTS = 6
NOTES = 40
"""Rows the stack seeds: what must survive every backup, migration and rollback."""

_SELECTOR = 'job="{service}",release="{release}"'
_REQUESTS = f'notes_requests_total{{{_SELECTOR},handler=~"/v1/.*"}}'
_BUCKETS = f'notes_request_seconds_bucket{{{_SELECTOR},handler=~"/v1/.*"}}'


def _environment(dir: Path) -> dict[str, Any]:
    base = free_port_block(3 + INSTANCE_PORTS)
    pg, nginx, prometheus, first = base, base + 1, base + 2, base + 3
    dsn = f"postgresql://postgres@127.0.0.1:{pg}/notes"
    state = dir / "stack"
    return {
        "environment": {
            "name": "notes",
            "tier": "staging",
            "service": "notes",
            "description": "the notes service: not the demo",
        },
        "platform": {
            "kind": "local",
            "url": f"http://127.0.0.1:{nginx}",
            "local": {
                "instances": 2,
                "ports": [first, first + INSTANCE_PORTS - 1],
                "command": [
                    "{python}",
                    "{root}/tests/notes_service/app.py",
                    "--release",
                    "{release}",
                    "--port",
                    "{port}",
                ],
                "workdir": "{root}",
                "env": {"NOTES_DATABASE_URL": dsn},
                "state_dir": str(state / "platform"),
                "nginx_upstream_file": str(state / "nginx" / "upstream.conf"),
                "nginx_pid_file": str(state / "nginx" / "nginx.pid"),
                "targets_file": str(state / "prometheus" / "targets.json"),
                "readiness_path": "/ping",
                "readiness_timeout_s": 15,
                "drain_s": 0.2,
                "stop_timeout_s": 5,
                "max_surge": 2,
                "strategy": "rolling",
            },
        },
        "database": {"dsn": dsn, "connect_timeout_s": 3},
        "backup": {
            "databases": ["notes"],
            "dir": str(dir / "backups"),
            "verify_tables": {"notes": ["notes"]},
        },
        "migrate": {
            "runner": "command",
            "command": ["{python}", "-m", "alembic", "-c", "releases/{release}.ini", "upgrade", "head"],
            "workdir": "{root}/tests/notes_service",
            "version_query": "SELECT version_num FROM alembic_version",
            "lock_timeout": "2s",
            "statement_timeout": "60s",
            "rehearse": True,
        },
        "rollback": {"database": "never", "timeout_s": 60},
        "verify": {
            "health_path": "/internal/status",
            "health": {
                "status_field": "ok",
                "healthy": [True],
                "version_field": "build.version",
                "checks_field": "dependencies",
                "check_ok": ["reachable"],
            },
            "health_probes": 2,
            "health_interval_s": 0.5,
            "traffic_path": "/v1/notes?limit=3",
        },
        "metrics": {
            "prometheus_url": f"http://127.0.0.1:{prometheus}",
            "timeout_s": 3,
            "scrape_interval_s": 1,
            "window": "10s",
            "queries": {
                "error_ratio": (
                    f'(sum(rate({_REQUESTS[:-1]},code=~"5.."}}[{{window}}])) or vector(0))'
                    f" / sum(rate({_REQUESTS}[{{window}}]))"
                ),
                "latency_p95": f"1000 * histogram_quantile(0.95, sum by (le) (rate({_BUCKETS}[{{window}}])))",
                "latency_p99": f"1000 * histogram_quantile(0.99, sum by (le) (rate({_BUCKETS}[{{window}}])))",
                "request_rate": f"sum(rate({_REQUESTS}[{{window}}]))",
                # What the error rate and the p95 are judged on: counts over {window}, the
                # latency by handler (each handler judged on its own against stable).
                "error_count": f'sum(increase({_REQUESTS[:-1]},code=~"5.."}}[{{window}}])) or vector(0)',
                "request_count": f"sum(increase({_REQUESTS}[{{window}}]))",
                "latency_histogram": f"sum by (le, handler) (increase({_BUCKETS}[{{window}}]))",
                "cpu": f"max(rate(process_cpu_seconds_total{{{_SELECTOR}}}[{{window}}]))",
                "restarts": f"sum(changes(process_start_time_seconds{{{_SELECTOR}}}[{{window}}]))",
                "targets_up": f"count(up{{{_SELECTOR}}} == 1)",
            },
            "slo": {
                "error_ratio": {
                    "description": "error rate < 2 %",
                    "max": 0.02,
                    "events": "error_count",
                    "total": "request_count",
                    "interval_s": 1,
                    "count": 3,
                    "failure_limit": 2,
                },
                "latency_p95": {
                    "description": "p95 < 250 ms",
                    "max": 250,
                    "unit": "ms",
                    "histogram": "latency_histogram",
                    "quantile": 0.95,
                    "noise_floor": 10,  # ms: 4 % of the SLO
                    "interval_s": 1,
                    "count": 3,
                    "failure_limit": 2,
                },
                "cpu": {
                    "description": "CPU < 90 % of a core",
                    "max": 0.9,
                    # A rate over four scrapes, sampled two apart: two failures in windows that
                    # do not overlap fit its three samples, and the watch below.
                    "window": "4s",
                    "interval_s": 2,
                    "count": 3,
                    "failure_limit": 2,
                },
            },
            "canary": {
                "steps": [50, 100],
                "pause_s": 4,
                "interval_s": 1,
                "window": "3s",
                "min_samples": 3,
                "min_requests": 30,
                "checks": ["error_ratio", "latency_p95"],
            },
            # Every 2 s: two failures in a row of cpu's 4 s windows need them 4 s apart.
            "observe": {"schedule": [{"every_s": 2, "until_s": 6}], "consecutive_failures": 2},
            "load": {
                "paths": ["/v1/notes?limit=5", "/v1/notes/1", "/v1/notes/2", "/v1/notes/3"],
                "rps": 30,
                "concurrency": 4,
                "duration_s": 300,
                "timeout_s": 3,
            },
        },
        "report": {"dir": str(dir / "reports")},
    }


def write_notes_env(dir: Path, **overrides: Any) -> Path:
    """Write ``dir/notes-env.toml`` on free ports; overrides by dotted key (None removes a key)."""
    raw = _environment(dir)
    for dotted, value in overrides.items():
        set_key(raw, dotted.replace("__", "."), value)
    dir.mkdir(parents=True, exist_ok=True)
    path = dir / "notes-env.toml"
    path.write_text(tomli_w.dumps(raw), encoding="utf-8")
    return path


def notes_migrate_settings(**overrides: Any) -> MigrateSettings:
    """[migrate] as the notes team writes it: alembic with a relative alembic.ini, run in workdir."""
    fields: dict[str, Any] = {
        "runner": "command",
        "command": [sys.executable, "-m", "alembic", "-c", "releases/{release}.ini", "upgrade", "head"],
        "workdir": str(HERE),
        "version_query": "SELECT version_num FROM alembic_version",
        "lock_timeout": "2s",
        "statement_timeout": "60s",
        **overrides,
    }
    return MigrateSettings.model_validate(fields)


def notes_environment(env_file: Path) -> Environment:
    return load_environment(str(env_file), ROOT)


@contextmanager
def running_notes(env_file: Path, serving: str | None = STABLE) -> Iterator[Path]:
    """PostgreSQL with the notes schema of ``serving`` and its rows, nginx, Prometheus, and
    ``serving`` on every instance (nothing with None: an empty platform); always torn down."""
    env = notes_environment(env_file)
    local = env.platform.local
    assert local is not None and env.metrics is not None
    state = Path(local.state_dir).parent
    postgres = Postgres(state, env.database.dsn)
    nginx = Nginx(state, env.platform.url, local)
    prometheus = Prometheus(state, env.metrics, local.targets_file or "", env.environment.service)
    platform = LocalPlatform(local, env.platform.url)
    with ExitStack() as stack:
        postgres.start()
        stack.callback(postgres.stop)
        postgres.ensure_database()
        nginx.start()
        stack.callback(nginx.stop)
        stack.callback(lambda: platform.stop_all() if platform.state_dir.exists() else None)
        if serving is not None:
            migrate_to(env, serving)
            seed(env)
            result = platform.deploy(serving)
            assert result.ok, result.reason
        prometheus.start()
        stack.callback(prometheus.stop)
        yield env_file
    shutil.rmtree(state, ignore_errors=True)


def migrate_to(env: Environment, release: str) -> None:
    """``alembic upgrade head`` with the release's migrations, as its team would run it."""
    proc = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", f"releases/{release}.ini", "upgrade", "head"],
        cwd=HERE,
        env={**os.environ, "DATABASE_URL": env.database.dsn},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def seed(env: Environment) -> None:
    with psycopg.connect(env.database.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO notes (body) SELECT 'note ' || n FROM generate_series(1, %s) AS n", [NOTES])


def notes_database(env_file: Path) -> dict[str, Any]:
    """What an SRE would look at in psql: the alembic revision, the columns, the rows."""
    with psycopg.connect(notes_environment(env_file).database.dsn) as conn:
        revision = conn.execute("SELECT max(version_num) FROM alembic_version").fetchone()[0]
        columns = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'notes' ORDER BY 1"
            )
        ]
        rows = conn.execute("SELECT count(*) FROM notes").fetchone()[0]
    return {"revision": revision, "columns": columns, "rows": rows}


REVISIONS = {"1.4.0": "7c1e0a2f9b01", "1.5.0": "3f9d4b6a2c10"}
"""The alembic revision each release's schema is at."""
