"""Blue-green, canary by replicas and Argo Rollouts on the simulated cluster (Summit's runbooks)."""

from __future__ import annotations

import pytest
from k8s_cluster import NAMESPACE, Cluster

from releasegate.errors import ActionError
from releasegate.platforms.kubernetes import KubernetesPlatform


def summit(name: str) -> dict[str, str]:
    return {"name": name, "container": "summit-server", "image": "ghcr.io/summit/server:v{release}"}


def blue_green(cluster: Cluster, **section) -> KubernetesPlatform:
    """summit-blue serves 4.0.0 through service summit-server; summit-green is idle at 0 pods."""
    cluster.add_deployment(
        "summit-blue",
        "ghcr.io/summit/server:v4.0.0",
        container="summit-server",
        labels={"app": "summit", "version": "blue"},
    )
    cluster.add_deployment(
        "summit-green",
        "ghcr.io/summit/server:v4.0.0",
        container="summit-server",
        labels={"app": "summit", "version": "green"},
        replicas=0,
    )
    cluster.add_service("summit-server", {"app": "summit", "version": "blue"})
    settings = cluster.settings(
        [summit("summit-blue"), summit("summit-green")],
        strategy="blue-green",
        blue_green={"service": "summit-server", "blue": "summit-blue", "green": "summit-green", **section},
    )
    return KubernetesPlatform(settings, "https://summit.example")


def service_selector(cluster: Cluster) -> dict[str, str]:
    return cluster.core.read_namespaced_service("summit-server", NAMESPACE).spec.selector


def test_blue_green_switches_the_service_to_the_new_color_and_back(cluster):
    platform = blue_green(cluster)
    assert platform.current_release() == "4.0.0"

    result = platform.deploy("4.0.1")

    assert result.ok, result.reason
    assert service_selector(cluster) == {"app": "summit", "version": "green"}, "only the version key changed"
    assert cluster.image("summit-green", "summit-server") == "ghcr.io/summit/server:v4.0.1"
    assert len(cluster.pods("summit-green")) == 3
    assert cluster.image("summit-blue", "summit-server") == "ghcr.io/summit/server:v4.0.0"
    assert len(cluster.pods("summit-blue")) == 3, "the old color keeps running: switching back is instant"
    status = platform.status()
    assert status.release == "4.0.1" and status.previous_release == "4.0.0"
    assert status.releases_serving == {"4.0.1"} and len(status.in_service) == 3
    assert any("kubectl patch service summit-server selector version=green" in e for e in result.events)

    back = platform.rollback()

    assert back.ok, back.reason
    assert service_selector(cluster) == {"app": "summit", "version": "blue"}
    assert platform.current_release() == "4.0.0" and back.release == "4.0.0"
    assert platform.status().releases_serving == {"4.0.0"}


def test_blue_green_in_the_gates_steps_green_beside_blue_then_the_switch_and_back(cluster):
    """What gates/test_30_deploy.py does with blue-green: start green, ask it before any
    traffic (the preview URL), switch, and the rollback's switch back; then retire blue."""
    platform = blue_green(cluster, preview_url="http://summit-preview.internal")

    started = platform.start_green("4.0.1")

    assert started.ok, started.reason
    assert service_selector(cluster)["version"] == "blue", "green takes no traffic yet"
    assert [(i.release, i.url) for i in platform.green_instances()] == [
        ("4.0.1", "http://summit-preview.internal")
    ]
    switched = platform.switch_traffic("green")
    assert switched.ok, switched.reason
    assert service_selector(cluster)["version"] == "green" and platform.current_release() == "4.0.1"
    assert platform.switch_traffic("blue").ok
    assert platform.current_release() == "4.0.0"
    platform.switch_traffic("green")
    retired = platform.retire()
    assert retired.ok and len(cluster.pods("summit-blue")) == 3, "kept: scale_down_previous is off"


def test_blue_green_never_switches_to_a_color_that_fails(cluster):
    platform = blue_green(cluster)
    cluster.behave("ghcr.io/summit/server:v4.0.1", fault="CrashLoopBackOff")

    result = platform.deploy("4.0.1")

    assert not result.ok and "CrashLoopBackOff" in result.reason
    assert service_selector(cluster)["version"] == "blue"
    assert platform.status().releases_serving == {"4.0.0"}


def test_blue_green_on_the_release_label_as_the_ga_runbook_patches_it(cluster):
    """GA 8.1: kubectl patch service summit-server -p '{"spec":{"selector":{"version":"v4.0.0"}}}'."""
    cluster.add_deployment(
        "summit-blue",
        "ghcr.io/summit/server:v4.0.0",
        container="summit-server",
        labels={"app": "summit", "color": "blue", "version": "4.0.0"},
    )
    cluster.add_deployment(
        "summit-green",
        "ghcr.io/summit/server:v3.9.0",
        container="summit-server",
        labels={"app": "summit", "color": "green", "version": "3.9.0"},
        replicas=0,
    )
    cluster.apps.patch_namespaced_deployment(
        "summit-blue",
        NAMESPACE,
        [
            {
                "op": "replace",
                "path": "/spec/selector",
                "value": {"matchLabels": {"app": "summit", "color": "blue"}},
            }
        ],
    )
    cluster.apps.patch_namespaced_deployment(
        "summit-green",
        NAMESPACE,
        [
            {
                "op": "replace",
                "path": "/spec/selector",
                "value": {"matchLabels": {"app": "summit", "color": "green"}},
            }
        ],
    )
    cluster.sim.settle(lambda: cluster.rolled_out("summit-blue"))
    cluster.add_service("summit-server", {"app": "summit", "version": "4.0.0"})
    settings = cluster.settings(
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

    assert service_selector(cluster) == {"app": "summit", "version": "4.0.1"}
    assert platform.status().releases_serving == {"4.0.1"}


def canary(cluster: Cluster, steps: list[int]) -> KubernetesPlatform:
    """release-manager-prod (stable, 4 pods) and release-manager-canary (0 pods) behind one Service."""
    cluster.add_deployment(
        "release-manager-prod",
        "release-manager:prod-aaa",
        replicas=4,
        container="release-manager",
        labels={"app": "release-manager", "track": "stable"},
    )
    cluster.add_deployment(
        "release-manager-canary",
        "release-manager:prod-aaa",
        replicas=0,
        container="release-manager",
        labels={"app": "release-manager", "track": "canary"},
    )
    specs = [
        {"name": n, "container": "release-manager", "image": "release-manager:prod-{release}"}
        for n in ("release-manager-prod", "release-manager-canary")
    ]
    settings = cluster.settings(
        specs,
        strategy="canary",
        canary={"stable": "release-manager-prod", "canary": "release-manager-canary", "steps": steps},
    )
    return KubernetesPlatform(settings, "https://api.internal")


def tracks(cluster: Cluster) -> dict[str, int]:
    return {name: len(cluster.pods(name)) for name in ("release-manager-prod", "release-manager-canary")}


def test_canary_by_replica_ratio_step_by_step_then_promoted(cluster):
    """What the metrics gates do between steps: start, weight, look, weight, look, promote."""
    platform = canary(cluster, steps=[10, 50, 100])
    platform.start_canary("bbb")

    assert platform.set_canary_weight(10) == 25.0  # 10 % of 4 pods is 1 pod: 25 %
    assert tracks(cluster) == {"release-manager-prod": 3, "release-manager-canary": 1}
    assert platform.set_canary_weight(50) == 50.0
    assert tracks(cluster) == {"release-manager-prod": 2, "release-manager-canary": 2}
    releases = sorted(i.release for i in platform.status().instances)
    assert releases == ["aaa", "aaa", "bbb", "bbb"]

    platform.promote()

    assert tracks(cluster) == {"release-manager-prod": 4, "release-manager-canary": 0}
    assert platform.current_release() == "bbb"
    assert platform.status().releases_serving == {"bbb"}


def test_canary_at_100_percent_runs_on_every_pod_stable_had(cluster):
    """Capacity follows the weight: at 100 % the canary has all the pods, never fewer than stable
    had, even when the recorded total is gone or stable was scaled up meanwhile (an HPA)."""
    platform = canary(cluster, steps=[10, 50, 100])
    platform.start_canary("bbb")
    assert platform.set_canary_weight(50) == 50.0
    assert tracks(cluster) == {"release-manager-prod": 2, "release-manager-canary": 2}
    cluster.apps.patch_namespaced_deployment(  # kubectl annotate ... releasegate.dev/canary-total-
        "release-manager-prod",
        NAMESPACE,
        {"metadata": {"annotations": {"releasegate.dev/canary-total": None}}},
    )

    assert platform.set_canary_weight(100) == 100.0

    assert tracks(cluster) == {"release-manager-prod": 0, "release-manager-canary": 4}


def test_canary_at_100_percent_has_as_many_pods_as_stable_was_scaled_up_to(cluster):
    platform = canary(cluster, steps=[50, 100])
    platform.start_canary("bbb")
    assert platform.set_canary_weight(50) == 50.0
    cluster.apps.patch_namespaced_deployment_scale(  # an HPA scales stable up during the canary
        "release-manager-prod", NAMESPACE, {"spec": {"replicas": 5}}
    )

    assert platform.set_canary_weight(100) == 100.0

    assert tracks(cluster) == {"release-manager-prod": 0, "release-manager-canary": 5}


def test_canary_deploy_walks_the_steps_and_abort_returns_every_pod_to_stable(cluster):
    platform = canary(cluster, steps=[25, 50])
    result = platform.deploy("bbb")
    assert result.ok, result.reason
    weights = [e for e in result.events if e.startswith("canary weight")]
    assert weights == [
        "canary weight 25 % asked: 1 of 4 pod(s) run the canary (25 %)",
        "canary weight 50 % asked: 2 of 4 pod(s) run the canary (50 %)",
    ]
    assert tracks(cluster) == {"release-manager-prod": 4, "release-manager-canary": 0}

    cluster.behave("release-manager:prod-ccc", logs=("ERROR cache unavailable",))
    failed = platform.deploy("ccc")
    assert not failed.ok and "ERROR cache unavailable" in failed.reason
    assert tracks(cluster)["release-manager-canary"] == 1, "stopped at the first step"

    back = platform.rollback()
    assert back.ok, back.reason
    assert tracks(cluster) == {"release-manager-prod": 4, "release-manager-canary": 0}
    assert platform.status().releases_serving == {"bbb"}


def test_canary_methods_refuse_another_strategy(cluster):
    cluster.add_deployment("backend-core", "granter/backend-core:v1.9.0")
    platform = KubernetesPlatform(
        cluster.settings(
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


ROLLOUT_STEPS = [
    {"setWeight": 5},
    {"analysis": {"templates": [{"templateName": "error-rate"}]}},
    {"setWeight": 25},
    {"pause": {"duration": "0.1s"}},
    {"setWeight": 50},
    {"analysis": {"templates": [{"templateName": "error-rate"}]}},
    {"setWeight": 100},
]


def argo(cluster: Cluster, steps: list[dict] | None = None, **section) -> KubernetesPlatform:
    """Summit's canary Rollout (5/25/50/100 with analyses) at 4.0.0, and the platform following it."""
    cluster.add_rollout("summit-canary-rollout", "ghcr.io/summit/server:v4.0.0", steps or ROLLOUT_STEPS)
    settings = cluster.settings(
        strategy="argo-rollout",
        argo_rollout={
            "name": "summit-canary-rollout",
            "container": "summit-server",
            "image": "ghcr.io/summit/server:v{release}",
            **section,
        },
    )
    return KubernetesPlatform(settings, "https://summit.example")


def test_argo_rollout_follows_every_step_to_healthy(cluster):
    platform = argo(cluster)

    result = platform.deploy("4.0.1")

    assert result.ok, result.reason
    assert platform.current_release() == "4.0.1"
    lines = "\n".join(result.events)
    for weight in (5, 25, 50, 100):
        assert f"canary weight {weight} %" in lines
    assert "analysis summit-canary-rollout-" in lines and "Successful" in lines
    state = platform.strategy.rollout_status()
    assert state.phase == "Healthy" and state.stable


def test_argo_rollout_aborts_on_a_failed_analysis_and_rolls_back(cluster):
    platform = argo(cluster)
    cluster.behave("ghcr.io/summit/server:v4.0.1", analysis="Failed")

    result = platform.deploy("4.0.1")

    assert not result.ok
    assert "AnalysisRun summit-canary-rollout-" in result.reason and "Failed at step 1/7" in result.reason
    assert 'Metric "error-rate" assessed Failed due to failed (1) > failureLimit (0)' in result.reason
    state = platform.strategy.rollout_status()
    assert state.aborted and state.phase == "Degraded" and state.canary_weight == 0
    assert platform.current_release() == "4.0.0", "the stable ReplicaSet serves"

    back = platform.rollback()

    assert back.ok, back.reason
    assert back.release == "4.0.0"
    state = platform.strategy.rollout_status()
    assert state.phase == "Healthy" and state.stable and not state.aborted


def test_argo_rollout_waits_at_an_indefinite_pause_for_the_gates(cluster):
    platform = argo(cluster, steps=[{"setWeight": 10}, {"pause": {}}, {"setWeight": 100}])

    result = platform.deploy("4.0.1")

    assert result.ok, result.reason
    assert "paused at step 1 until promoted" in result.events[-2]
    assert platform.strategy.rollout_status().paused
    assert platform.current_release() == "4.0.0", "still the stable release until promoted"

    platform.promote()

    assert platform.current_release() == "4.0.1"
    assert platform.strategy.rollout_status().phase == "Healthy"


def test_argo_rollout_abort_by_hand(cluster):
    platform = argo(cluster, steps=[{"setWeight": 10}, {"pause": {}}])
    assert platform.deploy("4.0.1").ok

    platform.abort()

    state = platform.strategy.rollout_status()
    assert state.aborted and state.canary_weight == 0
    assert platform.current_release() == "4.0.0"
