"""The sandbox's Kubernetes: the control plane (sandbox.control_plane), the node agent with its
service proxy (sandbox.kubelet), metrics-server behind the aggregation layer (``kubectl top``,
metrics.k8s.io) and the Argo Rollouts controller with its CRDs, all on loopback in one
directory, all stopped by ``stop``.

metrics-server runs as a process of the machine, not as a pod, but is reached as in a cluster:
the APIService v1beta1.metrics.k8s.io names the Service kube-system/metrics-server, which has no
selector and one EndpointSlice written here, whose address is the pod range's first (100.B.C.1,
which the node agent never gives a pod); metrics-server listens on its loopback twin
(127.B.C.1, sandbox.control_plane.listen_address). The API server dials the Service's ClusterIP,
where the node agent's service proxy forwards to that endpoint, and shows its front-proxy client
certificate. The APIService skips verifying metrics-server's serving certificate
(``insecureSkipTLSVerify``, self-signed by metrics-server at start): acceptable on loopback in a
sandbox, not in a cluster. metrics-server scrapes each node's ``/metrics/resource`` on the node's
own port (``--kubelet-use-node-status-port``: the nodes share 127.0.0.1) every 10 s, its
shortest resolution; node metrics need two scrapes, so ``start`` waits about 10 s for them
(while the Argo Rollouts controller starts).

``python -m sandbox up --kubernetes`` starts one beside the sandbox; tests start their own
(tests/k8s/real_cluster.py). The kubeconfig it writes (``<dir>/kubeconfig``) is what helm,
kubectl and releasegate's ``platform.kubernetes.kubeconfig`` use.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from releasegate.platforms.base import Progress
from sandbox.common import (
    ComponentStatus,
    SandboxError,
    await_ready,
    pid_from_file,
    spawn,
    stop_pid,
    wait_for,
)
from sandbox.control_plane import ControlPlane, listen_address, tool
from sandbox.images import DEFAULT as DEFAULT_CATALOG
from sandbox.kubelet import POD_OF

AGENT = "sandbox.kubelet"
ROLLOUTS = "rollouts-controller"
METRICS_SERVER = "metrics-server"
METRICS_NAMESPACE = "kube-system"
METRICS_API = ("metrics.k8s.io", "v1beta1")
METRICS_RESOLUTION = "10s"
"""metrics-server's shortest: each node's CPU figure is the rate between its last two scrapes."""
READY_TIMEOUT_S = 60.0


def metrics_server_address(pod_cidr: str) -> str:
    """metrics-server's address in the API: the pod range's first, never a pod's (sandbox.kubelet)."""
    return str(ipaddress.ip_network(pod_cidr)[1])


class Cluster:
    """A control plane, ``nodes`` nodes, with ``metrics`` metrics-server (metrics.k8s.io) and
    with ``argo`` the Argo Rollouts controller."""

    def __init__(self, directory: Path, *, nodes: int = 2, argo: bool = True, catalog: Path = DEFAULT_CATALOG,
                 backoff_s: float = 1.0, service_cidr: str | None = None, metrics: bool = True) -> None:  # fmt: skip
        self.dir = directory
        self.control_plane = ControlPlane(directory, service_cidr)
        self.kubeconfig = self.control_plane.kubeconfig
        self.nodes = nodes
        self.argo = argo
        self.metrics = metrics
        self._metrics_file = directory / f"{METRICS_SERVER}.json"
        self.catalog = catalog
        self.backoff_s = backoff_s
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def api(self) -> client.ApiClient:
        return config.new_client_from_config(str(self.kubeconfig))

    def is_up(self) -> bool:
        return all(row.up for row in self.status())

    def start(self, progress: Progress = print) -> str:
        """Everything that is not running; what was started is stopped again if a part fails,
        so that no half-started control plane is left behind."""
        if self.is_up():
            return f"already up: {self.control_plane.url}, kubeconfig {self.kubeconfig}"
        try:
            return self._start(progress)
        except BaseException:
            self.stop(lambda _line: None)
            raise

    def _start(self, progress: Progress) -> str:
        started = time.monotonic()
        progress(f"kubernetes  control plane: {self.control_plane.start(progress)}")
        if pid_from_file(self.dir / "agent.pid", AGENT) is None:
            self._spawn(
                "agent",
                [sys.executable, "-m", AGENT, "--kubeconfig", str(self.kubeconfig), "--catalog", str(self.catalog),
                 "--dir", str(self.dir / "nodes"), "--nodes", str(self.nodes),
                 "--pod-cidr", self.control_plane.pod_cidr, "--backoff-s", f"{self.backoff_s:g}"],
            )  # fmt: skip
        self._wait("node agent", "agent", self._nodes_ready)
        progress(
            f"kubernetes  {self.nodes} node(s) Ready (node agent, pods on {self.control_plane.pod_cidr})"
        )
        if self.metrics:
            self._start_metrics_server()
        if self.argo:
            self._start_argo()
            progress("kubernetes  Argo Rollouts controller and CRDs")
        if self.metrics:
            self._wait(
                "metrics.k8s.io (every node's metrics from metrics-server)",
                METRICS_SERVER,
                self._node_metrics,
            )
            progress(f"kubernetes  metrics-server: {'/'.join(METRICS_API)} has every node's CPU and memory")
        return f"up in {time.monotonic() - started:.1f} s: {self.control_plane.url}, kubeconfig {self.kubeconfig}"

    def stop(self, progress: Progress = print) -> str:
        """The controllers first, then the agent (its containers stop with it), then the control plane."""
        for name, needle in (("argo", ROLLOUTS), (METRICS_SERVER, METRICS_SERVER), ("agent", AGENT)):
            pid = pid_from_file(self.dir / f"{name}.pid", needle)
            if pid is not None:
                stop_pid(pid, needle, signal.SIGTERM, 30.0)
            (self.dir / f"{name}.pid").unlink(missing_ok=True)
        for pid in pods_left(self.dir / "nodes"):  # the agent waits 15 s for each: some outlive it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        return self.control_plane.stop(progress)

    def status(self) -> list[ComponentStatus]:
        rows = self.control_plane.status()
        for name, needle in (("agent", AGENT), ("argo", ROLLOUTS)):
            if name == "argo" and not self.argo:
                continue
            pid = pid_from_file(self.dir / f"{name}.pid", needle)
            rows.append(
                ComponentStatus(needle if name == "argo" else "node-agent", pid is not None, "127.0.0.1", pid)
            )
        if self.metrics:
            pid = pid_from_file(self.dir / f"{METRICS_SERVER}.pid", METRICS_SERVER)
            where = self._metrics_where()
            rows.append(
                ComponentStatus(
                    METRICS_SERVER, pid is not None, f"{where[0]}:{where[1]}" if where else "-", pid
                )
            )
        return rows

    # -- helpers -----------------------------------------------------------------------------------

    def _metrics_where(self) -> tuple[str, int] | None:
        """(address, port) metrics-server listens on, as its last start wrote them."""
        try:
            data = json.loads(self._metrics_file.read_text())
            return str(data["address"]), int(data["port"])
        except (OSError, ValueError, KeyError):
            return None

    def _start_metrics_server(self) -> None:
        """Its Service and EndpointSlice, the process, then the APIService once it serves (an
        APIService found unavailable is checked again only after a growing back-off). Returns
        without waiting for the metrics: ``_node_metrics`` says when they are there."""
        if pid_from_file(self.dir / f"{METRICS_SERVER}.pid", METRICS_SERVER) is not None:
            return
        binary = tool(METRICS_SERVER)
        endpoint = metrics_server_address(self.control_plane.pod_cidr)
        host = listen_address(endpoint)
        with socket.socket() as sock:  # a free port on metrics-server's own address
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        self._metrics_file.write_text(json.dumps({"address": host, "port": port, "endpoint": endpoint}))
        api = self.api()
        self._register_endpoint(api, endpoint, port)
        certs = self.dir / f"{METRICS_SERVER}-certs"
        certs.mkdir(parents=True, exist_ok=True)
        kubeconfig = str(self.kubeconfig)
        self._spawn(
            METRICS_SERVER,
            [str(binary), "--kubeconfig", kubeconfig, "--authentication-kubeconfig", kubeconfig,
             "--authorization-kubeconfig", kubeconfig, "--bind-address", host, "--secure-port", str(port),
             "--cert-dir", str(certs), "--kubelet-insecure-tls", "--kubelet-preferred-address-types", "InternalIP",
             # each node's own port from its status (--kubelet-port would be one port for all of them)
             "--kubelet-use-node-status-port", "--kubelet-request-timeout", "5s",
             "--metric-resolution", METRICS_RESOLUTION, "--v", "1"],
        )  # fmt: skip
        self._wait(METRICS_SERVER, METRICS_SERVER, lambda: _serves(f"https://{host}:{port}/healthz"))
        body = {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": f"{METRICS_API[1]}.{METRICS_API[0]}", "labels": {"k8s-app": METRICS_SERVER}},
            "spec": {
                "service": {"name": METRICS_SERVER, "namespace": METRICS_NAMESPACE, "port": 443},
                "group": METRICS_API[0],
                "version": METRICS_API[1],
                "insecureSkipTLSVerify": True,  # metrics-server's self-signed certificate (module docstring)
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        }
        try:
            client.ApiregistrationV1Api(api).create_api_service(body)
        except ApiException as exc:
            if exc.status != 409:
                raise SandboxError(f"metrics-server: APIService refused: {exc.status} {exc.reason}") from None

    def _register_endpoint(self, api: client.ApiClient, endpoint: str, port: int) -> None:
        """The Service kube-system/metrics-server without a selector, and its one EndpointSlice
        (written again at each start: the port changes), which the service proxy routes to."""
        labels = {"k8s-app": METRICS_SERVER}
        service = {
            "metadata": {"name": METRICS_SERVER, "namespace": METRICS_NAMESPACE, "labels": labels},
            "spec": {"ports": [{"name": "https", "port": 443, "protocol": "TCP"}]},
        }
        endpoint_slice = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": METRICS_SERVER,
                "namespace": METRICS_NAMESPACE,
                "labels": {
                    **labels,
                    "kubernetes.io/service-name": METRICS_SERVER,
                    "endpointslice.kubernetes.io/managed-by": "sandbox.cluster",
                },
            },
            "addressType": "IPv4",
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [endpoint], "conditions": {"ready": True}}],
        }
        core, discovery = client.CoreV1Api(api), client.DiscoveryV1Api(api)
        try:
            core.create_namespaced_service(METRICS_NAMESPACE, service)
        except ApiException as exc:
            if exc.status != 409:
                raise SandboxError(f"metrics-server: Service refused: {exc.status} {exc.reason}") from None
        with contextlib.suppress(ApiException):
            discovery.delete_namespaced_endpoint_slice(METRICS_SERVER, METRICS_NAMESPACE)
        try:
            discovery.create_namespaced_endpoint_slice(METRICS_NAMESPACE, endpoint_slice)
        except ApiException as exc:
            raise SandboxError(f"metrics-server: EndpointSlice refused: {exc.status} {exc.reason}") from None

    def _node_metrics(self) -> bool:
        """Whether GET /apis/metrics.k8s.io/v1beta1/nodes lists every node of the agent."""
        try:
            metrics = client.CustomObjectsApi(self.api()).list_cluster_custom_object(*METRICS_API, "nodes")
        except Exception:
            return False
        return len({item["metadata"]["name"] for item in metrics.get("items", [])}) >= self.nodes

    def _start_argo(self) -> None:
        binary = tool(ROLLOUTS)
        api = self.api()
        extensions = client.ApiextensionsV1Api(api)
        import yaml

        for crd in sorted((binary.parent / "crds").glob("*.yaml")):
            body = yaml.safe_load(crd.read_text())
            try:
                extensions.create_custom_resource_definition(body)
            except ApiException as exc:
                if exc.status != 409:
                    raise SandboxError(f"argo rollouts: CRD {crd.name} refused: {exc.reason}") from None
        if pid_from_file(self.dir / "argo.pid", ROLLOUTS) is None:
            self._spawn(
                "argo",
                [str(binary), "--kubeconfig", str(self.kubeconfig), "--leader-elect=false",
                 "--metricsport", "0", "--healthzPort", "0", "--loglevel", "info"],
            )  # fmt: skip
        custom = client.CustomObjectsApi(api)

        def served() -> bool:
            try:
                custom.list_cluster_custom_object("argoproj.io", "v1alpha1", "rollouts")
                return True
            except ApiException:
                return False

        self._wait("argo rollouts", "argo", served)

    def _nodes_ready(self) -> bool:
        try:
            nodes = client.CoreV1Api(self.api()).list_node().items
        except Exception:
            return False
        ready = [
            n for n in nodes
            if any(c.type == "Ready" and c.status == "True" for c in (n.status.conditions or []))
            and not any(t.key == "node.kubernetes.io/not-ready" for t in (n.spec.taints or []))
        ]  # fmt: skip
        return len(ready) >= self.nodes

    def _spawn(self, name: str, argv: list[str]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._procs[name] = spawn(argv, self.dir / f"{name}.log", cwd=Path(__file__).resolve().parent.parent)

    def _wait(self, what: str, name: str, ready: Callable[[], bool]) -> None:
        proc = self._procs.get(name)
        if proc is None:  # already running, started by another process: only readiness to wait for
            if not wait_for(ready, READY_TIMEOUT_S, 0.2):
                raise SandboxError(
                    f"kubernetes: {what} not ready within {READY_TIMEOUT_S:g} s (log: {self.dir / f'{name}.log'})"
                )
            return
        await_ready(what, proc, ready, READY_TIMEOUT_S, self.dir / f"{name}.log")


def _serves(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=1.0, verify=False).status_code == 200
    except httpx.HTTPError:
        return False


def pods_left(nodes_dir: Path) -> list[int]:
    """The processes of pods the node agent of ``nodes_dir`` started that still run (each leads
    its own process group)."""
    marker = f"{POD_OF}={nodes_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def leftovers() -> list[tuple[int, str]]:
    """(pid, command) of every process of a sandbox Kubernetes still running on this machine: the
    tools of ``make k8s-tools``, node agents, and the pods' processes (their own loopback host)."""
    tools = tool(ROLLOUTS).parent.parent  # the tools cache: one directory per tool and version
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        line = " ".join(a for a in argv if a)
        pod = "-m sandbox." in line and "--host 127." in line and "--host 127.0.0.1 " not in f"{line} "
        if argv[0].startswith(f"{tools}/") or f"-m {AGENT}" in line or pod:
            found.append((int(entry.name), line))
    return found


def stop_leftovers(progress: Progress = print) -> int:
    """SIGKILL every leftover (see ``leftovers``); how many there were."""
    found = leftovers()
    for pid, line in found:
        progress(f"stopping {pid}: {line[:160]}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    progress(f"{len(found)} leftover process(es) of sandbox Kubernetes stopped")
    return len(found)


if __name__ == "__main__":
    if sys.argv[1:] != ["--stop-leftovers"]:
        sys.exit("usage: python -m sandbox.cluster --stop-leftovers")
    stop_leftovers()
