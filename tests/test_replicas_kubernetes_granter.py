"""Granter's production example end to end on a real Kubernetes control plane: the example's own
procedure (1.3's maintenance mode, backend-core scaled to 0 around the migration; phase 3's three
deployments in order, each checked before the next) against the real API server, the Deployments
and Services its team applied (sandbox/replicas/granter-kubernetes.yaml), pointed at the
replica's pods by sandbox/replicas/granter-kubernetes.toml. A failing migration aborts at its
rehearsal (10) before anything changed; a crash-looping image is rolled back (11) as the
runbook's rollback steps say: maintenance mode, the database restored, the previous images; the
good release migrates with backend-core at 0 replicas in the API (maintenance mode), then goes
through every gate (0) with it back.
"""

from __future__ import annotations

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
    running_on_kubernetes,
    schema_version,
    start_gates,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

NAMESPACE = "granter"
SERVICES = {"backend-core": 2, "data-service": 1, "web-frontend": 1}


@pytest.fixture(scope="module")
def granter(module_sandbox_dir: Path) -> Iterator[Replica]:
    with running_on_kubernetes("granter", module_sandbox_dir / "granter") as replica:
        yield replica


def deployment(replica: Replica, name: str) -> Any:
    return client.AppsV1Api(kube_api(replica)).read_namespaced_deployment(name, NAMESPACE)


def images(replica: Replica) -> dict[str, list[str]]:
    return {name: pod_images(replica, f"app={name}") for name in SERVICES}


def release_everywhere(release: str) -> dict[str, list[str]]:
    return {name: [f"granter/{name}:v{release}"] * n for name, n in SERVICES.items()}


def test_a_failing_migration_aborts_at_its_rehearsal_before_anything_changed(granter: Replica) -> None:
    before = rows(granter)

    run = run_gates(granter, "2.0.0-bad-migration")

    assert run.code == 10, run.output[-3000:]
    assert "test_rehearsal_on_the_restored_copy" in run.output
    assert deployment(granter, "backend-core").spec.replicas == 2, "never taken out of service"
    assert schema_version(granter) == "UsersAndGrants20260127000050"
    assert rows(granter) == before
    assert images(granter) == release_everywhere("1.9.0")


def test_a_crash_looping_image_is_rolled_back_with_the_database_restored_in_maintenance_mode(
    granter: Replica,
) -> None:
    """Rollback steps 2-4: scaled to 0, the database restored, the previous images brought back."""
    before = rows(granter)

    run = run_gates(granter, "2.0.0-crashloop")

    assert run.code == 11, run.output[-3000:]
    assert "CrashLoopBackOff" in run.report and "pod backend-core-" in run.report, run.report[-3000:]
    assert "maintenance mode entered before the database undo" in run.report
    assert "kubectl set image deployment/backend-core backend-core=granter/backend-core:v1.9.0" in run.output
    assert schema_version(granter) == "UsersAndGrants20260127000050", "rollback.database = restore"
    assert rows(granter) == before
    assert deployment(granter, "backend-core").spec.replicas == 2
    assert images(granter) == release_everywhere("1.9.0")


def test_the_good_release_migrates_in_maintenance_mode_then_rolls_out_each_deployment_in_order(
    granter: Replica,
) -> None:
    before = rows(granter)
    during: list[int] = []
    gates = start_gates(granter, "2.0.0")

    output = act_when(
        gates,
        lambda line: "migrating granter_db" in line,
        lambda: during.append(deployment(granter, "backend-core").spec.replicas),
    )

    assert gates.returncode == 0, output[-3000:]
    assert during == [0], "1.3: backend-core scaled to 0 while the migration runs, in the API"
    order = [output.index(f"kubectl set image deployment/{name}") for name in SERVICES]
    assert order == sorted(order), "phase 3: backend-core, then data-service, then web-frontend"
    assert deployment(granter, "backend-core").spec.replicas == 2, "the rollout brought them back"
    assert schema_version(granter) == "GrantTags20260128001000"
    assert rows(granter) == before
    assert images(granter) == release_everywhere("2.0.0")
