"""Helm on the simulated cluster, through a stand-in ``helm`` command.

Helm cannot be installed on these machines, so the test puts a tiny fake ``helm`` on PATH (see
``FAKE_HELM``): it records its argv, keeps a revision history in a JSON file, and does what the
chart would do to the cluster (sets the workload's image through the official client), so the
platform's own checks after Helm (rollout status, Argo steps) run against the simulation. What
is asserted is the helm command lines releasegate runs and the release the cluster ends on.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from k8s_cluster import CONTEXT, NAMESPACE, Cluster

from releasegate.platforms.helm import HelmPlatform
from releasegate.platforms.kubernetes import KubernetesPlatform

FAKE_HELM = '''#!{python}
"""A stand-in for helm 3 in tests (helm is not installed here): argv in, history out."""
import json, os, sys
from kubernetes import client, config

log, state_path = os.environ["FAKE_HELM_LOG"], os.environ["FAKE_HELM_STATE"]
with open(log, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
state = json.load(open(state_path)) if os.path.exists(state_path) else []
args = sys.argv[1:]

def flag(name):
    return args[args.index(name) + 1] if name in args else None

def apply(tag):
    kind, name, container, image = os.environ["FAKE_HELM_WORKLOAD"].split(":", 3)
    config.load_kube_config(config_file=flag("--kubeconfig"), context=flag("--kube-context"))
    if kind == "rollout":
        api = client.CustomObjectsApi()
        obj = api.get_namespaced_custom_object("argoproj.io", "v1alpha1", flag("--namespace"), "rollouts", name)
    else:
        api = client.AppsV1Api()
        obj = api.read_namespaced_deployment(name, flag("--namespace")).to_dict()
        obj = {{"spec": {{"template": {{"spec": {{"containers": obj["spec"]["template"]["spec"]["containers"]}}}}}}}}
    index = [c["name"] for c in obj["spec"]["template"]["spec"]["containers"]].index(container)
    patch = [{{"op": "replace", "path": f"/spec/template/spec/containers/{{index}}/image",
              "value": image.replace("{{tag}}", tag)}}]
    if kind == "rollout":
        api.patch_namespaced_custom_object("argoproj.io", "v1alpha1", flag("--namespace"), "rollouts", name, patch,
                                           _content_type="application/json-patch+json")
    else:
        api.patch_namespaced_deployment(name, flag("--namespace"), patch)

def record(tag, description):
    for entry in state:
        entry["status"] = "superseded" if entry["status"] == "deployed" else entry["status"]
    state.append({{"revision": len(state) + 1, "status": "deployed", "chart": "summit-4.0.0",
                  "app_version": tag, "description": description}})
    json.dump(state, open(state_path, "w"))

if args[0] == "version":
    print("v3.15.2+gfake")
elif args[0] == "history":
    if not state:
        sys.exit("Error: release: not found")
    print(json.dumps(state))
elif args[0] == "upgrade":
    tag = [a.split("=", 1)[1] for a in args if a.startswith("image.tag=")][0]
    if os.environ.get("FAKE_HELM_FAIL") == "upgrade":
        sys.exit("Error: UPGRADE FAILED: context deadline exceeded")
    apply(tag)
    record(tag, "Upgrade complete")
    print('Release "summit" has been upgraded. Happy Helming!')
elif args[0] == "rollback":
    target = [e for e in state if e["revision"] == int(args[2])][0]
    apply(target["app_version"])
    record(target["app_version"], f"Rollback to {{args[2]}}")
    print("Rollback was a success! Happy Helming!")
'''


@pytest.fixture
def fake_helm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake ``helm`` first on PATH; returns its argv log (one JSON list per call)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helm = bin_dir / "helm"
    helm.write_text(FAKE_HELM.format(python=sys.executable))
    helm.chmod(0o755)
    log = tmp_path / "helm-argv.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin")
    monkeypatch.setenv("FAKE_HELM_LOG", str(log))
    monkeypatch.setenv("FAKE_HELM_STATE", str(tmp_path / "helm-state.json"))
    return log


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def helm_settings(cluster: Cluster, **section: Any) -> dict[str, Any]:
    return {
        "release": "summit",
        "chart": "./charts/summit",
        "values_files": ["charts/summit/values.prod.yaml"],
        "set_values": {"image.tag": "v{release}"},
        "timeout_s": 600,
        **section,
    }


def test_helm_upgrade_then_rollback_to_the_recorded_revision(cluster, fake_helm, monkeypatch):
    cluster.add_deployment("summit", "ghcr.io/summit/server:v4.0.0", container="summit-server")
    monkeypatch.setenv("FAKE_HELM_WORKLOAD", "deployment:summit:summit-server:ghcr.io/summit/server:{tag}")
    settings = cluster.settings(
        [{"name": "summit", "container": "summit-server", "image": "ghcr.io/summit/server:v{release}"}],
        helm=helm_settings(cluster),
    )
    platform = HelmPlatform(KubernetesPlatform(settings, "https://summit.example"))
    assert platform.deploy("4.0.0").ok  # the first install: revision 1
    where = ["--namespace", NAMESPACE, "--kube-context", CONTEXT, "--kubeconfig", str(cluster.kubeconfig)]

    result = platform.deploy("4.0.1")

    assert result.ok, result.reason
    assert calls(fake_helm)[-2:] == [
        ["history", "summit", "--output", "json", *where],
        [
            "upgrade",
            "--install",
            "summit",
            "./charts/summit",
            *where,
            "--wait",
            "--timeout",
            "600s",
            "--values",
            "charts/summit/values.prod.yaml",
            "--set",
            "image.tag=v4.0.1",
        ],
    ]
    assert platform.recorded_revision == 1
    assert cluster.image("summit", "summit-server") == "ghcr.io/summit/server:v4.0.1"
    assert platform.current_release() == "4.0.1"

    back = platform.rollback()

    assert back.ok, back.reason
    assert calls(fake_helm)[-1] == ["rollback", "summit", "1", *where, "--wait", "--timeout", "600s"]
    assert cluster.image("summit", "summit-server") == "ghcr.io/summit/server:v4.0.0"
    assert back.release == "4.0.0" and platform.status().releases_serving == {"4.0.0"}


def test_a_failed_helm_upgrade_is_a_failed_rollout_with_helms_reason(cluster, fake_helm, monkeypatch):
    cluster.add_deployment("summit", "ghcr.io/summit/server:v4.0.0", container="summit-server")
    monkeypatch.setenv("FAKE_HELM_WORKLOAD", "deployment:summit:summit-server:ghcr.io/summit/server:{tag}")
    monkeypatch.setenv("FAKE_HELM_FAIL", "upgrade")
    settings = cluster.settings(
        [{"name": "summit", "container": "summit-server", "image": "ghcr.io/summit/server:v{release}"}],
        helm=helm_settings(cluster),
    )

    result = HelmPlatform(KubernetesPlatform(settings, "https://summit.example")).deploy("4.0.1")

    assert not result.ok
    assert result.reason == (
        "helm: helm upgrade --install failed (exit 1): Error: UPGRADE FAILED: context deadline exceeded"
    )


def test_helm_with_an_argo_rollout_follows_the_steps_and_rolls_back_with_helm(
    cluster, fake_helm, monkeypatch
):
    cluster.add_rollout(
        "summit-canary-rollout",
        "ghcr.io/summit/server:v4.0.0",
        [{"setWeight": 5}, {"analysis": {"templates": [{"templateName": "error-rate"}]}}, {"setWeight": 100}],
    )
    settings = cluster.settings(
        strategy="argo-rollout",
        helm=helm_settings(cluster),
        argo_rollout={
            "name": "summit-canary-rollout",
            "container": "summit-server",
            "image": "ghcr.io/summit/server:v{release}",
        },
    )
    monkeypatch.setenv(
        "FAKE_HELM_WORKLOAD", "rollout:summit-canary-rollout:summit-server:ghcr.io/summit/server:{tag}"
    )
    platform = HelmPlatform(KubernetesPlatform(settings, "https://summit.example"))
    assert platform.deploy("4.0.0").ok
    cluster.behave("ghcr.io/summit/server:v4.0.1", analysis="Failed")

    result = platform.deploy("4.0.1")

    assert not result.ok
    assert "AnalysisRun summit-canary-rollout-" in result.reason and "rollout aborted" in result.reason
    back = platform.rollback()
    assert back.ok, back.reason
    assert calls(fake_helm)[-1][:3] == ["rollback", "summit", "1"]
    assert platform.current_release() == "4.0.0"
    assert platform.kubernetes.strategy.rollout_status().phase == "Healthy"
