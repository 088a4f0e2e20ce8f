"""Argo Rollouts on a real control plane with the real Argo Rollouts controller (Summit's canary
Rollout): its steps, its AnalysisRuns (a web metric asking the canary's pods), abort and the
rollback releasegate makes of it."""

from __future__ import annotations

from real_cluster import Cluster
from test_node_agent import serving

from releasegate.platforms.kubernetes import KubernetesPlatform

ROLLOUT_STEPS = [
    {"setWeight": 25},
    {"analysis": {"templates": [{"templateName": "error-rate"}]}},
    {"setWeight": 50},
    {"pause": {"duration": "1s"}},
    {"setWeight": 75},
    {"analysis": {"templates": [{"templateName": "error-rate"}]}},
    {"setWeight": 100},
]


def argo(kube: Cluster, steps: list[dict] | None = None, **section) -> tuple[KubernetesPlatform, str]:
    """Summit's canary Rollout (25/50/75/100 with analyses) at 4.0.0, the platform following it,
    and the stable Service's URL."""
    ip = kube.add_rollout("summit-canary-rollout", "ghcr.io/summit/server:v4.0.0", steps or ROLLOUT_STEPS)
    settings = kube.settings(
        strategy="argo-rollout",
        rollout_timeout_s=120,
        argo_rollout={
            "name": "summit-canary-rollout",
            "container": "summit-server",
            "image": "ghcr.io/summit/server:v{release}",
            **section,
        },
    )
    return KubernetesPlatform(settings, "https://summit.example"), f"http://{ip}"


def test_argo_rollout_follows_every_step_to_healthy(kube):
    platform, url = argo(kube)

    result = platform.deploy("4.0.1")

    assert result.ok, result.reason
    assert platform.current_release() == "4.0.1"
    lines = "\n".join(result.events)
    for weight in (25, 50, 75):
        assert f"canary weight {weight} %" in lines
    analyses = [e for e in result.events if ": analysis summit-canary-rollout-" in e]
    assert len(analyses) == 2 and all(e.endswith(" Successful") for e in analyses), lines
    state = platform.strategy.rollout_status()
    assert state.phase == "Healthy" and state.stable
    kube.settle(lambda: serving(url) == {"v4.0.1"}, "the stable Service answers from 4.0.1")


def test_argo_rollout_aborts_on_a_failed_analysis_and_rolls_back(kube):
    platform, url = argo(kube)
    kube.behave("ghcr.io/summit/server:v4.0.1", fault="AnalysisFailed")

    result = platform.deploy("4.0.1")

    assert not result.ok
    assert "AnalysisRun summit-canary-rollout-" in result.reason and "Failed" in result.reason
    assert 'Metric "error-rate" assessed Failed due to failed (1) > failureLimit (0)' in result.reason
    state = platform.strategy.rollout_status()
    assert state.aborted and state.canary_weight == 0
    assert platform.current_release() == "4.0.0", "the stable ReplicaSet serves"
    assert serving(url) == {"v4.0.0"}

    back = platform.rollback()

    assert back.ok, back.reason
    assert back.release == "4.0.0"
    state = platform.strategy.rollout_status()
    assert state.phase == "Healthy" and state.stable and not state.aborted


def test_argo_rollout_waits_at_an_indefinite_pause_for_the_gates(kube):
    platform, url = argo(kube, steps=[{"setWeight": 25}, {"pause": {}}, {"setWeight": 100}])

    result = platform.deploy("4.0.1")

    assert result.ok, result.reason
    assert "paused at step 1 until promoted" in result.events[-2]
    assert platform.strategy.rollout_status().paused
    assert platform.current_release() == "4.0.0", "still the stable release until promoted"
    assert serving(url) == {"v4.0.0"}, "the stable Service keeps to the stable ReplicaSet"

    platform.promote()

    assert platform.current_release() == "4.0.1"
    assert platform.strategy.rollout_status().phase == "Healthy"


def test_argo_rollout_abort_by_hand(kube):
    platform, _url = argo(kube, steps=[{"setWeight": 25}, {"pause": {}}])
    assert platform.deploy("4.0.1").ok

    platform.abort()

    state = platform.strategy.rollout_status()
    assert state.aborted and state.canary_weight == 0
    assert platform.current_release() == "4.0.0"
