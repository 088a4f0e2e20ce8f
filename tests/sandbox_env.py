"""Sandboxes for tests: environment files on free ports, brought up and down like the CLI does.

``write_sandbox_env(dir)`` derives a file from environments/sandbox.toml with free ports for
PostgreSQL, Redis, nginx, Prometheus and the instances, and ``sandbox.dir`` (and the reports) under
``dir``, so several sandboxes can run side by side and none touches the default one. Any key
can be overridden by its dotted path::

    write_sandbox_env(tmp_path, **{"migrate.rehearse": False, "verify.health_probes": 2})
    write_sandbox_env(tmp_path, verify__health_probes=2)   # the same, as a keyword
    write_sandbox_env(tmp_path, metrics=None)              # None removes a key: no Prometheus, no SLO gates
"""

from __future__ import annotations

import os
import random
import socket
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import tomli_w

from sandbox import stack

ROOT = Path(__file__).resolve().parent.parent
BASE_ENV = ROOT / "environments" / "sandbox.toml"
INSTANCE_PORTS = 8
"""Instances plus surge, with room to spare."""


def write_sandbox_env(dir: Path, **overrides: Any) -> Path:
    """Write ``dir/sandbox-env.toml``: the sandbox environment on free ports, living under ``dir``."""
    raw = tomllib.loads(BASE_ENV.read_text(encoding="utf-8"))
    base = free_port_block(5 + INSTANCE_PORTS)
    pg, redis, nginx, prometheus, tls, first = base, base + 1, base + 2, base + 3, base + 4, base + 5
    old = {
        _port(raw["database"]["dsn"]): pg,
        _port(raw["redis"]["url"]): redis,
        _port(raw["platform"]["url"]): nginx,
    }
    if "metrics" in raw:
        old[_port(raw["metrics"]["prometheus_url"])] = prometheus
    if "tls_port" in raw["sandbox"]:  # and every 127.0.0.1:PORT naming it ([readiness.tls] hosts)
        old[raw["sandbox"]["tls_port"]] = tls
        raw["sandbox"]["tls_port"] = tls
    raw = _replace_ports(raw, old)
    raw["platform"]["local"]["ports"] = [first, first + INSTANCE_PORTS - 1]
    raw["sandbox"]["dir"] = str(dir / "sandbox")
    raw.setdefault("report", {})["dir"] = str(dir / "reports")
    # Tests roll out one instance at a time unless they ask for a canary or blue-green: the demo's
    # canary spends a minute in its steps, which the tests of other things do not need.
    raw["platform"]["local"]["strategy"] = "rolling"
    # and replace every instance at once: one at a time spends a start and a min_ready_s hold per
    # instance, in every gate run. Tests of the rolling order ask for max_surge 1.
    raw["platform"]["local"]["max_surge"] = raw["platform"]["local"]["instances"]
    if "load" in raw.get("metrics", {}):
        # Half the demo's synthetic load: 500 requests in a 10 s window still make a steady p95, and
        # the load (the generator, nginx, three instances) was a fifth of the suite's CPU. The
        # canary's tests ask for 100: its first step needs 60 requests at 5 %.
        raw["metrics"]["load"]["rps"] = 50
    for dotted, value in overrides.items():
        set_key(raw, dotted.replace("__", "."), value)
    if "metrics" not in raw:  # without Prometheus there is no monitoring to check either
        raw.get("readiness", {}).pop("monitoring", None)
    path = dir / "sandbox-env.toml"
    dir.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(raw), encoding="utf-8")
    return path


def variant(env_file: Path, name: str, **overrides: Any) -> Path:
    """The same sandbox with some keys changed (dotted paths, as for write_sandbox_env), written
    next to it as ``NAME.toml``; the same reports directory unless ``report.dir`` is changed."""
    raw = tomllib.loads(env_file.read_text(encoding="utf-8"))
    for dotted, value in overrides.items():
        set_key(raw, dotted, value)
    path = env_file.parent / f"{name}.toml"
    path.write_text(tomli_w.dumps(raw), encoding="utf-8")
    return path


@contextmanager
def running_sandbox(env_file: Path, progress: stack.Progress = print) -> Iterator[Path]:
    """Bring the sandbox of ``env_file`` up (as ``python -m sandbox up``), and always down again."""
    sandbox_up(env_file, progress)
    try:
        yield env_file
    finally:
        stack.down(env_file, progress)


def sandbox_up(env_file: Path, progress: stack.Progress = print) -> None:
    """``python -m sandbox up``; when it fails, what it had started is taken down again."""
    try:
        stack.up(env_file, progress)
    except BaseException:
        stack.down(env_file, progress)
        raise


def sandbox_down(env_file: Path, progress: stack.Progress = print) -> None:
    stack.down(env_file, progress)


def free_port_block(count: int) -> int:
    """The first of ``count`` consecutive ports free on 127.0.0.1, below the ephemeral range
    (32768) and away from the default sandbox's ports (25432, 26379, 28080, 28090, 28443, 28101-28120).

    Under pytest-xdist each worker draws from its own slice of the range, so two workers
    starting sandboxes at the same moment cannot pick the same ports."""
    slices = [(20000, 25000), (29000, 32700)]
    ports = [p for low, high in slices for p in range(low, high)]
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw"):
        workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
        share = len(ports) // max(workers, 1)
        index = int(worker[2:]) % max(workers, 1)
        ports = ports[index * share : (index + 1) * share]
    rng = random.Random()
    for _ in range(200):
        start = rng.randrange(0, len(ports) - count)
        base = ports[start]
        if ports[start + count - 1] != base + count - 1:
            continue  # the block would straddle a gap between slices
        if all(_bindable(port) for port in range(base, base + count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports found on 127.0.0.1")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


def _replace_ports(value: Any, ports: dict[int, int]) -> Any:
    """Every ``127.0.0.1:OLD`` in every string (DSNs, URLs, the instances' env) gets the new port."""
    if isinstance(value, str):
        for old, new in ports.items():
            value = value.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
        return value
    if isinstance(value, list):
        return [_replace_ports(v, ports) for v in value]
    if isinstance(value, dict):
        return {k: _replace_ports(v, ports) for k, v in value.items()}
    return value


def set_key(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set a key by its dotted path; None removes it (``metrics=None``: a sandbox without Prometheus)."""
    *parents, key = dotted.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    if value is None:
        node.pop(key, None)
    else:
        node[key] = value
