"""The replicas' stacks for the tests: an example environment (environments/*-production.example.toml)
with its replica's override file (sandbox/replicas/<system>.toml), the override's ports moved to
free ones and its directories into the test's; PostgreSQL, Redis, nginx and Prometheus started
as the sandbox starts them, the schema of the stable release migrated by the system's own tool,
some rows, and the stable release deployed by releasegate's local platform.

``running(system, dir)`` brings a stack up and always down again; ``run_gates`` runs
``pytest gates/ --env=EXAMPLE --env-override=OVERRIDE --release=R`` as an SRE would.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from gate_runs import TEST_PLUGINS_OFF, GateRun
from sandbox_env import free_port_block

from releasegate.actions.load import LoadGenerator
from releasegate.actions.migrate import command_argv, command_workdir
from releasegate.config import Environment, load_environment
from releasegate.platforms.local import LocalPlatform
from releasegate.probes.prometheus import Prometheus as PrometheusProbe
from releasegate.probes.prometheus import Sample
from sandbox.nginx import Nginx
from sandbox.postgres import Postgres
from sandbox.prometheus import Prometheus
from sandbox.redis import Redis
from sandbox.replicas.summit import policy_bundle

ROOT = Path(__file__).resolve().parents[1]
REPLICAS = ROOT / "sandbox" / "replicas"
TOKEN = "replica-admin-token-0123456789"
SECRETS = {
    "SUMMIT_ADMIN_TOKEN": TOKEN,
    "SUMMIT_SMOKE_ADMIN_TOKEN": TOKEN,
    "GRANTER_SMOKE_ADMIN_TOKEN": TOKEN,
    "GRANTER_ADMIN_TOKEN": TOKEN,
}
"""The tokens the examples name (${SUMMIT_ADMIN_TOKEN}, ...): one value, which the replicas are
given as their admin token (platform.local.secret_env)."""


@dataclass(frozen=True)
class System:
    example: str
    override: str
    stable: str
    seed: Callable[[psycopg.Connection], None]
    after_deploy: Callable[[Environment], None] = lambda env: None


@dataclass(frozen=True)
class Replica:
    system: System
    override: Path
    env: Environment

    @property
    def reports(self) -> Path:
        return Path(self.env.report.dir)


def _seed_release_manager(conn: psycopg.Connection) -> None:
    conn.execute("INSERT INTO releases (name) SELECT 'v2023.12.' || n FROM generate_series(10, 29) AS n")
    conn.execute(
        "INSERT INTO deployments (release_id, environment, status) "
        "SELECT id, 'production', 'succeeded' FROM releases"
    )
    conn.execute("INSERT INTO audit_log (actor, action) SELECT 'ci', 'deploy' FROM generate_series(1, 20)")


def _seed_granter(conn: psycopg.Connection) -> None:
    conn.execute(
        "INSERT INTO granter_users (email, name, password_hash) "
        "SELECT 'user' || n || '@example.test', 'User ' || n, 'x$y' FROM generate_series(1, 12) AS n"
    )


def _seed_summit(conn: psycopg.Connection) -> None:
    conn.execute(
        "INSERT INTO summit_users (id, password_hash, clearances, roles) "
        "SELECT 'analyst-' || n, 'x$y', ARRAY['S'], ARRAY[]::text[] FROM generate_series(1, 5) AS n"
    )
    conn.execute(
        "INSERT INTO summit_entities (id, name, classification, created_by) "
        "SELECT 'entity-' || n, 'Entity ' || n, (ARRAY['U', 'C', 'S', 'TS'])[n % 4 + 1], 'analyst-1' "
        "FROM generate_series(1, 30) AS n"
    )


def _activate_summit_policy(env: Environment) -> None:
    """GA 4.1: the stable release's bundle on the policy engine, as the release that put it there did."""
    answer = httpx.put(
        f"{env.platform.url}/v1/policy/bundles/main",
        content=policy_bundle(SYSTEMS["summit"].stable).read_bytes(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text


SYSTEMS = {
    "release-manager": System(
        example="release-manager-production.example",
        override="release-manager.toml",
        stable="2024.01.08",
        seed=_seed_release_manager,
    ),
    "granter": System(
        example="granter-production.example", override="granter.toml", stable="1.9.0", seed=_seed_granter
    ),
    "summit": System(
        example="summit-production.example",
        override="summit.toml",
        stable="3.0.0",
        seed=_seed_summit,
        after_deploy=_activate_summit_policy,
    ),
}


def relocate(override: Path, dir: Path) -> Path:
    """The override file with its loopback ports moved to a free block and its
    ``{tmp}/releasegate-replicas/<system>`` directories into ``dir``; everything else as written."""
    text = override.read_text(encoding="utf-8")
    ports_line = re.compile(r"^ports = \[(\d+), (\d+)\]", re.M)
    ports = [int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", text)]
    ports += [int(p) for pair in ports_line.findall(text) for p in pair]
    low, high = min(ports), max(ports)
    base = free_port_block(high - low + 1)

    def moved(port: str) -> str:
        return str(int(port) - low + base)

    text = re.sub(r"(?<=127\.0\.0\.1:)(\d+)", lambda m: moved(m[1]), text)
    text = ports_line.sub(lambda m: f"ports = [{moved(m[1])}, {moved(m[2])}]", text)
    text = re.sub(r"\{tmp\}/releasegate-replicas/[a-z-]+", str(dir / "stack"), text)
    path = dir / override.name
    path.write_text(text, encoding="utf-8")
    return path


@contextmanager
def running(name: str, dir: Path) -> Iterator[Replica]:
    """The replica's stack serving its stable release; always torn down."""
    system = SYSTEMS[name]
    dir.mkdir(parents=True, exist_ok=True)
    override = relocate(REPLICAS / system.override, dir)
    env = load_environment(system.example, ROOT, [override])
    local = env.platform.local
    assert local is not None
    state = dir / "stack"
    postgres = Postgres(state, env.database.dsn)
    nginx = Nginx(state, env.platform.url, local)
    platform = LocalPlatform(local, env.platform.url)
    with ExitStack() as stack:
        patch = stack.enter_context(pytest.MonkeyPatch.context())
        for name, value in SECRETS.items():  # the instances' secret_env, as a CI job exports them
            patch.setenv(name, value)
        postgres.start()
        stack.callback(postgres.stop)
        postgres.ensure_database()
        if env.redis is not None:
            redis = Redis(state, env.redis.url)
            redis.start()
            stack.callback(redis.stop)
        nginx.start()
        stack.callback(nginx.stop)
        stack.callback(lambda: platform.stop_all() if platform.state_dir.exists() else None)
        migrate_to(env, system.stable)
        with psycopg.connect(env.database.dsn, autocommit=True) as conn:
            system.seed(conn)
        result = platform.deploy(system.stable)
        assert result.ok, result.reason
        system.after_deploy(env)
        if env.metrics is not None:
            prometheus = Prometheus(state, env.metrics, local.targets_file or "", env.environment.service)
            prometheus.start()
            stack.callback(prometheus.stop)
            users = _users(env)
            stack.callback(users.stop)
            _until_every_query_answers(env, system.stable)
        yield Replica(system, override, env)
    shutil.rmtree(state, ignore_errors=True)


def _users(env: Environment) -> LoadGenerator:
    """The replica's users, for as long as its stack runs: a production service has a history of
    traffic when a deployment starts, which its preflight reads (every query answers, the baseline)."""
    assert env.metrics is not None and env.metrics.load is not None
    paths = env.metrics.load.paths
    return LoadGenerator(env.platform.url, paths, rps=5, concurrency=1, duration_s=3600, timeout_s=3).start()


def _until_every_query_answers(env: Environment, release: str) -> None:
    """Wait until Prometheus has every series the gates will ask of the serving release."""
    assert env.metrics is not None
    prometheus = PrometheusProbe.from_settings(env.metrics, env.environment.service)
    histograms = env.metrics.histogram_queries()
    for name, window in env.metrics.queries_in_use().items():
        if name in histograms:  # bucket counts by le: the sample's value is the requests counted
            sample = _wait_for_buckets(prometheus, name, release, window)
        else:
            sample = prometheus.wait_for_data(name, release=release, timeout_s=60, window=window)
        assert sample.value is not None, f"the replica gives {name} no data: {sample.source}"


def _wait_for_buckets(prometheus: PrometheusProbe, name: str, release: str, window: str | None) -> Sample:
    deadline = time.monotonic() + 60
    while True:
        _groups, sample = prometheus.histograms(name, release=release, window=window)
        if sample.value or time.monotonic() >= deadline:
            return sample
        time.sleep(0.5)


def migrate_to(env: Environment, release: str) -> None:
    """The environment's own migration command (the system's tool), as its team would run it."""
    assert env.migrate is not None
    proc = subprocess.run(
        command_argv(env.migrate, release),
        cwd=command_workdir(env.migrate, release),
        env={**os.environ, env.migrate.dsn_env: env.database.dsn},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def run_gates(replica: Replica, release: str, *extra: str) -> GateRun:
    """``pytest gates/`` against the example with the replica's override, as an SRE runs it."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *TEST_PLUGINS_OFF,
            "gates/",
            f"--env={replica.system.example}",
            f"--env-override={replica.override}",
            f"--release={release}",
            *extra,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **SECRETS},
    )
    return GateRun(proc.returncode, proc.stdout + proc.stderr, replica.reports)


def serving(replica: Replica) -> list[tuple[str, int, Any]]:
    """(release, HTTP status, health answer) of every instance nginx routes to, asked directly."""
    env = replica.env
    platform = LocalPlatform(env.platform.local, env.platform.url)  # type: ignore[arg-type]
    status = platform.status()
    answers = []
    for instance in status.instances:
        if instance.name in status.in_service:
            answer = httpx.get(f"{instance.url}{env.verify.health_path}", timeout=5)
            answers.append((instance.release, answer.status_code, answer.json()))
    return answers


def schema_version(replica: Replica) -> str | None:
    """What the example's ``migrate.version_query`` reads (alembic current, the tools' tables)."""
    assert replica.env.migrate is not None
    with psycopg.connect(replica.env.database.dsn) as conn:
        row = conn.execute(replica.env.migrate.version_query).fetchone()  # type: ignore[arg-type]
    return None if row is None else str(row[0])


def rows(replica: Replica) -> dict[str, int]:
    """The rows of the tables the example's backup verifies."""
    tables = [t for names in replica.env.backup.verify_tables.values() for t in names]
    with psycopg.connect(replica.env.database.dsn) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}  # type: ignore[index]
