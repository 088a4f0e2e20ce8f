"""The sandbox's node agent: a kubelet whose containers are local processes.

``python -m sandbox.kubelet --kubeconfig K --catalog C --dir D [--nodes 2]`` registers Nodes with
the API server, renews their Leases, and runs each Pod the scheduler binds to them: the image's
repository names a service in the catalog (sandbox.images), its tag the release, and the
container is that release's process listening on the Pod's own loopback address (from the
node's pod range in 127.0.0.0/8) and its containerPort. It reports what a kubelet reports:

- ``Pending`` with ``ErrImagePull`` then ``ImagePullBackOff`` for an image that names no release;
- ``Running``; ``Ready`` from the readiness probe (httpGet or tcpSocket, with its period and
  thresholds; without a probe, ready once started); a failing liveness probe restarts it;
- an exit restarts the container, at once the first time, then after a back-off that doubles
  (``CrashLoopBackOff``), with ``restartCount`` and ``lastState.terminated`` (exit code,
  ``Error``/``Completed``);
- ``OOMKilled`` (exit 137) when the process's memory passes ``resources.limits.memory``;
- graceful termination: a preStop ``sleep``, SIGTERM, ``terminationGracePeriodSeconds``, SIGKILL, then the Pod is
  removed from the API, as a kubelet confirms a deletion.

Containers' output goes to log files the API server reads through the node's HTTPS endpoint
(``kubectl logs``, ``read_namespaced_pod_log``, ``previous=true`` for the last run).

Each node has its own HTTPS port (its ``daemonEndpoints.kubeletEndpoint.Port``), which also serves
what metrics-server scrapes, ``/metrics/resource``, in the kubelet's format (``kubectl top``):

- the node: what runs on it, as a real node's root cgroup counts it: its containers' CPU time
  (those that have ended included, so the counter only grows) and memory, plus its share of the
  agent's own process (a node's system daemons). Not the machine's: every node of the agent is on
  this one machine, beside whatever else it runs (other tests, a build), which is not the node's
  load. Capacity and allocatable are the machine's cores and memory;
- each running container: the CPU time and resident memory of its process and the processes
  under it (/proc/<pid>/stat and schedstat, VmRSS), its start time; each pod: its containers' sum.

What it does not do: volumes, init containers, exec probes, port-forward, exec, cgroups.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import faulthandler
import http.server
import ipaddress
import logging
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from sandbox.control_plane import listen_address
from sandbox.images import Catalog, Resolved
from sandbox.service_proxy import ServiceProxy

POD_OF = "RELEASEGATE_SANDBOX_NODES"
"""In every container's environment: the agent directory whose pod it runs (sandbox.cluster.stop)."""

log = logging.getLogger("sandbox.kubelet")
TICK_S = 0.2
LEASE_S = 40
RENEW_S = 5.0
MIB = 1024 * 1024
_UNITS = {"Ki": 1024, "Mi": MIB, "Gi": 1024 * MIB, "K": 1000, "M": 1000**2, "G": 1000**3, "": 1}


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def memory_bytes(quantity: str | None) -> int | None:
    """``256Mi``, ``1Gi``, ``500M`` as bytes; None when unset."""
    if not quantity:
        return None
    for unit in ("Ki", "Mi", "Gi", "K", "M", "G", ""):
        if unit and quantity.endswith(unit):
            return int(float(quantity[: -len(unit)]) * _UNITS[unit])
    return int(float(quantity))


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and its children (a release may fork workers)."""
    total = 0
    pids = [pid]
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            pids.append(int(line))
    for p in pids:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def machine_memory() -> tuple[int, int]:
    """(total, in use) bytes: MemTotal and MemTotal - MemAvailable (/proc/meminfo): the total is
    each node's capacity."""
    info = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, value = line.partition(":")
        info[key] = int(value.split()[0]) * 1024
    return info["MemTotal"], info["MemTotal"] - info["MemAvailable"]


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process under it (a container's processes: no cgroups here)."""
    found, queue = [], [pid]
    while queue:
        p = queue.pop()
        found.append(p)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                with contextlib.suppress(OSError, ValueError):
                    queue.extend(int(c) for c in (task / "children").read_text().split())
    return found


def own_usage() -> tuple[float, int]:
    """(CPU seconds, resident bytes) of the agent's own process, without its containers."""
    stat = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    rss = next(
        int(line.split()[1]) * 1024
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    return (int(stat[11]) + int(stat[12])) / CLOCK_TICKS, rss


def process_usage(pid: int) -> tuple[float, int]:
    """(CPU seconds, resident bytes) of a process and those under it, as a container's cgroup
    counts them: CPU of live and exited threads and of reaped children (stat's utime, stime,
    cutime, cstime, in clock ticks), or the live threads' nanosecond run time (schedstat) when
    that is more (a process that has barely run shows 0 ticks, and metrics-server drops a pod
    with a container at 0)."""
    cpu, rss = 0.0, 0
    for p in process_tree(pid):
        try:
            stat = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks = sum(int(v) for v in stat[11:15]) / CLOCK_TICKS  # utime stime cutime cstime
            run_ns = 0
            for task in Path(f"/proc/{p}/task").iterdir():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    run_ns += int((task / "schedstat").read_text().split()[0])
            cpu += max(ticks, run_ns / 1e9)
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):  # gone meanwhile
            continue
    return cpu, rss


def _labels(**values: str) -> str:
    escaped = (v.replace("\\", "\\\\").replace('"', '\\"') for v in values.values())
    return "{" + ",".join(f'{k}="{v}"' for k, v in zip(values, escaped, strict=True)) + "}"


RESOURCE_METRICS = (
    (
        "container_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the container in core-seconds",
    ),
    ("container_memory_working_set_bytes", "gauge", "Current working set of the container in bytes"),
    ("container_start_time_seconds", "gauge", "Start time of the container since unix epoch in seconds"),
    ("node_cpu_usage_seconds_total", "counter", "Cumulative cpu time consumed by the node in core-seconds"),
    ("node_memory_working_set_bytes", "gauge", "Current working set of the node in bytes"),
    ("pod_cpu_usage_seconds_total", "counter", "Cumulative cpu time consumed by the pod in core-seconds"),
    ("pod_memory_working_set_bytes", "gauge", "Current working set of the pod in bytes"),
    (
        "resource_scrape_error",
        "gauge",
        "1 if there was an error while getting container metrics, 0 otherwise",
    ),
)
"""The kubelet's /metrics/resource families (pkg/kubelet/metrics/collectors/resource_metrics.go)."""


@dataclass
class Probe:
    """A readiness or liveness probe of the pod spec, run against the pod's address."""

    spec: Any
    host: str
    ports: dict[str, int]
    successes: int = 0
    failures: int = 0
    next_at: float = 0.0

    def due(self, started: float) -> bool:
        delay = self.spec.initial_delay_seconds or 0
        return time.monotonic() >= max(self.next_at, started + delay)

    def run(self) -> bool:
        """One try; returns whether it passed. Its period sets the next."""
        self.next_at = time.monotonic() + (self.spec.period_seconds or 10)
        timeout = self.spec.timeout_seconds or 1
        ok = False
        if self.spec.http_get is not None:
            get = self.spec.http_get
            port = self._port(get.port)
            scheme = (get.scheme or "HTTP").lower()
            try:
                response = httpx.get(
                    f"{scheme}://{self.host}:{port}{get.path or '/'}", timeout=timeout, verify=False
                )
                ok = 200 <= response.status_code < 400
            except httpx.HTTPError:
                ok = False
        elif self.spec.tcp_socket is not None:
            import socket

            try:
                with socket.create_connection(
                    (self.host, self._port(self.spec.tcp_socket.port)), timeout=timeout
                ):
                    ok = True
            except OSError:
                ok = False
        if ok:
            self.successes, self.failures = self.successes + 1, 0
        else:
            self.successes, self.failures = 0, self.failures + 1
        return ok

    def _port(self, port: int | str) -> int:
        return self.ports[port] if isinstance(port, str) and not port.isdigit() else int(port)


@dataclass
class Container:
    """One container of a pod: its process, its state as the API shows it, its logs."""

    spec: Any
    logs: Path
    restart_count: int = 0
    process: subprocess.Popen[bytes] | None = None
    started_at: str | None = None
    started_mono: float = 0.0
    started_wall: float = 0.0
    ready: bool = False
    waiting: tuple[str, str] | None = ("ContainerCreating", "")
    last_terminated: dict[str, Any] | None = None
    terminated: dict[str, Any] | None = None
    restart_at: float = 0.0
    crashes_in_a_row: int = 0
    oom: bool = False
    readiness: Probe | None = None
    liveness: Probe | None = None

    def log_file(self, previous: bool = False) -> Path:
        return self.logs / f"{self.spec.name}.{self.restart_count - (1 if previous else 0)}.log"

    def status(self) -> dict[str, Any]:
        if self.terminated is not None:
            state: dict[str, Any] = {"terminated": self.terminated}
        elif self.waiting is not None:
            state = {"waiting": {"reason": self.waiting[0], "message": self.waiting[1] or None}}
        else:
            state = {"running": {"startedAt": self.started_at}}
        return {
            "name": self.spec.name,
            "image": self.spec.image,
            "imageID": f"sandbox://{self.spec.image}",
            "containerID": f"sandbox://{self.process.pid}" if self.process is not None else None,
            "ready": self.ready,
            "started": self.process is not None and self.waiting is None,
            "restartCount": self.restart_count,
            "state": state,
            "lastState": {"terminated": self.last_terminated} if self.last_terminated else {},
        }


@dataclass
class PodRunner:
    """Runs one pod on its own thread until the pod is deleted (see the module docstring)."""

    agent: NodeAgent
    pod: Any
    ip: str
    containers: list[Container] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    gone: threading.Event = field(default_factory=threading.Event)
    deleted: bool = False
    _last_status: dict[str, Any] | None = None
    _last_stamped: dict[str, Any] = field(default_factory=dict)
    _start_time: str = field(default_factory=now)

    @property
    def key(self) -> str:
        return f"{self.pod.metadata.namespace}/{self.pod.metadata.name}"

    def start(self) -> None:
        directory = (
            self.agent.dir
            / "pods"
            / f"{self.pod.metadata.namespace}_{self.pod.metadata.name}_{self.pod.metadata.uid}"
        )
        directory.mkdir(parents=True, exist_ok=True)
        self.containers = [Container(spec, directory) for spec in self.pod.spec.containers]
        threading.Thread(target=self._loop, name=self.key, daemon=True).start()

    # -- the loop ------------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while not self.stopping.is_set():
                for container in self.containers:
                    self._sync(container)
                self._report()
                self.stopping.wait(TICK_S)
            self._terminate()
        except Exception:  # a bug here must not take the agent down with it: say so in its log
            log.exception("%s: the pod's runner failed", self.key)
        finally:
            self.gone.set()

    def _sync(self, c: Container) -> None:
        if c.terminated is not None and self._restart_policy() != "Always":
            return
        if c.process is None:
            if time.monotonic() >= c.restart_at:
                self._run(c)
            return
        code = c.process.poll()
        if code is None:
            self._watch_memory(c)
            self._probe(c)
            return
        self._exited(c, code)

    def _run(self, c: Container) -> None:
        resolved = self.agent.catalog().resolve(c.spec.image)
        if not isinstance(resolved, Resolved):  # a kubelet's two messages: the error, then its back-off
            if c.waiting and c.waiting[0] == "ErrImagePull":
                c.waiting = ("ImagePullBackOff", f'Back-off pulling image "{c.spec.image}"')
            elif not c.waiting or c.waiting[0] != "ImagePullBackOff":
                c.waiting = ("ErrImagePull", f'failed to pull and unpack image "{c.spec.image}": {resolved}')
            c.restart_at = time.monotonic() + self.agent.backoff_s
            return
        ports = {p.name: p.container_port for p in c.spec.ports or [] if p.name}
        port = next((p.container_port for p in c.spec.ports or []), 8080)
        try:
            env = self._env(c)
        except (ApiException, ValueError) as exc:
            c.waiting = (
                "CreateContainerConfigError",
                str(exc) if isinstance(exc, ValueError) else f"{exc.status} {exc.reason}",
            )
            c.restart_at = time.monotonic() + self.agent.backoff_s
            return
        host = listen_address(self.ip)
        argv = resolved.argv(host=host, port=port)
        output = c.log_file().open("ab")
        try:
            c.process = subprocess.Popen(
                argv, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=resolved.workdir, start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            c.waiting = ("RunContainerError", str(exc))
            c.restart_at = time.monotonic() + self.agent.backoff_s
            return
        finally:
            output.close()
        c.started_at, c.started_mono, c.started_wall = now(), time.monotonic(), time.time()
        c.waiting, c.terminated, c.oom, c.ready = None, None, False, False
        c.readiness = Probe(c.spec.readiness_probe, host, ports) if c.spec.readiness_probe else None
        c.liveness = Probe(c.spec.liveness_probe, host, ports) if c.spec.liveness_probe else None
        if c.readiness is None:
            c.ready = True
        log.info(
            "%s: %s started as pid %d on %s:%d (pod IP %s)",
            self.key,
            c.spec.name,
            c.process.pid,
            host,
            port,
            self.ip,
        )

    def _exited(self, c: Container, code: int) -> None:
        reason = "OOMKilled" if c.oom else ("Completed" if code == 0 else "Error")
        exit_code = 137 if c.oom else (code if code >= 0 else 128 - code)
        record = {
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": c.started_at,
            "finishedAt": now(),
            "containerID": f"sandbox://{c.process.pid if c.process else 0}",
        }
        ran_s = time.monotonic() - c.started_mono
        c.process, c.ready = None, False
        log.info("%s: %s exited %d (%s) after %.1f s", self.key, c.spec.name, exit_code, reason, ran_s)
        policy = self._restart_policy()
        if policy == "Never" or (policy == "OnFailure" and exit_code == 0):
            c.terminated = record
            return
        c.last_terminated = record
        c.restart_count += 1
        # As a kubelet: the first exit (after a long run, too) restarts at once; each next one
        # waits twice as long as the one before, in CrashLoopBackOff.
        c.crashes_in_a_row = 1 if ran_s > 10 * self.agent.backoff_s else c.crashes_in_a_row + 1
        if c.crashes_in_a_row == 1:
            c.restart_at = 0.0
            self._run(c)
            return
        delay = min(self.agent.backoff_s * 2 ** (c.crashes_in_a_row - 2), self.agent.backoff_s * 30)
        c.restart_at = time.monotonic() + delay
        c.waiting = (
            "CrashLoopBackOff",
            f"back-off {delay:g}s restarting failed container={c.spec.name} pod={self.pod.metadata.name}",
        )

    def _watch_memory(self, c: Container) -> None:
        limits = c.spec.resources.limits if c.spec.resources and c.spec.resources.limits else {}
        limit = memory_bytes(limits.get("memory"))
        if limit is not None and c.process is not None and rss_bytes(c.process.pid) > limit:
            log.info("%s: %s passed its memory limit %s: killed", self.key, c.spec.name, limits["memory"])
            c.oom = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(c.process.pid, signal.SIGKILL)

    def _probe(self, c: Container) -> None:
        if c.readiness is not None and c.readiness.due(c.started_mono):
            c.readiness.run()
            spec = c.readiness.spec
            if c.readiness.successes >= (spec.success_threshold or 1):
                c.ready = True
            elif c.readiness.failures >= (spec.failure_threshold or 3):
                c.ready = False
        live = c.liveness
        if live is not None and live.due(c.started_mono) and not live.run():  # noqa: SIM102 (run() has an effect)
            if live.failures >= (live.spec.failure_threshold or 3) and c.process is not None:
                log.info("%s: %s failed its liveness probe: restarted", self.key, c.spec.name)
                self._stop_process(c, 5.0)

    # -- env -----------------------------------------------------------------------------------

    def _read(self, kind: str, name: str) -> dict[str, str]:
        """A Secret's (decoded) or ConfigMap's data; missing, the kubelet's message."""
        namespace = self.pod.metadata.namespace
        try:
            if kind == "secret":
                data = self.agent.core.read_namespaced_secret(name, namespace).data or {}
                return {k: base64.b64decode(v).decode() for k, v in data.items()}
            return self.agent.core.read_namespaced_config_map(name, namespace).data or {}
        except ApiException as exc:
            if exc.status == 404:
                raise ValueError(f'{kind} "{name}" not found') from None
            raise

    def _env(self, c: Container) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TZ", "TMPDIR")}
        env["HOSTNAME"] = self.pod.metadata.name  # as a container's hostname is its pod's name
        env[POD_OF] = str(self.agent.dir)  # whose pod this is, for a stop after the agent died
        for source in c.spec.env_from or []:
            if source.config_map_ref is not None:
                data = self._read("configmap", source.config_map_ref.name)
                env.update({(source.prefix or "") + k: v for k, v in data.items()})
            if source.secret_ref is not None:
                data = self._read("secret", source.secret_ref.name)
                env.update({(source.prefix or "") + k: v for k, v in data.items()})
        for var in c.spec.env or []:
            if var.value_from is None:
                env[var.name] = var.value or ""
                continue
            ref = var.value_from
            for kind, key_ref in (("secret", ref.secret_key_ref), ("configmap", ref.config_map_key_ref)):
                if key_ref is not None:
                    data = self._read(kind, key_ref.name)
                    if key_ref.key not in data:
                        raise ValueError(
                            f"couldn't find key {key_ref.key} in {kind.title()} {self.pod.metadata.namespace}/{key_ref.name}"
                        )
                    env[var.name] = data[key_ref.key]
            if ref.field_ref is not None:
                env[var.name] = {
                    "metadata.name": self.pod.metadata.name,
                    "metadata.namespace": self.pod.metadata.namespace,
                    "status.podIP": self.ip,
                    "spec.nodeName": self.pod.spec.node_name,
                }.get(ref.field_ref.field_path, "")
        return env

    def _restart_policy(self) -> str:
        return self.pod.spec.restart_policy or "Always"

    # -- status --------------------------------------------------------------------------------

    def _report(self) -> None:
        statuses = [c.status() for c in self.containers]
        all_ready = all(c.ready for c in self.containers)
        if all(c.terminated is not None for c in self.containers):
            phase = "Succeeded" if all(c.terminated["exitCode"] == 0 for c in self.containers) else "Failed"  # type: ignore[index]
        elif all(c.process is not None or c.last_terminated is not None for c in self.containers):
            phase = "Running"  # Pending while any container has not started yet (an image not pulled)
        else:
            phase = "Pending"
        ready = "True" if all_ready and phase == "Running" else "False"
        status = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": self.ip,
            "podIPs": [{"ip": self.ip}],
            "startTime": self._start_time,
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": ready},
                {"type": "Ready", "status": ready},
            ],
            "containerStatuses": statuses,
        }
        if status == self._last_status:
            return
        stamped = {
            **status,
            "conditions": [{**cond, "lastTransitionTime": now()} for cond in status["conditions"]],
        }
        if self._last_status is not None:  # a condition keeps its transition time while it holds
            before = {cond["type"]: cond for cond in self._last_stamped["conditions"]}
            stamped["conditions"] = [
                before[cond["type"]] if before.get(cond["type"], {}).get("status") == cond["status"] else cond
                for cond in stamped["conditions"]
            ]
        try:
            self.agent.core.patch_namespaced_pod_status(
                self.pod.metadata.name, self.pod.metadata.namespace, {"status": stamped}
            )
        except ApiException as exc:
            if exc.status == 404:
                self.stopping.set()
            else:
                log.warning("%s: status not written: %s", self.key, exc.reason)
            return
        self._last_status, self._last_stamped = status, stamped

    # -- stopping --------------------------------------------------------------------------------

    def _stop_process(self, c: Container, grace_s: float) -> None:
        """The container's preStop ``sleep`` (the process keeps serving while its endpoint leaves
        every Service: the usual cure for requests sent to a pod that is going away), then
        SIGTERM, and SIGKILL once the grace period, which the sleep counts against, is over."""
        process = c.process
        if process is None:
            return
        started = time.monotonic()
        pre_stop = c.spec.lifecycle.pre_stop if c.spec.lifecycle else None
        if pre_stop is not None and pre_stop.sleep is not None:
            time.sleep(min(float(pre_stop.sleep.seconds), grace_s))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(max(0.0, grace_s - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def _terminate(self) -> None:
        grace = self.pod.metadata.deletion_grace_period_seconds
        if grace is None:
            grace = self.pod.spec.termination_grace_period_seconds or 30
        threads = [
            threading.Thread(target=self._stop_process, args=(c, float(grace))) for c in self.containers
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if self.agent.confirm_deletion and not self.deleted:
            try:
                self.agent.core.delete_namespaced_pod(
                    self.pod.metadata.name,
                    self.pod.metadata.namespace,
                    body=client.V1DeleteOptions(
                        grace_period_seconds=0,
                        preconditions=client.V1Preconditions(uid=self.pod.metadata.uid),
                    ),
                )
            except ApiException as exc:
                if exc.status != 404:
                    log.warning("%s: deletion not confirmed: %s %s", self.key, exc.status, exc.reason)
        log.info("%s: stopped", self.key)


class NodeAgent:
    """Nodes, their Leases, the pods bound to them, and the log endpoint (module docstring)."""

    def __init__(
        self,
        api: client.ApiClient,
        catalog: Path,
        directory: Path,
        *,
        nodes: list[str],
        pod_cidr: str,
        backoff_s: float = 1.0,
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.leases = client.CoordinationV1Api(api)
        self.catalog_file = catalog
        self._catalog: tuple[float, Catalog] | None = None
        self.dir = directory
        self.nodes = nodes
        self.backoff_s = backoff_s
        self.confirm_deletion = True
        self.runners: dict[str, PodRunner] = {}
        self._cpu_seen: dict[str, dict[tuple[str, str, int], float]] = {}
        """Per node: each container process's last CPU time read, ended ones kept: the node's
        CPU counter is their sum, and a counter must never go down."""
        # the range's first address is never a pod's: metrics-server stands there (sandbox.cluster)
        self._free = [str(ip) for ip in ipaddress.ip_network(pod_cidr).hosts()][1:]
        self._lock = threading.Lock()
        self.ports: dict[str, int] = {}
        """Each node's HTTPS port (logs, /metrics/resource), as its status reports it."""

    def catalog(self) -> Catalog:
        """The images this node can run, read again when the file changes (a registry gets pushes)."""
        mtime = self.catalog_file.stat().st_mtime
        if self._catalog is None or self._catalog[0] != mtime:
            self._catalog = (mtime, Catalog.load(self.catalog_file))
        return self._catalog[1]

    # -- nodes ---------------------------------------------------------------------------------

    def register(self) -> None:
        for name in self.nodes:
            body = {
                "metadata": {
                    "name": name,
                    "labels": {
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "type": "sandbox",
                    },
                },
                "spec": {},
            }
            with contextlib.suppress(ApiException):
                self.core.create_node(body)
        self.heartbeat()

    def heartbeat(self) -> None:
        stamp = now()
        # each node is the whole machine (module docstring): what /metrics/resource measures
        room = {"cpu": str(os.cpu_count() or 1), "memory": f"{machine_memory()[0] // 1024}Ki", "pods": "110"}
        for name in self.nodes:
            status = {
                "capacity": room,
                "allocatable": room,
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": self.ports.get(name, 0)}},
                "nodeInfo": {
                    "architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "v1.37.2-sandbox",
                    "kubeProxyVersion": "", "containerRuntimeVersion": "sandbox://processes", "osImage": "loopback",
                    "kernelVersion": os.uname().release, "bootID": "", "machineID": "", "systemUUID": "",
                },
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "sandbox node agent is posting ready status",
                     "lastHeartbeatTime": stamp, "lastTransitionTime": stamp},
                    {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory", "lastHeartbeatTime": stamp, "lastTransitionTime": stamp},
                    {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure", "lastHeartbeatTime": stamp, "lastTransitionTime": stamp},
                    {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID", "lastHeartbeatTime": stamp, "lastTransitionTime": stamp},
                ],
            }  # fmt: skip
            try:
                self.core.patch_node_status(name, {"status": status})
                self._renew_lease(name)
            except ApiException as exc:
                log.warning("node %s: heartbeat not written: %s", name, exc.reason)

    def _renew_lease(self, name: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {
            "metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_S, "renewTime": stamp},
        }
        try:
            self.leases.patch_namespaced_lease(name, "kube-node-lease", body)
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.leases.create_namespaced_lease("kube-node-lease", body)

    # -- pods ----------------------------------------------------------------------------------

    def on_pod(self, kind: str, pod: Any) -> None:
        if pod.spec.node_name not in self.nodes:
            return
        uid = pod.metadata.uid
        with self._lock:
            runner = self.runners.get(uid)
            if kind == "DELETED" or pod.metadata.deletion_timestamp is not None:
                if runner is not None:
                    runner.pod = pod
                    runner.deleted = runner.deleted or kind == "DELETED"  # gone: nothing to confirm
                    runner.stopping.set()
                elif kind != "DELETED":  # not ours to run (any more): confirm at once
                    with contextlib.suppress(ApiException):
                        self.core.delete_namespaced_pod(
                            pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0
                        )
                return
            if runner is None:
                if pod.status is not None and pod.status.phase in ("Succeeded", "Failed"):
                    return
                runner = PodRunner(self, pod, self._allocate())
                self.runners[uid] = runner
                runner.start()
                threading.Thread(target=self._release_when_gone, args=(uid, runner), daemon=True).start()
            else:
                runner.pod = pod

    def _allocate(self) -> str:
        in_use = {r.ip for r in self.runners.values()}
        for ip in self._free:
            if ip not in in_use:
                return ip
        raise RuntimeError("the node's pod range is exhausted")

    def _release_when_gone(self, uid: str, runner: PodRunner) -> None:
        runner.gone.wait()
        with self._lock:
            self.runners.pop(uid, None)

    def watch_pods(self) -> None:
        """List then watch every pod; a watch that ends (timeout, dropped) is started again."""
        version = None
        while True:
            try:
                if version is None:
                    listed = self.core.list_pod_for_all_namespaces()
                    for pod in listed.items:
                        self.on_pod("ADDED", pod)
                    version = listed.metadata.resource_version
                for event in watch.Watch().stream(
                    self.core.list_pod_for_all_namespaces, resource_version=version, timeout_seconds=60
                ):
                    pod = event["object"]
                    version = pod.metadata.resource_version
                    self.on_pod(event["type"], pod)
            except ApiException as exc:
                if exc.status == 410:  # too old: list again
                    version = None
                    continue
                log.warning("pod watch: %s; again in 1 s", exc.reason)
                time.sleep(1)
            except Exception as exc:  # connection dropped: the API server restarts, say
                log.warning("pod watch: %s; again in 1 s", exc)
                version = None
                time.sleep(1)

    def stop_all(self) -> None:
        self.confirm_deletion = False
        with self._lock:
            runners = list(self.runners.values())
        for runner in runners:
            runner.pod.metadata.deletion_grace_period_seconds = 5
            runner.stopping.set()
        for runner in runners:
            runner.gone.wait(15)

    # -- logs ------------------------------------------------------------------------------------

    def serve(self, cert: Path, key: Path) -> None:
        """Each node's HTTPS endpoint on a port of its own: the nodes share 127.0.0.1, and
        metrics-server (--kubelet-use-node-status-port) tells them apart by port alone."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        for node in self.nodes:
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler(node))
            server.socket = context.wrap_socket(server.socket, server_side=True)
            self.ports[node] = server.server_address[1]
            threading.Thread(target=server.serve_forever, name=f"kubelet {node}", daemon=True).start()

    def _handler(self, node: str) -> type[http.server.BaseHTTPRequestHandler]:
        agent = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                if url.path == "/metrics/resource":
                    self._send(agent.resource_metrics(node), "text/plain; version=0.0.4; charset=utf-8")
                    return
                parts = url.path.strip("/").split("/")
                if len(parts) != 4 or parts[0] != "containerLogs":
                    self.send_error(
                        404, "only /containerLogs/{namespace}/{pod}/{container} and /metrics/resource"
                    )
                    return
                _, namespace, pod, name = parts
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                text = agent.container_log(namespace, pod, name, query)
                if text is None:
                    self.send_error(404, f"container {name} of pod {namespace}/{pod} is not on this node")
                    return
                self._send(text, "text/plain; charset=utf-8")

            def _send(self, text: str, content_type: str) -> None:
                body = text.encode()
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        return Handler

    def resource_metrics(self, node: str) -> str:
        """The node's /metrics/resource, as a kubelet serves it to metrics-server: the machine's
        figures for the node, and its running containers' (module docstring), each sample stamped
        with the time it was read in milliseconds."""
        samples: dict[str, list[str]] = {name: [] for name, _, _ in RESOURCE_METRICS}
        stamp = int(time.time() * 1000)
        seen = self._cpu_seen.setdefault(node, {})
        agent_cpu, agent_memory = own_usage()
        node_memory = agent_memory // max(1, len(self.nodes))
        with self._lock:
            runners = [r for r in self.runners.values() if r.pod.spec.node_name == node]
        for runner in runners:
            namespace, pod = runner.pod.metadata.namespace, runner.pod.metadata.name
            pod_cpu, pod_memory, running = 0.0, 0, False
            for c in runner.containers:
                process = c.process
                if process is None or c.waiting is not None:
                    continue
                cpu, memory = process_usage(process.pid)
                seen[(runner.pod.metadata.uid, c.spec.name, process.pid)] = cpu
                node_memory += memory
                labels = _labels(container=c.spec.name, namespace=namespace, pod=pod)
                samples["container_cpu_usage_seconds_total"].append(f"{labels} {cpu:.6f} {stamp}")
                samples["container_memory_working_set_bytes"].append(f"{labels} {memory} {stamp}")
                samples["container_start_time_seconds"].append(f"{labels} {c.started_wall:.6f} {stamp}")
                pod_cpu, pod_memory, running = pod_cpu + cpu, pod_memory + memory, True
            if running:
                labels = _labels(namespace=namespace, pod=pod)
                samples["pod_cpu_usage_seconds_total"].append(f"{labels} {pod_cpu:.6f} {stamp}")
                samples["pod_memory_working_set_bytes"].append(f"{labels} {pod_memory} {stamp}")
        node_cpu = sum(seen.values()) + agent_cpu / max(1, len(self.nodes))
        samples["node_cpu_usage_seconds_total"].append(f"{node_cpu:.6f} {stamp}")
        samples["node_memory_working_set_bytes"].append(f"{node_memory} {stamp}")
        samples["resource_scrape_error"].append("0")
        lines = []
        for name, kind, help_text in RESOURCE_METRICS:
            lines += [f"# HELP {name} [STABLE] {help_text}", f"# TYPE {name} {kind}"]
            lines += [
                f"{name}{sample}" if sample.startswith("{") else f"{name} {sample}"
                for sample in samples[name]
            ]
        return "\n".join(lines) + "\n"

    def container_log(self, namespace: str, pod: str, name: str, query: dict[str, str]) -> str | None:
        with self._lock:
            runner = next(
                (
                    r
                    for r in self.runners.values()
                    if r.pod.metadata.namespace == namespace and r.pod.metadata.name == pod
                ),
                None,
            )
        container = next((c for c in runner.containers if c.spec.name == name), None) if runner else None
        if container is None:
            return None
        path = container.log_file(previous=query.get("previous") == "true")
        try:
            lines = path.read_text(errors="replace").splitlines(keepends=True)
        except OSError:
            lines = []
        if "tailLines" in query:
            lines = lines[-int(query["tailLines"]) :] if int(query["tailLines"]) else []
        if "limitBytes" in query:
            return "".join(lines)[: int(query["limitBytes"])]
        return "".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.kubelet", description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument(
        "--catalog", required=True, help="the images this node can run (TOML, see sandbox.images)"
    )
    parser.add_argument("--dir", required=True, help="where the containers' logs go")
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--node-prefix", default="sandbox-node")
    parser.add_argument(
        "--pod-cidr", required=True, help="the pods' addresses in the API (sandbox.control_plane)"
    )
    parser.add_argument(
        "--backoff-s", type=float, default=1.0, help="the first restart's back-off (kubelet: 10)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per probe is noise
    faulthandler.register(signal.SIGUSR1)  # kill -USR1 <pid>: every thread's stack into the log
    try:
        listen_address(str(ipaddress.ip_network(args.pod_cidr).network_address))
    except ValueError as exc:
        parser.error(f"--pod-cidr: {exc}")
    api = config.new_client_from_config(args.kubeconfig)
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    from sandbox.tls import self_signed

    cert, key = self_signed(valid_for=timedelta(days=365)).write(directory, "kubelet")
    agent = NodeAgent(
        api, Path(args.catalog), directory,
        nodes=[f"{args.node_prefix}-{i}" for i in range(1, args.nodes + 1)],
        pod_cidr=args.pod_cidr, backoff_s=args.backoff_s,
    )  # fmt: skip
    agent.serve(cert, key)
    agent.register()
    ServiceProxy(config.new_client_from_config(args.kubeconfig)).start()

    def beat() -> None:
        while True:
            time.sleep(RENEW_S)
            agent.heartbeat()

    threading.Thread(target=beat, name="heartbeat", daemon=True).start()
    threading.Thread(target=agent.watch_pods, name="pods", daemon=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("nodes %s ready; pods on %s", ", ".join(agent.nodes), args.pod_cidr)
    stop.wait()
    log.info("stopping: every container is stopped")
    agent.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
