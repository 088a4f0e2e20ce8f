"""Argo Rollouts on a real control plane with the real Argo Rollouts controller (Summit's canary
Rollout): its steps, its AnalysisRuns (a web metric asking the canary's pods), abort and the
rollback releasegate makes of it."""

from __future__ import annotations

import pytest
from real_cluster import Cluster
from test_node_agent import serving

from releasegate.errors import ActionError
from releasegate.platforms.argo import ArgoRollout
from releasegate.platforms.kubernetes import KubernetesPlatform

pytestmark = pytest.mark.cluster(argo=True)

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


# releasegate judges each step (analysis = "releasegate"): the gates promote pause by pause ------

JUDGED_STEPS = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]


def test_a_rollout_judged_by_the_gates_waits_at_each_weight_until_promoted(kube):
    platform, url = argo(kube, steps=JUDGED_STEPS, analysis="releasegate")

    platform.start_canary("4.0.1")

    state = platform.strategy.rollout_status()
    assert state.paused and state.canary_weight == 25
    assert platform.current_release() == "4.0.0", "stable until the last step"
    assert platform.set_canary_weight(25) == 25.0, "1 of 4 pods: nothing to promote yet"
    assert platform.strategy.rollout_status().step == 1

    assert platform.set_canary_weight(50) == 50.0
    assert platform.strategy.rollout_status().step == 3, "promoted to the next pause, not past it"
    assert {p.release for p in platform.status().instances if p.ready} == {"4.0.0", "4.0.1"}

    assert platform.set_canary_weight(100) == 100.0
    platform.promote()  # what the gates do after the last step: nothing left

    assert platform.current_release() == "4.0.1"
    assert platform.strategy.rollout_status().phase == "Healthy"
    kube.settle(lambda: serving(url) == {"v4.0.1"}, "the stable Service answers from 4.0.1")


def test_a_weight_the_rollout_has_no_step_for_is_refused(kube):
    platform, _url = argo(kube, steps=JUDGED_STEPS, analysis="releasegate")
    platform.start_canary("4.0.1")

    with pytest.raises(ActionError, match=r"waits at 50 %, not 40 %: its setWeight steps"):
        platform.set_canary_weight(40)


def test_a_rollout_that_never_pauses_cannot_be_judged_by_the_gates(kube):
    platform, _url = argo(kube, steps=[{"setWeight": 50}, {"setWeight": 100}], analysis="releasegate")

    with pytest.raises(ActionError, match=r"went to 100 % without stopping for a judgement"):
        platform.start_canary("4.0.1")


def test_a_crash_looping_canary_aborts_the_rollout_with_the_pods_reason(kube):
    """Argo itself would wait for its progress deadline (10 minutes) before Degraded: the pod's
    CrashLoopBackOff fails the rollout at once, and the stable ReplicaSet keeps every request."""
    platform, url = argo(kube, steps=JUDGED_STEPS, analysis="releasegate")
    kube.behave("ghcr.io/summit/server:v4.0.1", fault="CrashLoopBackOff", fault_after_s=0.2)

    with pytest.raises(ActionError) as failed:
        platform.start_canary("4.0.1")

    reason = str(failed.value)
    assert "summit-canary-rollout-" in reason and "CrashLoopBackOff" in reason, reason
    assert reason.endswith("rollout aborted")
    state = platform.strategy.rollout_status()
    assert state.aborted and state.canary_weight == 0
    assert serving(url) == {"v4.0.0"}


def test_a_complete_rollout_whose_new_pods_log_errors_or_restarted_fails(kube):
    """GA 4.3 (`kubectl logs ... | grep -i error`, "Expected: No errors") and the optimization
    summary's restart counts, on the Argo path as on the rolling one: checked once it is complete."""
    platform, _url = argo(kube, steps=[{"setWeight": 50}, {"setWeight": 100}])
    kube.behave("ghcr.io/summit/server:v4.0.1", logs=("ERROR cannot reach the audit sink",))

    result = platform.deploy("4.0.1")

    assert not result.ok
    assert "rollout summit-canary-rollout: " in result.reason and "log line(s) match" in result.reason, (
        result.reason
    )
    assert "ERROR cannot reach the audit sink" in result.reason

    kube.behave("ghcr.io/summit/server:v4.0.2", restarts=1)
    result = platform.deploy("4.0.2")

    assert not result.ok
    assert "restarted 1 time(s) (at most 0 allowed)" in result.reason, result.reason


def test_preflight_sees_whether_a_controller_handles_the_rollout(kube):
    """The optimisation summary's "Argo Rollouts controller and CRDs installed": a Rollout the
    running controller reconciles passes; one of another controller's instance id, which this
    controller ignores (its status stays behind its spec), is named with what to check."""
    platform, _url = argo(kube)
    handled, seen = ArgoRollout(platform).controller_state()
    assert handled and "status is at its generation" in seen, seen

    orphan = kube.rollout("summit-canary-rollout")
    orphan["metadata"] = {
        "name": "orphan",
        "labels": {"argo-rollouts.argoproj.io/controller-instance-id": "another-cluster"},
    }
    orphan.pop("status", None)
    orphan["spec"]["replicas"] = 0
    kube.custom.create_namespaced_custom_object("argoproj.io", "v1alpha1", kube.namespace, "rollouts", orphan)
    settings = platform.settings.model_copy(
        update={"argo_rollout": platform.settings.argo_rollout.model_copy(update={"name": "orphan"})}
    )
    handled, seen = ArgoRollout(KubernetesPlatform(settings, platform.url)).controller_state()
    assert not handled
    assert "rollout orphan is at generation 1, its status at none: no Argo Rollouts controller" in seen, seen
