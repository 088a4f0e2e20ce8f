"""The sandbox's Kubernetes: the control plane (sandbox.control_plane), the node agent with its
service proxy (sandbox.kubelet) and the Argo Rollouts controller with its CRDs, all on loopback
in one directory, all stopped by ``stop``.

``python -m sandbox up --kubernetes`` starts one beside the sandbox; tests start their own
(tests/k8s/real_cluster.py). The kubeconfig it writes (``<dir>/kubeconfig``) is what helm,
kubectl and releasegate's ``platform.kubernetes.kubeconfig`` use.
"""

from __future__ import annotations

import signal
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
from sandbox.control_plane import ControlPlane, tool
from sandbox.images import DEFAULT as DEFAULT_CATALOG

AGENT = "sandbox.kubelet"
ROLLOUTS = "rollouts-controller"
READY_TIMEOUT_S = 60.0


class Cluster:
    """A control plane, ``nodes`` nodes and, with ``argo``, the Argo Rollouts controller."""

    def __init__(self, directory: Path, *, nodes: int = 2, argo: bool = True, catalog: Path = DEFAULT_CATALOG,
                 backoff_s: float = 1.0) -> None:  # fmt: skip
        self.dir = directory
        self.control_plane = ControlPlane(directory)
        self.kubeconfig = self.control_plane.kubeconfig
        self.nodes = nodes
        self.argo = argo
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
        if self.argo:
            self._start_argo()
            progress("kubernetes  Argo Rollouts controller and CRDs")
        return f"up in {time.monotonic() - started:.1f} s: {self.control_plane.url}, kubeconfig {self.kubeconfig}"

    def stop(self, progress: Progress = print) -> str:
        """The controllers first, then the agent (its containers stop with it), then the control plane."""
        for name, needle in (("argo", ROLLOUTS), ("agent", AGENT)):
            pid = pid_from_file(self.dir / f"{name}.pid", needle)
            if pid is not None:
                stop_pid(pid, needle, signal.SIGTERM, 30.0)
            (self.dir / f"{name}.pid").unlink(missing_ok=True)
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
        return rows

    # -- helpers -----------------------------------------------------------------------------------

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
