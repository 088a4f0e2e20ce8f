"""Helm on a real control plane: the real ``helm`` (v4, built by ``make k8s-tools``) installs,
upgrades and rolls back a real chart (sandbox/charts/summit, what GA 4.2's chart does) through
the API server; releasegate runs it, records the revision before the change and rolls back to it.
"""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path
from typing import Any

import pytest
from real_cluster import Cluster
from test_node_agent import serving

from releasegate.errors import ProbeError
from releasegate.platforms.helm import HelmPlatform
from releasegate.platforms.kubernetes import KubernetesPlatform
from sandbox.control_plane import tool

pytestmark = pytest.mark.cluster(argo=True)

CHART = Path(__file__).resolve().parents[2] / "sandbox" / "charts" / "summit"


def helm_settings(**section: Any) -> dict[str, Any]:
    return {
        "release": "summit",
        "binary": str(tool("helm")),
        "chart": str(CHART),
        "values_files": [str(CHART / "values.prod.yaml")],
        "set_values": {"image.tag": "v{release}"},
        "timeout_s": 60,
        **section,
    }


def install(kube: Cluster, **values: str) -> None:
    """Revision 1, 4.0.0, as the cluster's admin installed it before releasegate's first run."""
    sets = [f"{k}={v}" for k, v in {"image.tag": "v4.0.0", **values}.items()]
    wait = ["--wait=legacy", "--server-side=false"] if values.get("workload") == "rollout" else ["--wait"]
    subprocess.run(
        [str(tool("helm")), "upgrade", "--install", "summit", str(CHART), "--namespace", kube.namespace,
         "--kubeconfig", str(kube.session.sandbox.kubeconfig), *wait, "--timeout", "60s",
         *(arg for s in sets for arg in ("--set", s))],
        check=True, capture_output=True, text=True, timeout=90,
    )  # fmt: skip


def revisions(platform: HelmPlatform) -> list[tuple[int, str, str]]:
    """``helm history``: (revision, status, description) of each revision, oldest first."""
    return [(e["revision"], e["status"], e["description"]) for e in platform.helm.history()]


def deployment_platform(kube: Cluster, **helm: Any) -> HelmPlatform:
    settings = kube.settings(
        [{"name": "summit", "container": "summit-server", "image": "ghcr.io/summit/server:v{release}"}],
        helm=helm_settings(**helm),
    )
    return HelmPlatform(KubernetesPlatform(settings, "https://summit.example"))


def test_helm_upgrade_then_rollback_to_the_recorded_revision(kube):
    install(kube)
    platform = deployment_platform(kube)
    url = f"http://{kube.core.read_namespaced_service('summit-server', kube.namespace).spec.cluster_ip}"
    kube.settle(lambda: serving(url) == {"v4.0.0"}, "the chart's Service answers")

    result = platform.deploy("4.0.1")

    assert result.ok, result.reason
    assert any(
        e.startswith("helm upgrade --install summit ") and e.endswith("--wait: done") for e in result.events
    )
    assert platform.recorded_revision == 1
    assert kube.image("summit", "summit-server") == "ghcr.io/summit/server:v4.0.1"
    assert platform.current_release() == "4.0.1"
    assert serving(url) == {"v4.0.1"}

    back = platform.rollback()

    assert back.ok, back.reason
    assert kube.image("summit", "summit-server") == "ghcr.io/summit/server:v4.0.0"
    assert back.release == "4.0.0" and platform.status().releases_serving == {"4.0.0"}
    assert [r[:2] for r in revisions(platform)] == [(1, "superseded"), (2, "superseded"), (3, "deployed")]
    assert revisions(platform)[-1][2] == "Rollback to 1"
    kube.settle(lambda: serving(url) == {"v4.0.0"}, "the Service answers from 4.0.0 again")


def test_a_failed_helm_upgrade_says_helms_reason_and_why_the_pods_are_not_ready(kube):
    """A crash-looping image: helm's --wait gives up at its timeout and says only that; the
    failure line adds what ``kubectl get pods`` shows, the new pod and its crash loop."""
    install(kube)
    platform = deployment_platform(kube, timeout_s=8)
    kube.behave("ghcr.io/summit/server:v4.0.1", fault="CrashLoopBackOff")

    result = platform.deploy("4.0.1")

    assert not result.ok
    helms, _, pods = result.reason.partition("; not ready: ")
    assert helms.startswith("helm: helm upgrade --install failed (exit 1): context deadline exceeded"), (
        result.reason
    )
    assert pods.startswith("pod summit-"), result.reason
    assert "CrashLoopBackOff" in pods or "last exit Error (code 1)" in pods, result.reason
    pod = kube.core.read_namespaced_pod(pods.split()[1], kube.namespace)
    assert pod.spec.containers[0].image == "ghcr.io/summit/server:v4.0.1"  # the new pod, not an old one
    assert revisions(platform)[-1][1] == "failed"

    back = platform.rollback()

    assert back.ok, back.reason
    assert platform.current_release() == "4.0.0"
    assert kube.image("summit", "summit-server") == "ghcr.io/summit/server:v4.0.0"
    assert revisions(platform)[-1] == (3, "deployed", "Rollback to 1")


def test_the_first_helm_install_is_an_initial_release(kube):
    """A namespace the chart was never installed in: no Deployment to read means nothing serves
    yet (not an error, through Helm), and ``helm upgrade --install`` makes revision 1."""
    platform = deployment_platform(kube)
    assert platform.current_release() is None
    assert platform.status().instances == () and platform.revisions_now() == []

    result = platform.deploy("4.0.0")

    assert result.ok, result.reason
    assert result.previous_release is None and result.release == "4.0.0"
    assert "helm history summit: no revision deployed: the chart's first install" in result.events
    assert revisions(platform) == [(1, "deployed", "Install complete")]
    status = platform.status()
    assert status.releases_serving == {"4.0.0"} and len(status.in_service) == 3, status
    url = f"http://{kube.core.read_namespaced_service('summit-server', kube.namespace).spec.cluster_ip}"
    kube.settle(lambda: serving(url) == {"v4.0.0"}, "the chart's Service answers from 4.0.0")


def test_without_helm_a_missing_deployment_is_a_one_line_error_saying_what_to_do(kube):
    """releasegate sets images on Deployments that exist; without Helm nothing would create one."""
    settings = kube.settings(
        [{"name": "summit", "container": "summit-server", "image": "ghcr.io/summit/server:v{release}"}]
    )
    platform = KubernetesPlatform(settings, "https://summit.example")

    with pytest.raises(ProbeError) as caught:
        platform.deploy("4.0.0")

    message = str(caught.value)
    assert "\n" not in message
    assert f"404 Not Found: get deployments/summit in namespace {kube.namespace}" in message, message
    assert f"create deployment summit in namespace {kube.namespace} first" in message, message


def test_helm_with_an_argo_rollout_follows_the_steps_and_rolls_back_with_helm(kube):
    """Summit's production shape: Helm renders the Argo Rollout; releasegate follows its steps and
    AnalysisRuns, and a failed analysis is rolled back with ``helm rollback``."""
    network = ipaddress.ip_network(kube.session.sandbox.control_plane.service_cidr)
    canary_ip = str(network[200 + int(kube.namespace[1:]) % 50])
    settings = kube.settings(
        strategy="argo-rollout",
        rollout_timeout_s=120,
        helm=helm_settings(
            set_values={"image.tag": "v{release}", "workload": "rollout", "canary.clusterIP": canary_ip},
            wait="legacy",
            extra_args=["--server-side=false"],  # Argo owns the Services' selectors
        ),
        argo_rollout={
            "name": "summit-canary-rollout",
            "container": "summit-server",
            "image": "ghcr.io/summit/server:v{release}",
        },
    )
    install(kube, workload="rollout", **{"canary.clusterIP": canary_ip})
    platform = HelmPlatform(KubernetesPlatform(settings, "https://summit.example"))
    kube.behave("ghcr.io/summit/server:v4.0.1", fault="AnalysisFailed")

    result = platform.deploy("4.0.1")

    assert not result.ok
    assert "AnalysisRun summit-canary-rollout-" in result.reason and "rollout aborted" in result.reason
    assert 'Metric "error-rate" assessed Failed due to failed (1) > failureLimit (0)' in result.reason
    back = platform.rollback()
    assert back.ok, back.reason
    assert revisions(platform)[-1][2] == "Rollback to 1"
    assert platform.current_release() == "4.0.0"
    kube.settle(
        lambda: platform.kubernetes.strategy.rollout_status().phase == "Healthy",
        "the Rollout is Healthy at 4.0.0",
    )
