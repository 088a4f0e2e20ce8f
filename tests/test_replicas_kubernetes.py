"""Summit's production example end to end on a real Kubernetes control plane, as ``make
demo-kubernetes`` runs it: the example's own path (``helm upgrade`` of its chart, then its Argo
Rollout canary 5/10/25/50/75/100, each step judged by the gates against the stable release from
the pods' metrics, which Prometheus finds through the API server), pointed at Summit's replica
by sandbox/replicas/summit-kubernetes.toml. A crash-looping image is rolled back by ``helm
rollback`` (exit 11) with the pod's reason; then the good release goes through every gate (0).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from replicas_stack import (
    Replica,
    kube_api,
    pod_images,
    rows,
    run_gates,
    running_on_kubernetes,
    schema_version,
    service_versions,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

NAMESPACE = "summit-prod"
ROLLOUT = "summit-canary-rollout"


@pytest.fixture(scope="module")
def summit(module_sandbox_dir: Path) -> Iterator[Replica]:
    with running_on_kubernetes("summit", module_sandbox_dir / "summit") as replica:
        yield replica


def rollout(replica: Replica) -> dict:
    return client.CustomObjectsApi(kube_api(replica)).get_namespaced_custom_object(
        "argoproj.io", "v1alpha1", NAMESPACE, "rollouts", ROLLOUT
    )


def survived(replica: Replica, before: dict[str, int]) -> None:
    """Every entity is still there; the audit trail only grew (append-only: the journeys' and the
    policy activations' events stay). GA 7.3: the database is never rolled back."""
    after = rows(replica)
    assert after["entities"] == before["entities"]
    assert after["audit_log"] >= before["audit_log"]


def test_a_crash_looping_image_is_rolled_back_by_helm_with_the_pods_reason(summit: Replica) -> None:
    before = rows(summit)

    run = run_gates(summit, "4.0.0-crashloop")

    assert run.code == 11, run.output[-4000:]
    assert "test_canary_instances_start_beside_stable" in run.output
    assert "CrashLoopBackOff" in run.report, run.report[-4000:]
    assert "pod summit-canary-rollout-" in run.report
    assert "helm rollback summit 1" in run.output, run.output[-4000:]
    assert service_versions(summit) == {"v3.0.0-ga"}
    assert pod_images(summit, "app=summit") == ["ghcr.io/summit/server:v3.0.0-ga"] * 4
    assert rollout(summit)["status"]["phase"] == "Healthy"
    survived(summit, before)


def test_the_good_release_goes_through_every_gate_its_canary_judged_at_each_step(summit: Replica) -> None:
    before = rows(summit)

    run = run_gates(summit, "4.0.0")

    assert run.code == 0, run.output[-4000:]
    for weight in (5, 10, 25, 50, 75):
        assert f"canary at {weight} %" in run.report, run.report[-4000:]
        assert f"kubectl argo rollouts promote {ROLLOUT}" in run.output
    assert "error_ratio: canary against stable" in run.report
    assert "kubectl argo rollouts promote --full" in run.output
    assert service_versions(summit) == {"v4.0.0-ga"}
    assert pod_images(summit, "app=summit") == ["ghcr.io/summit/server:v4.0.0-ga"] * 4
    assert rollout(summit)["status"]["phase"] == "Healthy"
    assert schema_version(summit) == "20260115000000"
    survived(summit, before)
