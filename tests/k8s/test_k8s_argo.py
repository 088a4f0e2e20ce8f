"""Argo Rollouts on the simulated cluster (Summit's canary Rollout): moves to the real Argo
Rollouts controller on the real control plane next (issue 13)."""

from __future__ import annotations

from k8s_cluster import Cluster

from releasegate.platforms.kubernetes import KubernetesPlatform

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
