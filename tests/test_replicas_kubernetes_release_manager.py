"""Release Manager's production example end to end on a real Kubernetes control plane: the
example's own procedure (step 5's RollingUpdate patch, ``kubectl set image``, ``kubectl rollout
status``, ``kubectl rollout undo`` to the recorded revision) against the real API server, the
Deployment and Service its team applied (sandbox/replicas/release-manager-kubernetes.yaml), pointed
at the replica's pods by sandbox/replicas/release-manager-kubernetes.toml. In order, each from the
stable release: a failing migration (10), a crash-looping image (11, the pod's reason), a run
killed with SIGKILL mid-rollout and put back by ``pytest rollback/``, then the good release (0).
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gate_runs import act_when
from kubernetes import client
from replicas_stack import (
    Replica,
    kube_api,
    pod_images,
    rows,
    run_gates,
    run_suite,
    running_on_kubernetes,
    schema_version,
    service_versions,
    start_gates,
)

from sandbox.replicas.release_manager import COMMITS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

NAMESPACE, DEPLOYMENT, SELECTOR = "production", "release-manager-prod", "app=release-manager"


def image(release: str) -> str:
    """``release-manager:prod-$(git rev-parse --short HEAD)`` on tag v{release} (the guide's build)."""
    return f"release-manager:prod-{COMMITS[release][:7]}"


STABLE = [image("2024.01.08")] * 2


@pytest.fixture(scope="module")
def release_manager(module_sandbox_dir: Path) -> Iterator[Replica]:
    with running_on_kubernetes("release-manager", module_sandbox_dir / "release-manager") as replica:
        yield replica


def deployment(replica: Replica) -> Any:
    return client.AppsV1Api(kube_api(replica)).read_namespaced_deployment(DEPLOYMENT, NAMESPACE)


def revision(replica: Replica) -> str:
    return deployment(replica).metadata.annotations["deployment.kubernetes.io/revision"]


def serves_stable(replica: Replica) -> None:
    assert service_versions(replica) == {"v2024.01.08"}
    assert pod_images(replica, SELECTOR) == STABLE
    assert deployment(replica).spec.template.spec.containers[0].image == STABLE[0]


def test_a_failing_migration_aborts_with_the_database_and_the_deployment_untouched(
    release_manager: Replica,
) -> None:
    before, at = rows(release_manager), revision(release_manager)

    run = run_gates(release_manager, "2024.01.15-bad-migration")

    assert run.code == 10, run.output[-3000:]
    assert schema_version(release_manager) == "4a7e2c91d0b3"
    assert rows(release_manager) == before
    assert revision(release_manager) == at, "nothing was rolled out"
    serves_stable(release_manager)


def test_a_crash_looping_image_is_undone_to_the_recorded_revision_with_the_pods_reason(
    release_manager: Replica,
) -> None:
    run = run_gates(release_manager, "2024.01.15-crashloop")

    assert run.code == 11, run.output[-3000:]
    assert "CrashLoopBackOff" in run.report, run.report[-3000:]
    assert "pod release-manager-prod-" in run.report
    assert "kubectl rollout undo deployment/release-manager-prod --to-revision=" in run.output
    strategy = deployment(release_manager).spec.strategy.rolling_update
    assert (strategy.max_surge, strategy.max_unavailable) == (1, 0), "step 5's patch, in the API"
    serves_stable(release_manager)


def test_kill_9_mid_rollout_then_rollback_puts_the_recorded_revision_back(release_manager: Replica) -> None:
    gates = start_gates(release_manager, "2024.01.15")
    output = act_when(
        gates,
        lambda line: "kubectl set image deployment/release-manager-prod" in line,
        lambda: gates.send_signal(signal.SIGKILL),
    )
    assert gates.returncode == -signal.SIGKILL, output
    assert deployment(release_manager).spec.template.spec.containers[0].image == image("2024.01.15")

    back = run_suite(release_manager, "rollback/")

    assert back.code == 0, back.output[-3000:]
    assert "kubectl rollout undo deployment/release-manager-prod" in back.output
    serves_stable(release_manager)


def test_the_good_release_goes_through_every_gate(release_manager: Replica) -> None:
    plan = run_suite(release_manager, "gates/", "--release=2024.01.15", "--dry-run")
    assert f"images:      {image('2024.01.15')}" in plan.output, "the commit of tag v2024.01.15, looked up"
    before = rows(release_manager)

    run = run_gates(release_manager, "2024.01.15")

    assert run.code == 0, run.output[-3000:]
    assert schema_version(release_manager) == "9c3f51e8a276"
    assert rows(release_manager) == before
    assert service_versions(release_manager) == {"v2024.01.15"}
    assert pod_images(release_manager, SELECTOR) == [image("2024.01.15")] * 2
    tagged = re.search(rf"git ref v2024\.01\.15\b.*\b{COMMITS['2024.01.15'][:7]}\b", run.report)
    assert tagged, "the tag's commit, as evidence"
    # issue 12: the run held the environment by a Lease in its namespace, released at its end
    assert "Lease releasegate-release-manager-production in namespace production" in run.report
    lease = client.CoordinationV1Api(kube_api(release_manager)).read_namespaced_lease(
        "releasegate-release-manager-production", NAMESPACE
    )
    holder = json.loads(lease.metadata.annotations["releasegate.dev/holder"])
    assert (holder["kind"], holder["release"]) == ("deploy", "2024.01.15")
    assert lease.spec.holder_identity is None, "released"
