"""The connection: kubeconfig and context, retries, timeouts, and how a refusal reads.

Errors are injected into the emulator's answers; what is asserted is what the person running
the gates sees: one line naming the verb, the resource and the namespace, never a traceback.
"""

from __future__ import annotations

import asyncio
import time

import kmock
import pytest
from k8s_cluster import CONTEXT, NAMESPACE, Cluster

from releasegate.errors import ActionError, ProbeError
from releasegate.platforms.kubernetes import KubernetesPlatform
from releasegate.probes.kubernetes import Kubernetes, nodes_not_ready

DEPLOYMENT_PATH = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/backend-core"
FORBIDDEN = (
    'deployments.apps "backend-core" is forbidden: User "system:serviceaccount:ci:releasegate" '
    'cannot patch resource "deployments" in API group "apps" in the namespace "production"'
)


def backend(cluster: Cluster, **overrides) -> KubernetesPlatform:
    cluster.add_deployment("backend-core", "granter/backend-core:v1.9.0")
    settings = cluster.settings(
        [{"name": "backend-core", "container": "backend-core", "image": "granter/backend-core:v{release}"}],
        **overrides,
    )
    return KubernetesPlatform(settings, "http://granter.example")


def react(cluster: Cluster, criteria: object, payload: object) -> None:
    """Add a reaction to the emulator, inside its own loop."""
    cluster.emulator.call(lambda: cluster.server[criteria] << payload)


def requests_to(cluster: Cluster, method: str, path: str, since: int = 0) -> int:
    """How many requests the API server saw for this path, after the first ``since`` of all."""
    return cluster.server.seen[since:].count((method, path))


def test_the_kubeconfig_context_and_namespace_are_used(cluster):
    kube = Kubernetes(cluster.settings())
    assert kube.context == CONTEXT and kube.host == cluster.url
    assert kube.namespace == NAMESPACE
    assert kube.component == f"kubernetes API at {cluster.url}, context {CONTEXT}"
    assert nodes_not_ready(kube) == (3, [])


def test_an_unknown_context_is_one_line(cluster):
    with pytest.raises(ProbeError) as error:
        Kubernetes(cluster.settings(context="prod-eu"))
    assert "\n" not in str(error.value)
    assert str(error.value).startswith(f"kubernetes: cannot load {cluster.kubeconfig}:")
    assert "prod-eu" in str(error.value)


def test_forbidden_names_the_verb_the_resource_and_the_namespace(cluster):
    platform = backend(cluster)
    error = kmock.KubernetesError(status=403, reason="Forbidden", message=FORBIDDEN)
    react(cluster, ("patch", DEPLOYMENT_PATH), error)
    mark = len(cluster.server.seen)

    with pytest.raises(ActionError) as raised:
        platform.deploy("2.0.0")

    line = str(raised.value)
    assert "\n" not in line
    assert line == (
        f"kubernetes API at {cluster.url}, context {CONTEXT}: 403 Forbidden: cannot patch "
        f"deployments/backend-core in namespace {NAMESPACE}: {FORBIDDEN} "
        "(the account needs RBAC permission for this verb)"
    )
    assert requests_to(cluster, "PATCH", DEPLOYMENT_PATH, mark) == 1, "a 403 is not retried"
    assert cluster.image("backend-core") == "granter/backend-core:v1.9.0"


def test_unauthorized_says_the_credentials_were_rejected(cluster):
    error = kmock.KubernetesError(status=401, reason="Unauthorized", message="Unauthorized")
    react(cluster, ("get", "/api/v1/nodes"), error)

    with pytest.raises(ProbeError) as raised:
        nodes_not_ready(Kubernetes(cluster.settings()))

    assert str(raised.value) == (
        f"kubernetes API at {cluster.url}, context {CONTEXT}: 401 Unauthorized: cannot "
        f"list nodes (cluster-wide): the credentials were rejected (check the kubeconfig "
        f"user of context {CONTEXT})"
    )


def test_a_5xx_is_retried_and_then_the_call_succeeds(cluster):
    platform = backend(cluster, retries=2)
    failures = iter([503, 500])

    def flaky(request):
        status = next(failures, None)
        if status is None:
            return cluster.server.objects[
                kmock.resource(group="apps", version="v1", plural="deployments"), NAMESPACE, "backend-core"
            ].raw
        raise kmock.KubernetesError(
            status=status, reason="ServiceUnavailable", message="etcdserver: leader changed"
        )

    react(cluster, ("get", DEPLOYMENT_PATH), flaky)
    mark = len(cluster.server.seen)

    assert platform.current_release() == "1.9.0"
    assert requests_to(cluster, "GET", DEPLOYMENT_PATH, mark) == 3


def test_a_lasting_5xx_fails_after_the_retries_in_one_line(cluster):
    platform = backend(cluster, retries=2)
    error = kmock.KubernetesError(
        status=503, reason="ServiceUnavailable", message="etcdserver: request timed out"
    )
    react(cluster, ("get", DEPLOYMENT_PATH), error)
    mark = len(cluster.server.seen)

    with pytest.raises(ProbeError) as raised:
        platform.current_release()

    assert str(raised.value) == (
        f"kubernetes API at {cluster.url}, context {CONTEXT}: get deployments/backend-core "
        f"in namespace {NAMESPACE}: 503 Service Unavailable after 2 retries: "
        "etcdserver: request timed out"
    )
    assert requests_to(cluster, "GET", DEPLOYMENT_PATH, mark) == 3


def test_a_call_that_never_answers_times_out_after_the_retries(cluster):
    platform = backend(cluster, retries=1, request_timeout_s=0.3)

    async def hang():
        await asyncio.sleep(1.5)
        return {}

    react(cluster, ("get", DEPLOYMENT_PATH), hang)
    mark = len(cluster.server.seen)

    started = time.monotonic()
    with pytest.raises(ProbeError) as raised:
        platform.current_release()
    elapsed = time.monotonic() - started

    assert str(raised.value) == (
        f"kubernetes API at {cluster.url}, context {CONTEXT}: get deployments/backend-core "
        f"in namespace {NAMESPACE}: no answer within 0.3 s (1 retries) "
        "(is the cluster reachable?)"
    )
    assert 0.5 < elapsed < 1.4, "two attempts of 0.3 s each"
    assert requests_to(cluster, "GET", DEPLOYMENT_PATH, mark) == 2


def test_a_cluster_that_is_down_is_one_line(cluster):
    kube = Kubernetes(cluster.settings(retries=1))
    cluster.sim.stop()
    cluster.emulator.close()

    with pytest.raises(ProbeError) as raised:
        nodes_not_ready(kube)

    line = str(raised.value)
    assert "\n" not in line
    assert line.startswith(
        f"kubernetes API at {cluster.url}, context {CONTEXT}: list nodes (cluster-wide): "
        "cannot connect (1 retries):"
    )
