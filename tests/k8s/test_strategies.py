"""Blue-green and canary by replicas on a real control plane (Summit's and Release Manager's
runbooks): the selector switch and the replica ratio, and the traffic that follows them through
the Service's real EndpointSlices."""

from __future__ import annotations

import pytest
from real_cluster import Cluster
from test_node_agent import serving

from releasegate.errors import ActionError
from releasegate.platforms.kubernetes import KubernetesPlatform


def summit(name: str) -> dict[str, str]:
    return {"name": name, "container": "summit-server", "image": "ghcr.io/summit/server:v{release}"}


def blue_green(kube: Cluster, **section) -> KubernetesPlatform:
    """summit-blue serves 4.0.0 through service summit-server; summit-green is idle at 0 pods."""
    kube.add_deployment(
        "summit-blue",
        "ghcr.io/summit/server:v4.0.0",
        container="summit-server",
        labels={"app": "summit", "version": "blue"},
    )
    kube.add_deployment(
        "summit-green",
        "ghcr.io/summit/server:v4.0.0",
        container="summit-server",
        labels={"app": "summit", "version": "green"},
        replicas=0,
    )
    kube.add_service("summit-server", {"app": "summit", "version": "blue"})
    settings = kube.settings(
        [summit("summit-blue"), summit("summit-green")],
        strategy="blue-green",
        blue_green={"service": "summit-server", "blue": "summit-blue", "green": "summit-green", **section},
    )
    return KubernetesPlatform(settings, "https://summit.example")


def service_url(kube: Cluster, name: str = "summit-server") -> str:
    """The Service's ClusterIP, where the node agent's service proxy answers for it."""
    return f"http://{kube.core.read_namespaced_service(name, kube.namespace).spec.cluster_ip}"


def service_selector(kube: Cluster) -> dict[str, str]:
    return kube.core.read_namespaced_service("summit-server", kube.namespace).spec.selector


def test_blue_green_switches_the_service_to_the_new_color_and_back(kube):
    platform = blue_green(kube)
    assert platform.current_release() == "4.0.0"

    result = platform.deploy("4.0.1")

    assert result.ok, result.reason
    assert service_selector(kube) == {"app": "summit", "version": "green"}, "only the version key changed"
    assert kube.image("summit-green", "summit-server") == "ghcr.io/summit/server:v4.0.1"
    assert len(kube.pods("summit-green")) == 3
    assert kube.image("summit-blue", "summit-server") == "ghcr.io/summit/server:v4.0.0"
    assert len(kube.pods("summit-blue")) == 3, "the old color keeps running: switching back is instant"
    status = platform.status()
    assert status.release == "4.0.1" and status.previous_release == "4.0.0"
    assert status.releases_serving == {"4.0.1"} and len(status.in_service) == 3
    assert any("kubectl patch service summit-server selector version=green" in e for e in result.events)
    kube.settle(lambda: serving(service_url(kube)) == {"v4.0.1"}, "the Service's traffic goes to green")

    back = platform.rollback()

    assert back.ok, back.reason
    assert service_selector(kube) == {"app": "summit", "version": "blue"}
    kube.settle(lambda: serving(service_url(kube)) == {"v4.0.0"}, "the traffic is back on blue")
    assert platform.current_release() == "4.0.0" and back.release == "4.0.0"
    assert platform.status().releases_serving == {"4.0.0"}


def test_blue_green_in_the_gates_steps_green_beside_blue_then_the_switch_and_back(kube):
    """What gates/test_30_deploy.py does with blue-green: start green, ask it before any
    traffic (the preview URL), switch, and the rollback's switch back; then retire blue."""
    platform = blue_green(kube, preview_url="http://summit-preview.internal")

    started = platform.start_green("4.0.1")

    assert started.ok, started.reason
    assert service_selector(kube)["version"] == "blue", "green takes no traffic yet"
    assert [(i.release, i.url) for i in platform.green_instances()] == [
        ("4.0.1", "http://summit-preview.internal")
    ]
    switched = platform.switch_traffic("green")
    assert switched.ok, switched.reason
    assert service_selector(kube)["version"] == "green" and platform.current_release() == "4.0.1"
    assert platform.switch_traffic("blue").ok
    assert platform.current_release() == "4.0.0"
    platform.switch_traffic("green")
    retired = platform.retire()
    assert retired.ok and len(kube.pods("summit-blue")) == 3, "kept: scale_down_previous is off"


def test_blue_green_never_switches_to_a_color_that_fails(kube):
    platform = blue_green(kube)
    kube.behave("ghcr.io/summit/server:v4.0.1", fault="CrashLoopBackOff")

    result = platform.deploy("4.0.1")

    assert not result.ok and "CrashLoopBackOff" in result.reason
    assert service_selector(kube)["version"] == "blue"
    assert serving(service_url(kube)) == {"v4.0.0"}
    assert platform.status().releases_serving == {"4.0.0"}


def test_blue_green_on_the_release_label_as_the_ga_runbook_patches_it(kube):
    """GA 8.1: kubectl patch service summit-server -p '{"spec":{"selector":{"version":"v4.0.0"}}}'.

    Each color's Deployment selects on its color alone (a selector is immutable), its pods also
    carry the release they run in ``version``, which the Service selects on."""
    kube.add_deployment(
        "summit-blue",
        "ghcr.io/summit/server:v4.0.0",
        container="summit-server",
        labels={"app": "summit", "color": "blue", "version": "4.0.0"},
        selector={"app": "summit", "color": "blue"},
    )
    kube.add_deployment(
        "summit-green",
        "ghcr.io/summit/server:v3.9.0",
        container="summit-server",
        labels={"app": "summit", "color": "green", "version": "3.9.0"},
        selector={"app": "summit", "color": "green"},
        replicas=0,
    )
    kube.add_service("summit-server", {"app": "summit", "version": "4.0.0"})
    settings = kube.settings(
        [summit("summit-blue"), summit("summit-green")],
        strategy="blue-green",
        blue_green={
            "service": "summit-server",
            "blue": "summit-blue",
            "green": "summit-green",
            "selector_value": "release",
        },
    )
    platform = KubernetesPlatform(settings, "https://summit.example")

    assert platform.deploy("4.0.1").ok

    assert service_selector(kube) == {"app": "summit", "version": "4.0.1"}
    assert platform.status().releases_serving == {"4.0.1"}


def canary(kube: Cluster, steps: list[int]) -> KubernetesPlatform:
    """release-manager-prod (stable, 4 pods) and release-manager-canary (0 pods) behind one Service."""
    kube.add_deployment(
        "release-manager-prod",
        "release-manager:prod-aaa",
        replicas=4,
        container="release-manager",
        labels={"app": "release-manager", "track": "stable"},
    )
    kube.add_deployment(
        "release-manager-canary",
        "release-manager:prod-aaa",
        replicas=0,
        container="release-manager",
        labels={"app": "release-manager", "track": "canary"},
    )
    kube.add_service("release-manager", {"app": "release-manager"})
    specs = [
        {"name": n, "container": "release-manager", "image": "release-manager:prod-{release}"}
        for n in ("release-manager-prod", "release-manager-canary")
    ]
    settings = kube.settings(
        specs,
        strategy="canary",
        canary={"stable": "release-manager-prod", "canary": "release-manager-canary", "steps": steps},
    )
    return KubernetesPlatform(settings, "https://api.internal")


def tracks(kube: Cluster) -> dict[str, int]:
    return {name: len(kube.pods(name)) for name in ("release-manager-prod", "release-manager-canary")}


def test_canary_by_replica_ratio_step_by_step_then_promoted(kube):
    """What the metrics gates do between steps: start, weight, look, weight, look, promote."""
    platform = canary(kube, steps=[10, 50, 100])
    platform.start_canary("bbb")

    assert platform.set_canary_weight(10) == 25.0  # 10 % of 4 pods is 1 pod: 25 %
    assert tracks(kube) == {"release-manager-prod": 3, "release-manager-canary": 1}
    assert platform.set_canary_weight(50) == 50.0
    assert tracks(kube) == {"release-manager-prod": 2, "release-manager-canary": 2}
    releases = sorted(i.release for i in platform.status().instances)
    assert releases == ["aaa", "aaa", "bbb", "bbb"]
    url = service_url(kube, "release-manager")
    kube.settle(
        lambda: serving(url, 12) == {"prod-aaa", "prod-bbb"}, "both tracks take the Service's traffic"
    )

    platform.promote()

    assert tracks(kube) == {"release-manager-prod": 4, "release-manager-canary": 0}
    assert platform.current_release() == "bbb"
    assert platform.status().releases_serving == {"bbb"}
    kube.settle(lambda: serving(url, 12) == {"prod-bbb"}, "only the promoted release answers")


def test_canary_at_100_percent_runs_on_every_pod_stable_had(kube):
    """Capacity follows the weight: at 100 % the canary has all the pods, never fewer than stable
    had, even when the recorded total is gone or stable was scaled up meanwhile (an HPA)."""
    platform = canary(kube, steps=[10, 50, 100])
    platform.start_canary("bbb")
    assert platform.set_canary_weight(50) == 50.0
    assert tracks(kube) == {"release-manager-prod": 2, "release-manager-canary": 2}
    kube.apps.patch_namespaced_deployment(  # kubectl annotate ... releasegate.dev/canary-total-
        "release-manager-prod",
        kube.namespace,
        {"metadata": {"annotations": {"releasegate.dev/canary-total": None}}},
    )

    assert platform.set_canary_weight(100) == 100.0

    assert tracks(kube) == {"release-manager-prod": 0, "release-manager-canary": 4}


def test_canary_at_100_percent_has_as_many_pods_as_stable_was_scaled_up_to(kube):
    platform = canary(kube, steps=[50, 100])
    platform.start_canary("bbb")
    assert platform.set_canary_weight(50) == 50.0
    kube.apps.patch_namespaced_deployment_scale(  # an HPA scales stable up during the canary
        "release-manager-prod", kube.namespace, {"spec": {"replicas": 5}}
    )

    assert platform.set_canary_weight(100) == 100.0

    assert tracks(kube) == {"release-manager-prod": 0, "release-manager-canary": 5}


def test_canary_deploy_walks_the_steps_and_abort_returns_every_pod_to_stable(kube):
    platform = canary(kube, steps=[25, 50])
    result = platform.deploy("bbb")
    assert result.ok, result.reason
    weights = [e for e in result.events if e.startswith("canary weight")]
    assert weights == [
        "canary weight 25 % asked: 1 of 4 pod(s) run the canary (25 %)",
        "canary weight 50 % asked: 2 of 4 pod(s) run the canary (50 %)",
    ]
    assert tracks(kube) == {"release-manager-prod": 4, "release-manager-canary": 0}

    kube.behave("release-manager:prod-ccc", logs=("ERROR cache unavailable",))
    failed = platform.deploy("ccc")
    assert not failed.ok and "ERROR cache unavailable" in failed.reason
    assert tracks(kube)["release-manager-canary"] == 1, "stopped at the first step"

    back = platform.rollback()
    assert back.ok, back.reason
    assert tracks(kube) == {"release-manager-prod": 4, "release-manager-canary": 0}
    assert platform.status().releases_serving == {"bbb"}


def test_canary_methods_refuse_another_strategy(kube):
    kube.add_deployment("backend-core", "granter/backend-core:v1.9.0")
    platform = KubernetesPlatform(
        kube.settings(
            [
                {
                    "name": "backend-core",
                    "container": "backend-core",
                    "image": "granter/backend-core:v{release}",
                }
            ]
        ),
        "http://x",
    )
    with pytest.raises(ActionError, match="strategy is 'rolling', not ReplicaCanary"):
        platform.set_canary_weight(10)
