"""The replicas' stacks for the tests (sandbox.replicas.stack): an example environment with its
replica's override file (sandbox/replicas/<system>.toml, or <system>-kubernetes.toml), the
override's ports moved to free ones and its directories into the test's.

``running(system, dir)`` brings a local stack up and always down again,
``running_on_kubernetes(system, dir)`` one on a real control plane; ``run_gates`` runs
``pytest gates/ --env=EXAMPLE --env-override=OVERRIDE --release=R`` as an SRE would.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
from gate_runs import TEST_PLUGINS_OFF, GateRun
from kubernetes import client, config
from kubernetes.client import ApiClient
from sandbox_env import free_port_block

from releasegate.config import Environment, load_environment
from releasegate.platforms.local import LocalPlatform
from sandbox.replicas import stack
from sandbox.replicas.stack import SECRETS, SYSTEMS, System

ROOT = Path(__file__).resolve().parents[1]
REPLICAS = ROOT / "sandbox" / "replicas"


@dataclass(frozen=True)
class Replica:
    system: System
    override: Path
    env: Environment

    @property
    def reports(self) -> Path:
        return Path(self.env.report.dir)


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
    """The replica's stack serving its stable release from local processes; always torn down."""
    system = SYSTEMS[name]
    dir.mkdir(parents=True, exist_ok=True)
    override = relocate(REPLICAS / system.override, dir)
    env = load_environment(system.example, ROOT, [override])
    with stack.local(system, env, dir / "stack"):
        yield Replica(system, override, env)
    shutil.rmtree(dir / "stack", ignore_errors=True)


@contextmanager
def running_on_kubernetes(name: str, dir: Path) -> Iterator[Replica]:
    """The replica's stack serving its stable release from pods on a real control plane, installed
    the example's way (sandbox/replicas/<name>-kubernetes.toml); always torn down."""
    system = SYSTEMS[name]
    dir.mkdir(parents=True, exist_ok=True)
    override = relocate(REPLICAS / f"{name}-kubernetes.toml", dir)
    env = load_environment(system.example, ROOT, [override])
    with stack.kubernetes(system, env, progress=lambda _line: None):
        yield Replica(system, override, env)
    shutil.rmtree(dir / "stack", ignore_errors=True)


def run_gates(replica: Replica, release: str, *extra: str) -> GateRun:
    """``pytest gates/`` against the example with the replica's override, as an SRE runs it."""
    return run_suite(replica, "gates/", f"--release={release}", *extra)


def run_suite(replica: Replica, suite: str, *extra: str) -> GateRun:
    """``pytest SUITE`` (gates/, rollback/ ...) against the example with the replica's override."""
    proc = subprocess.run(
        suite_argv(replica, suite, *extra),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **SECRETS},
    )
    return GateRun(proc.returncode, proc.stdout + proc.stderr, replica.reports)


def start_gates(replica: Replica, release: str) -> subprocess.Popen[str]:
    """The gates in the background, their output line by line, for killing them mid-run."""
    return subprocess.Popen(
        suite_argv(replica, "gates/", f"--release={release}"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **SECRETS, "PYTHONUNBUFFERED": "1"},
    )


def suite_argv(replica: Replica, suite: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        *TEST_PLUGINS_OFF,
        suite,
        f"--env={replica.system.example}",
        f"--env-override={replica.override}",
        *extra,
    ]


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


# -- on Kubernetes: what the cluster and the Service say -----------------------------------------


def kube_api(replica: Replica) -> ApiClient:
    assert replica.env.platform.kubernetes is not None
    return config.new_client_from_config(replica.env.platform.kubernetes.kubeconfig)


def service_versions(replica: Replica, asks: int = 24) -> set[str]:
    """The versions the Service answers /health with, asked ``asks`` times (each pod in turn)."""
    url = f"{replica.env.platform.url}{replica.env.verify.health_path}"
    return {httpx.get(url, timeout=5).json()["version"] for _ in range(asks)}


def pod_images(replica: Replica, selector: str) -> list[str]:
    """The images of the pods ``selector`` picks that are not being deleted, sorted."""
    assert replica.env.platform.kubernetes is not None
    namespace = replica.env.platform.kubernetes.namespace
    pods = client.CoreV1Api(kube_api(replica)).list_namespaced_pod(namespace, label_selector=selector).items
    return sorted(p.spec.containers[0].image for p in pods if p.metadata.deletion_timestamp is None)


def failed_gates(output: str) -> list[str]:
    """The gates pytest's summary lists as failed (``FAILED gates/test_x.py::name[param]``)."""
    return [m[1] for m in re.finditer(r"^FAILED gates/\S+?\.py::(.+?)(?: - .*)?$", output, re.M)]
