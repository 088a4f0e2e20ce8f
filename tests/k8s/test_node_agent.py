"""The sandbox's node agent on a real control plane: what the rollout tests stand on.

Pods scheduled by the real scheduler run as processes; their status, logs and Service routing
are what a kubelet and kube-proxy would give (sandbox/kubelet.py, sandbox/service_proxy.py).
"""

from __future__ import annotations

import httpx
from real_cluster import Cluster


def serving(url: str, count: int = 6) -> set[str]:
    """The versions answering ``count`` new connections to ``url``."""
    versions = set()
    for _ in range(count):
        try:
            versions.add(httpx.get(f"{url}/health", timeout=2).json()["version"])
        except httpx.HTTPError as exc:
            versions.add(f"error: {exc!r}")
    return versions


def test_a_selector_switch_moves_the_service_to_the_other_color(kube: Cluster):
    kube.add_deployment(
        "web-blue", "granter/web-frontend:v1.9.0", replicas=2, labels={"app": "web", "color": "blue"}
    )
    kube.add_deployment(
        "web-green", "granter/web-frontend:v2.0.0", replicas=2, labels={"app": "web", "color": "green"}
    )
    ip = kube.add_service("web", {"app": "web", "color": "blue"})
    kube.settle(lambda: serving(f"http://{ip}") == {"v1.9.0"}, "the Service answers from blue")

    kube.core.patch_namespaced_service(
        "web", kube.namespace, {"spec": {"selector": {"app": "web", "color": "green"}}}
    )

    kube.settle(lambda: serving(f"http://{ip}") == {"v2.0.0"}, "the Service answers from green", timeout_s=20)


def test_a_pod_that_is_not_ready_gets_no_traffic(kube: Cluster):
    kube.behave("granter/web-frontend:v2.0.0", fault="NeverReady")
    kube.add_deployment("web-ok", "granter/web-frontend:v1.9.0", replicas=1, labels={"app": "web", "v": "1"})
    kube.add_deployment(
        "web-bad", "granter/web-frontend:v2.0.0", replicas=1, labels={"app": "web", "v": "2"}, wait=False
    )
    ip = kube.add_service("web", {"app": "web"})
    kube.settle(
        lambda: len(kube.pods("web-bad")) == 1 and kube.pods("web-bad")[0].status.pod_ip, "the bad pod runs"
    )

    kube.settle(lambda: serving(f"http://{ip}") == {"v1.9.0"}, "only the ready pod answers")
    assert not kube.pods("web-bad")[0].status.container_statuses[1].ready


def test_the_logs_of_this_run_and_the_last_are_served_through_the_api(kube: Cluster):
    kube.behave("granter/backend-core:v2.0.0", restarts=1, logs=("ERROR the first run's line",))
    kube.add_deployment("backend-core", "granter/backend-core:v2.0.0", replicas=1, wait=False)

    def restarted_and_ready() -> bool:
        pods = kube.pods("backend-core")
        statuses = (pods[0].status.container_statuses or []) if pods else []
        return len(statuses) == 2 and statuses[1].restart_count == 1 and statuses[1].ready

    kube.settle(restarted_and_ready, "the pod restarted once and serves")
    pod = kube.pods("backend-core")[0]

    current = kube.core.read_namespaced_pod_log(pod.metadata.name, kube.namespace, container="backend-core")
    previous = kube.core.read_namespaced_pod_log(
        pod.metadata.name, kube.namespace, container="backend-core", previous=True
    )

    assert pod.status.container_statuses[1].restart_count == 1
    assert pod.status.container_statuses[1].last_state.terminated.exit_code == 1
    assert "ERROR the first run's line" in previous and "serving on" in previous
    assert "serving on" in current
    tail = kube.core.read_namespaced_pod_log(
        pod.metadata.name, kube.namespace, container="backend-core", tail_lines=1
    )
    assert tail.count("\n") == 1


def test_an_image_missing_from_the_registry_backs_off_and_runs_once_pushed(kube: Cluster):
    kube.behave("granter/backend-core:v3.0.0", fault="ImagePullBackOff")
    kube.add_deployment("backend-core", "granter/backend-core:v3.0.0", replicas=1, wait=False)

    def waiting_reason() -> str | None:
        pods = kube.pods("backend-core")
        statuses = pods[0].status.container_statuses if pods and pods[0].status else None
        state = statuses[1].state if statuses else None
        return state.waiting.reason if state and state.waiting else None

    kube.settle(lambda: waiting_reason() == "ImagePullBackOff", "ImagePullBackOff after ErrImagePull")
    assert kube.pods("backend-core")[0].status.phase == "Pending"

    kube.push("granter/backend-core:v3.0.0")

    kube.settle(lambda: kube.rolled_out("backend-core"), "the pod runs once the image is there")
