"""The preflight gates of gates/test_05_kubernetes.py against the simulated cluster.

Each gate function is called as pytest would call it (with the environment, a connection and
a Checker), and what is asserted is the evidence line a person reads in the report.
"""

from __future__ import annotations

import importlib.util
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from k8s_cluster import NAMESPACE, Cluster

from releasegate.config import Environment
from releasegate.evidence import Checker, Evidence, GateFailure
from releasegate.probes.kubernetes import Kubernetes

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("gate_05_kubernetes", ROOT / "gates" / "test_05_kubernetes.py")
assert _spec and _spec.loader
gates = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gates)


def environment(cluster: Cluster, **kubernetes: Any) -> Environment:
    """A complete environment on the simulated cluster (the sections the gates do not read are minimal)."""
    settings = cluster.settings(**kubernetes).model_dump(exclude_none=True)
    return Environment.model_validate(
        {
            "environment": {"name": "production", "tier": "production", "service": "granter"},
            "platform": {"kind": "kubernetes", "url": "https://granter.example", "kubernetes": settings},
            "database": {"dsn": "postgresql://granter@db.internal:5432/granter_db"},
            "backup": {"databases": ["granter_db"], "dir": "/var/backups/granter"},
        }
    )


class Evidence_:
    def __init__(self) -> None:
        self.records: list[Evidence] = []
        self.check = Checker(self.records.append, "gates/test_05_kubernetes.py", "preflight", production=True)

    def lines(self) -> list[str]:
        return [r.line() for r in self.records]


@pytest.fixture
def evidence() -> Evidence_:
    return Evidence_()


def backend(cluster: Cluster, **deployment: Any) -> list[dict[str, Any]]:
    cluster.add_deployment("backend-core", "granter/backend-core:v1.9.0", **deployment)
    return [{"name": "backend-core", "container": "backend-core", "image": "granter/backend-core:v{release}"}]


def run_all(env: Environment, evidence: Evidence_) -> list[str]:
    """Every gate of the module, as pytest would run them; the names of those that failed."""
    kube = Kubernetes(env.platform.kubernetes)
    deployments = env.platform.kubernetes.deployments
    calls = {
        "nodes": lambda: gates.test_every_node_is_ready(kube, evidence.check),
        "usage": lambda: gates.test_node_cpu_and_memory_below_the_limits(kube, env, evidence.check),
        "room": lambda: gates.test_room_for_the_surge_pods(kube, deployments, evidence.check),
        "failing": lambda: gates.test_no_pod_of_the_release_is_failing(kube, deployments, evidence.check),
        "budgets": lambda: gates.test_disruption_budgets_allow_the_rollout(kube, deployments, evidence.check),
        "strategy": lambda: gates.test_rolling_update_strategy(kube, env, deployments, evidence.check),
    }
    failed = []
    for name, call in calls.items():
        try:
            call()
        except GateFailure:
            failed.append(name)
    return failed


def test_a_healthy_cluster_passes_every_gate_with_evidence(cluster, evidence):
    env = environment(cluster, deployments=backend(cluster))

    assert run_all(env, evidence) == []

    lines = evidence.lines()
    assert "nodes not Ready: 0 == 0: pass [GET /api/v1/nodes]" in lines
    assert (
        "node node-1 CPU: 25 % <= 70 %: pass - 1.00 of 4 cores [GET /apis/metrics.k8s.io/v1beta1/nodes]"
        in lines
    )
    assert (
        "node node-1 memory: 25 % <= 80 %: pass - 4.0 of 16.0 GiB [GET /apis/metrics.k8s.io/v1beta1/nodes]"
        in lines
    )
    assert any(
        line.startswith(
            "room for 1 surge pod(s) of backend-core: yes: pass - 1 surge pod(s) of 110m CPU / 144 MiB"
        )
        for line in lines
    )
    assert "PodDisruptionBudgets over the release's pods: none: info" in lines


def test_a_node_not_ready_fails_naming_it(cluster, evidence):
    cluster.core.patch_node_status(
        "node-2",
        {
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "KubeletNotReady",
                        "message": "PLEG is not healthy",
                    }
                ]
            }
        },
    )
    kube = Kubernetes(cluster.settings())

    with pytest.raises(GateFailure) as failure:
        gates.test_every_node_is_ready(kube, evidence.check)

    assert str(failure.value) == (
        "nodes not Ready: 1 == 0: fail - node-2: Ready=False (KubeletNotReady: PLEG is "
        "not healthy) [GET /api/v1/nodes]"
    )


def test_a_busy_node_fails_the_thresholds_of_the_environment(cluster, evidence):
    cluster.custom.patch_cluster_custom_object(
        "metrics.k8s.io", "v1beta1", "nodes", "node-3", {"usage": {"cpu": "3400m", "memory": "15Gi"}}
    )
    env = environment(cluster, preflight={"max_node_cpu_ratio": 0.7, "max_node_memory_ratio": 0.8})

    with pytest.raises(GateFailure) as failure:
        gates.test_node_cpu_and_memory_below_the_limits(
            Kubernetes(env.platform.kubernetes), env, evidence.check
        )

    assert str(failure.value).startswith("node node-3 CPU: 85 % <= 70 %: fail - 3.40 of 4 cores")


def test_no_metrics_api_is_no_data_and_fails(tmp_path, evidence):
    cluster = Cluster(tmp_path)
    try:
        cluster.add_nodes(2, usage=None)
        env = environment(cluster)
        with pytest.raises(GateFailure) as failure:
            gates.test_node_cpu_and_memory_below_the_limits(
                Kubernetes(env.platform.kubernetes), env, evidence.check
            )
    finally:
        cluster.close()
    assert str(failure.value).startswith(
        "node metrics: no data: no data - 404 Not Found: list nodes.metrics.k8s.io (cluster-wide)"
    )


def test_no_room_for_the_surge_pod_fails(tmp_path, evidence):
    cluster = Cluster(tmp_path)
    try:
        cluster.add_nodes(2, cpu="1", memory="2Gi")
        deployments = backend(cluster, replicas=4, requests=("400m", "512Mi"))
        with pytest.raises(GateFailure) as failure:
            gates.test_room_for_the_surge_pods(
                Kubernetes(cluster.settings(deployments)),
                cluster.settings(deployments).deployments,
                evidence.check,
            )
    finally:
        cluster.close()
    assert str(failure.value).startswith(
        "room for 1 surge pod(s) of backend-core: no: fail - 1 surge pod(s) of 410m CPU / 528 MiB; "
        "0 fit on 2 schedulable node(s); the roomiest has 180m / 992 MiB free"
    )


def test_a_crash_looping_pod_fails_preflight(cluster, evidence):
    cluster.behave("granter/backend-core:v1.9.0", fault="CrashLoopBackOff", fault_after_s=0.05)
    deployments = backend(cluster, wait=False)
    cluster.sim.settle(
        lambda: (
            cluster.pods("backend-core")
            and all(
                p.status.container_statuses
                and p.status.container_statuses[1].state.waiting
                and p.status.container_statuses[1].state.waiting.reason == "CrashLoopBackOff"
                for p in cluster.pods("backend-core")
            )
        )
    )
    settings = cluster.settings(deployments)

    with pytest.raises(GateFailure) as failure:
        gates.test_no_pod_of_the_release_is_failing(
            Kubernetes(settings), settings.deployments, evidence.check
        )

    assert "pods failing (CrashLoopBackOff, ImagePullBackOff, OOMKilled ...): 3 == 0: fail" in str(
        failure.value
    )
    assert "deployment backend-core: pod backend-core-" in str(failure.value)
    assert "container backend-core: CrashLoopBackOff" in str(failure.value)


def test_a_disruption_budget_at_its_minimum_blocks_a_rollout_that_takes_pods_down(cluster, evidence):
    deployments = backend(cluster)
    deployments[0]["max_unavailable"] = 1
    cluster.policy.create_namespaced_pod_disruption_budget(
        NAMESPACE,
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "backend-core-pdb", "namespace": NAMESPACE},
            "spec": {"minAvailable": 3, "selector": {"matchLabels": {"app": "backend-core"}}},
            "status": {"disruptionsAllowed": 0, "currentHealthy": 3, "desiredHealthy": 3, "expectedPods": 3},
        },
    )
    settings = cluster.settings(deployments)

    with pytest.raises(GateFailure) as failure:
        gates.test_disruption_budgets_allow_the_rollout(
            Kubernetes(settings), settings.deployments, evidence.check
        )

    assert str(failure.value) == (
        "PodDisruptionBudget backend-core-pdb allows the rollout of backend-core: no: fail - PodDisruptionBudget "
        "backend-core-pdb over backend-core: 0 disruption(s) allowed, 3/3 healthy; the rollout takes down 1 at a "
        "time [policy/v1 poddisruptionbudgets]"
    )
    deployments[0]["max_unavailable"] = 0  # surge only: the budget is never touched
    settings = cluster.settings(deployments)
    gates.test_disruption_budgets_allow_the_rollout(
        Kubernetes(settings), settings.deployments, evidence.check
    )


def test_a_strategy_that_differs_from_the_environment_fails_unless_it_is_enforced(cluster, evidence):
    deployments = backend(
        cluster,
        strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
    )
    env = environment(cluster, deployments=deployments)
    kube = Kubernetes(env.platform.kubernetes)

    with pytest.raises(GateFailure) as failure:
        gates.test_rolling_update_strategy(kube, env, env.platform.kubernetes.deployments, evidence.check)
    assert (
        "uses RollingUpdate maxSurge 25%, maxUnavailable 25%; the environment expects RollingUpdate maxSurge 1, "
        "maxUnavailable 0" in str(failure.value)
    )

    deployments[0]["enforce_strategy"] = True
    env = environment(cluster, deployments=deployments)
    gates.test_rolling_update_strategy(kube, env, env.platform.kubernetes.deployments, evidence.check)
    assert evidence.records[-1].detail == "enforce_strategy: set before the rollout"


def test_helm_missing_is_one_line(cluster, evidence, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no helm anywhere on PATH
    env = environment(cluster, helm={"release": "summit", "chart": "./charts/summit"})

    with pytest.raises(GateFailure) as failure:
        gates.test_helm_is_installed(env, evidence.check)

    assert str(failure.value) == (
        "helm version: no data: fail - helm: 'helm' not found on PATH (install Helm 3 or "
        "set platform.kubernetes.helm.binary) [helm version --short]"
    )

    helm = tmp_path / "helm"
    helm.write_text("#!/bin/sh\necho v3.15.2+gc4e37b3\n")
    helm.chmod(helm.stat().st_mode | stat.S_IEXEC)
    assert os.access(helm, os.X_OK)
    gates.test_helm_is_installed(env, evidence.check)
    assert evidence.lines()[-1] == "helm version: v3.15.2+gc4e37b3: pass [helm version --short]"
