"""Against a real cluster, when there is one: skipped unless KUBECONFIG is set.

Read-only checks use the kubeconfig's current context. The rollout test also needs
RELEASEGATE_TEST_NAMESPACE, an existing namespace where it may create, update and delete a
small Deployment (``releasegate-selftest``, nginx images); it deletes it afterwards.

    KUBECONFIG=~/.kube/config RELEASEGATE_TEST_NAMESPACE=releasegate-test \\
        .venv/bin/pytest tests/k8s -m kubernetes_cluster
"""

from __future__ import annotations

import os

import pytest

from releasegate.config import KubernetesPlatformSettings
from releasegate.platforms.kubernetes import KubernetesPlatform
from releasegate.probes.kubernetes import Kubernetes, nodes_not_ready

pytestmark = [
    pytest.mark.kubernetes_cluster,
    pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="no real cluster: KUBECONFIG is not set"),
]
NAME = "releasegate-selftest"


def settings(namespace: str) -> KubernetesPlatformSettings:
    return KubernetesPlatformSettings.model_validate(
        {
            "kubeconfig": os.environ["KUBECONFIG"].split(os.pathsep)[0],
            "namespace": namespace,
            "rollout_timeout_s": 180,
            "poll_interval_s": 1,
            "rollback": "revision",
            "deployments": [{"name": NAME, "container": "web", "image": "nginx:{release}"}],
        }
    )


def test_the_cluster_answers_and_its_nodes_are_listed():
    kube = Kubernetes(settings(os.environ.get("RELEASEGATE_TEST_NAMESPACE", "default")))
    count, _not_ready = nodes_not_ready(kube)
    assert count >= 1


@pytest.mark.skipif(
    not os.environ.get("RELEASEGATE_TEST_NAMESPACE"), reason="RELEASEGATE_TEST_NAMESPACE is not set"
)
def test_a_real_rollout_and_its_undo():
    namespace = os.environ["RELEASEGATE_TEST_NAMESPACE"]
    platform = KubernetesPlatform(settings(namespace), "http://unused")
    apps = platform.kube.apps
    apps.create_namespaced_deployment(
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": NAME},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": NAME}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "template": {
                    "metadata": {"labels": {"app": NAME}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1.25-alpine"}]},
                },
            },
        },
    )
    try:
        assert platform.deployments.wait(platform.settings.deployments[0], print) is None
        result = platform.deploy("1.26-alpine", print)
        assert result.ok, result.reason
        assert platform.current_release() == "1.26-alpine"
        back = platform.rollback(progress=print)
        assert back.ok, back.reason
        assert platform.current_release() == "1.25-alpine"
    finally:
        apps.delete_namespaced_deployment(NAME, namespace)
