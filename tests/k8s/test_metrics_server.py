"""metrics.k8s.io on the real control plane: metrics-server behind the API server's aggregation
layer, scraping the node agent's /metrics/resource (sandbox/cluster.py, sandbox/kubelet.py).

What ``kubectl top`` and releasegate's preflight read: each node's CPU and memory (the machine's,
as every node of the agent is the machine) and each running pod's containers (their processes').
The session's start already waited for every node's metrics; a new pod's need two scrapes, 10 s
apart.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.rest import ApiException
from real_cluster import Cluster

from releasegate.probes.kubernetes import Kubernetes, node_usage
from releasegate.probes.kubernetes_objects import quantity

pytestmark = pytest.mark.cluster(metrics=True)

METRICS = ("metrics.k8s.io", "v1beta1")


def machine_memory() -> tuple[float, float]:
    """(total, in use) bytes of this machine, as the node agent reports a node's."""
    info = {
        line.split(":")[0]: float(line.split()[1]) * 1024
        for line in Path("/proc/meminfo").read_text().splitlines()
    }
    return info["MemTotal"], info["MemTotal"] - info["MemAvailable"]


def vm_rss(pid: int) -> float:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmRSS:"))
    return float(line.split()[1]) * 1024


def test_every_node_has_cpu_and_memory_usage(kube: Cluster):
    nodes = {n.metadata.name for n in kube.core.list_node().items}

    listed = kube.custom.list_cluster_custom_object(*METRICS, "nodes")

    usage = {item["metadata"]["name"]: item["usage"] for item in listed["items"]}
    assert set(usage) == nodes
    for name, figures in usage.items():
        assert 0 < quantity(figures["cpu"]) <= (os.cpu_count() or 1) * 1.05, name
        assert 0 < quantity(figures["memory"]) < machine_memory()[0], name


def test_a_running_pod_has_its_containers_metrics(kube: Cluster):
    kube.add_deployment("backend-core", "granter/backend-core:v1.0.0", replicas=1)
    pod = kube.pods("backend-core")[0]

    def pod_metrics() -> dict[str, Any] | None:
        try:
            return kube.custom.get_namespaced_custom_object(
                *METRICS, kube.namespace, "pods", pod.metadata.name
            )
        except ApiException:
            return None

    kube.settle(lambda: pod_metrics() is not None, "the pod's metrics (two scrapes)", timeout_s=45)

    usage = {c["name"]: c["usage"] for c in pod_metrics()["containers"]}  # type: ignore[index]
    assert set(usage) == {"log-shipper", "backend-core"}
    assert all(quantity(u["cpu"]) >= 0 for u in usage.values())
    status = next(s for s in pod.status.container_statuses if s.name == "backend-core")
    rss = vm_rss(int(status.container_id.removeprefix("sandbox://")))  # the container's process
    assert 0.5 * rss < quantity(usage["backend-core"]["memory"]) < 2 * rss
    assert 0 < quantity(usage["log-shipper"]["memory"]) < quantity(usage["backend-core"]["memory"])


def test_the_preflight_node_usage_probe_reads_every_node(kube: Cluster):
    kubernetes = Kubernetes(kube.settings())
    try:
        usage = node_usage(kubernetes)
    finally:
        kubernetes.close()

    assert {u.name for u in usage} == {n.metadata.name for n in kube.core.list_node().items}
    total, in_use = machine_memory()
    for node in usage:
        assert (node.cpu_allocatable, node.memory_allocatable) == (os.cpu_count(), total)
        assert 0 < node.cpu_ratio <= 1.05, node  # a rate over a 10 s window: a little jitter
        # what runs on the node (its pods, its share of the agent), a part of what the machine uses
        assert 0 < node.memory_ratio < in_use / total + 0.02, node
