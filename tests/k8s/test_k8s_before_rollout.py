"""Before the application rolls out, on a real control plane (one for the file): the connection,
the preflight gates that read through it, and the policy bundle switched first.

- The connection: kubeconfig and context, a bearer token, in-cluster (a ServiceAccount's token
  and the CA as files, KUBERNETES_SERVICE_HOST/PORT), and how a refusal, a failure or a silence
  reads. What the API server does itself is done for real: RBAC refuses a ServiceAccount whose
  Role has no ``patch`` (403), a token it does not know is rejected (401), a namespace that is
  not there has no deployment (404). What it will not do on demand (a 5xx, a 429, an answer that
  comes too late, a dropped connection) the test's API proxy (api_proxy.py) injects in front of
  it. What is asserted is one line naming the verb, the resource and the namespace.
- The preflight gates of gates/test_05_kubernetes.py, each called as pytest would call it (the
  environment, a connection, a Checker): the node agent's three nodes (each the whole machine),
  metrics-server's ``kubectl top nodes``, the scheduler's placements, the disruption
  controller's PodDisruptionBudget status. What is asserted is the evidence line a person reads
  in the report; a node "too busy" is one over a threshold the environment sets low.
- The policy bundle as the Summit GA guide switches it (4.1, 7.2): ``kubectl set env
  deployment/opa BUNDLE_VERSION=...``, the Deployment's rollout, then the engine's own word. The
  engine is a pod (``openpolicyagent/opa`` of the tests' registry: policy_engine.py) reached
  through its Service's ClusterIP: as an OPA that pulls its bundle at start, it loads the bundle
  its ``BUNDLE_VERSION`` names from Summit's own (sandbox/replicas/summit_policy) and reports it
  at ``/health/policy`` as Summit's API does.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import ssl
import stat
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import kubernetes.config.incluster_config as incluster
import pytest
from api_proxy import DROP, ApiProxy
from kubernetes import client
from kubernetes.client.rest import ApiException
from real_cluster import CONTEXT, OPA, Cluster

from releasegate.actions.policy_kubernetes import KubernetesEnvBundle
from releasegate.config import Environment, PolicySettings
from releasegate.errors import ActionError, ProbeError
from releasegate.evidence import Checker, Evidence, GateFailure
from releasegate.platforms.argo import ArgoRollout
from releasegate.platforms.kubernetes import KubernetesPlatform
from releasegate.probes.kubernetes import Kubernetes, node_usage, nodes_not_ready
from releasegate.probes.policy import PolicyEngine

pytestmark = pytest.mark.cluster(metrics=True)  # preflight reads node usage from metrics.k8s.io

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("gate_05_kubernetes", ROOT / "gates" / "test_05_kubernetes.py")
assert _spec and _spec.loader
gates = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gates)
METRICS_API = "v1beta1.metrics.k8s.io"
NODES = "[GET /apis/metrics.k8s.io/v1beta1/nodes]"
READER = [  # what releasegate reads of a namespace: it may look, never change
    {"apiGroups": ["apps"], "resources": ["deployments", "replicasets"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]},
]


# -- the connection --------------------------------------------------------------------------------


def backend_platform(kube: Cluster, **overrides) -> KubernetesPlatform:
    """Granter's backend-core at 1.9.0 (one pod), and the platform that updates it."""
    kube.add_deployment("backend-core", "granter/backend-core:v1.9.0", replicas=1)
    return KubernetesPlatform(kube.settings(**overrides), "http://granter.example")


def deployment_path(kube: Cluster) -> str:
    return f"/apis/apps/v1/namespaces/{kube.namespace}/deployments/backend-core"


def only(path: str) -> str:
    """``fail``'s pattern for exactly ``path`` (with or without a query)."""
    return "^" + re.escape(path) + r"(\?|$)"


def service_account(kube: Cluster, name: str, rules: list[dict[str, object]]) -> str:
    """A ServiceAccount bound to a Role of ``rules`` in the test's namespace; a token of it
    (TokenRequest, as a projected token is made)."""
    kube.core.create_namespaced_service_account(kube.namespace, {"metadata": {"name": name}})
    rbac = client.RbacAuthorizationV1Api(kube.admin)
    rbac.create_namespaced_role(kube.namespace, {"metadata": {"name": name}, "rules": rules})
    rbac.create_namespaced_role_binding(
        kube.namespace,
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": kube.namespace}],
        },
    )
    request = kube.core.create_namespaced_service_account_token(
        name, kube.namespace, {"spec": {"expirationSeconds": 600}}
    )
    return request.status.token


def api_server(kube: Cluster) -> tuple[str, Path]:
    """The API server's own address (not the proxy's) and its CA certificate."""
    plane = kube.session.sandbox.control_plane
    return plane.url, plane.pki.ca


def token_kubeconfig(path: Path, server: str, token: str, namespace: str, ca: Path | None = None) -> Path:
    """A kubeconfig whose user is a bearer token (no client certificate)."""
    cluster = {"server": server} | ({"certificate-authority": str(ca)} if ca else {})
    context = {"cluster": "sandbox", "user": "ci", "namespace": namespace}
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "sandbox", "cluster": cluster}],
                "users": [{"name": "ci", "user": {"token": token}}],
                "contexts": [{"name": CONTEXT, "context": context}],
                "current-context": CONTEXT,
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def token_proxy(kube_session):
    """The test's API proxy forwarding the client's own token: RBAC is the API server's."""
    plane = kube_session.sandbox.control_plane
    proxy = ApiProxy(
        plane.url, ssl.create_default_context(cafile=str(plane.pki.ca)), forward_credentials=True
    )
    yield proxy
    proxy.close()


# the connection: kubeconfig, token, in-cluster


def test_the_kubeconfig_context_and_namespace_are_used(kube):
    kubernetes = Kubernetes(kube.settings())

    assert kubernetes.context == CONTEXT and kubernetes.host == kube.session.proxy.url
    assert kubernetes.namespace == kube.namespace
    assert kubernetes.component == f"kubernetes API at {kube.session.proxy.url}, context {CONTEXT}"
    assert nodes_not_ready(kubernetes) == (3, [])
    kubernetes.close()


def test_an_unknown_context_is_one_line(kube):
    with pytest.raises(ProbeError) as error:
        Kubernetes(kube.settings(context="prod-eu"))

    assert "\n" not in str(error.value)
    assert str(error.value).startswith(f"kubernetes: cannot load {kube.kubeconfig}:")
    assert "prod-eu" in str(error.value)


def test_a_token_replaces_the_kubeconfigs_credentials(kube, tmp_path, monkeypatch):
    """The kubeconfig's own token is stale; ``token = "${...}"`` is the ServiceAccount's."""
    server, ca = api_server(kube)
    token = service_account(kube, "releasegate", READER)
    kubeconfig = token_kubeconfig(tmp_path / "kubeconfig", server, "stale-token", kube.namespace, ca)
    kube.add_deployment("backend-core", "granter/backend-core:v1.9.0", replicas=1)
    monkeypatch.setenv("RG_TEST_KUBE_TOKEN", token)

    settings = kube.settings(kubeconfig=str(kubeconfig), token="${RG_TEST_KUBE_TOKEN}")
    platform = KubernetesPlatform(settings, "http://granter.example")

    assert platform.current_release() == "1.9.0"
    assert platform.kube.host == server


def test_a_token_replaces_a_client_certificate_too(kube, monkeypatch):
    """The sandbox's admin kubeconfig (a client certificate in system:masters) with the token of
    a ServiceAccount that may only read: the patch must be refused, as the token's."""
    monkeypatch.setenv("RG_TEST_KUBE_TOKEN", service_account(kube, "releasegate", READER))
    admin = kube.session.sandbox.kubeconfig
    platform = backend_platform(kube, kubeconfig=str(admin), context="sandbox", token="${RG_TEST_KUBE_TOKEN}")

    with pytest.raises(ActionError, match="403 Forbidden: cannot patch deployments/backend-core"):
        platform.deploy("2.0.0")


def test_in_cluster_reads_the_service_accounts_token_and_the_ca_files(kube, tmp_path, monkeypatch):
    server, ca = api_server(kube)
    host, _, port = server.removeprefix("https://").rpartition(":")
    (tmp_path / "token").write_text(service_account(kube, "releasegate", READER))
    (tmp_path / "ca.crt").write_bytes(ca.read_bytes())
    # where a pod finds them (/var/run/secrets/kubernetes.io/serviceaccount/), and its Service env
    monkeypatch.setattr(incluster, "SERVICE_TOKEN_FILENAME", str(tmp_path / "token"))
    monkeypatch.setattr(incluster, "SERVICE_CERT_FILENAME", str(tmp_path / "ca.crt"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    kube.add_deployment("backend-core", "granter/backend-core:v1.9.0", replicas=1)

    platform = KubernetesPlatform(
        kube.settings(in_cluster=True, kubeconfig=None, context=None), "http://granter.example"
    )

    assert platform.current_release() == "1.9.0"
    assert platform.kube.component == f"kubernetes API at {server}"


# the connection: what the API server refuses


def test_forbidden_names_the_verb_the_resource_and_the_namespace(kube, tmp_path, token_proxy):
    """RBAC: the ServiceAccount may read the Deployment, not patch it."""
    token = service_account(kube, "releasegate", READER)
    kubeconfig = token_kubeconfig(tmp_path / "kubeconfig", token_proxy.url, token, kube.namespace)
    platform = backend_platform(kube, kubeconfig=str(kubeconfig))
    mark = len(token_proxy.seen)

    with pytest.raises(ActionError) as raised:
        platform.deploy("2.0.0")

    line = str(raised.value)
    assert "\n" not in line
    assert line == (
        f"kubernetes API at {token_proxy.url}, context {CONTEXT}: 403 Forbidden: cannot patch "
        f"deployments/backend-core in namespace {kube.namespace}: "
        f'deployments.apps "backend-core" is forbidden: User "system:serviceaccount:{kube.namespace}:releasegate" '
        f'cannot patch resource "deployments" in API group "apps" in the namespace "{kube.namespace}" '
        "(the account needs RBAC permission for this verb)"
    )
    assert token_proxy.requests_to("PATCH", deployment_path(kube), mark) == 1, "a 403 is not retried"
    assert kube.image("backend-core") == "granter/backend-core:v1.9.0"


def test_unauthorized_says_the_credentials_were_rejected(kube, tmp_path):
    server, ca = api_server(kube)
    kubeconfig = token_kubeconfig(tmp_path / "kubeconfig", server, "stale-token", kube.namespace, ca)

    with pytest.raises(ProbeError) as raised:
        nodes_not_ready(Kubernetes(kube.settings(kubeconfig=str(kubeconfig))))

    assert str(raised.value) == (
        f"kubernetes API at {server}, context {CONTEXT}: 401 Unauthorized: cannot "
        f"list nodes (cluster-wide): the credentials were rejected (check the kubeconfig "
        f"user of context {CONTEXT})"
    )


def test_a_namespace_that_does_not_exist_is_named(kube):
    platform = KubernetesPlatform(
        kube.settings(namespace=f"{kube.namespace}-nowhere"), "http://granter.example"
    )

    with pytest.raises(ProbeError) as raised:
        platform.current_release()

    nowhere = f"{kube.namespace}-nowhere"  # the API server answers as for a missing Deployment
    assert str(raised.value) == (
        f"kubernetes API at {kube.session.proxy.url}, context {CONTEXT}: 404 Not Found: get "
        f'deployments/backend-core in namespace {nowhere}: deployments.apps "backend-core" not found '
        f"(namespace {nowhere} does not exist on this cluster: correct [platform.kubernetes] namespace "
        "(or context), or create the namespace)"
    ), "not the hint to create the deployment"


def test_a_missing_deployment_in_a_namespace_that_exists_says_to_create_it(kube):
    platform = KubernetesPlatform(kube.settings(), "http://granter.example")

    with pytest.raises(ProbeError) as raised:
        platform.current_release()

    assert str(raised.value).endswith(
        "(releasegate sets the image of an existing Deployment: create deployment backend-core in "
        f"namespace {kube.namespace} first (kubectl apply, or install its chart through "
        "[platform.kubernetes.helm]), or correct its name in [[platform.kubernetes.deployments]])"
    ), str(raised.value)


# the connection: what the proxy injects


def test_a_5xx_is_retried_and_then_the_call_succeeds(kube):
    platform = backend_platform(kube, retries=2)
    proxy, path = kube.session.proxy, deployment_path(kube)
    proxy.fail("GET", only(path), 503, message="etcdserver: leader changed")
    proxy.fail("GET", only(path), 500, message="etcdserver: leader changed")
    mark = len(proxy.seen)

    assert platform.current_release() == "1.9.0"
    assert proxy.requests_to("GET", path, mark) == 3


def test_a_lasting_5xx_fails_after_the_retries_in_one_line(kube):
    platform = backend_platform(kube, retries=2)
    proxy, path = kube.session.proxy, deployment_path(kube)
    proxy.fail("GET", only(path), 503, times=3, message="etcdserver: request timed out")
    mark = len(proxy.seen)

    with pytest.raises(ProbeError) as raised:
        platform.current_release()

    assert str(raised.value) == (
        f"kubernetes API at {proxy.url}, context {CONTEXT}: get deployments/backend-core "
        f"in namespace {kube.namespace}: 503 Service Unavailable after 2 retries: "
        "etcdserver: request timed out"
    )
    assert proxy.requests_to("GET", path, mark) == 3


def test_a_429_is_retried_after_the_time_the_api_server_asks(kube):
    """The API server's priority and fairness sheds load with 429 and ``Retry-After: 1``."""
    platform = backend_platform(kube, retries=1)
    proxy, path = kube.session.proxy, deployment_path(kube)
    proxy.fail(
        "GET",
        only(path),
        429,
        message="Too many requests, please try again later.",
        headers={"Retry-After": "1"},
    )
    mark = len(proxy.seen)

    started = time.monotonic()
    assert platform.current_release() == "1.9.0"

    assert time.monotonic() - started >= 1.0, "it waited as asked"
    assert proxy.requests_to("GET", path, mark) == 2


def test_a_call_that_never_answers_times_out_after_the_retries(kube):
    platform = backend_platform(kube, retries=1, request_timeout_s=0.3)
    proxy, path = kube.session.proxy, deployment_path(kube)
    proxy.fail("GET", only(path), 0, times=2, delay_s=3)  # forwarded, 3 s late
    mark = len(proxy.seen)

    started = time.monotonic()
    with pytest.raises(ProbeError) as raised:
        platform.current_release()
    elapsed = time.monotonic() - started

    assert str(raised.value) == (
        f"kubernetes API at {proxy.url}, context {CONTEXT}: get deployments/backend-core "
        f"in namespace {kube.namespace}: no answer within 0.3 s (1 retries) "
        "(is the cluster reachable?)"
    )
    assert elapsed < 2.5, "two attempts of 0.3 s, not the 3 s the answer takes"
    assert proxy.requests_to("GET", path, mark) == 2


def test_a_dropped_connection_is_retried_and_a_lasting_drop_is_one_line(kube):
    platform = backend_platform(kube, retries=1)
    proxy, path = kube.session.proxy, deployment_path(kube)
    proxy.fail("GET", only(path), DROP)
    mark = len(proxy.seen)

    assert platform.current_release() == "1.9.0"
    assert proxy.requests_to("GET", path, mark) == 2

    proxy.fail("GET", only(path), DROP, times=2)
    with pytest.raises(ProbeError) as raised:
        platform.current_release()

    line = str(raised.value)
    assert "\n" not in line
    assert line.startswith(
        f"kubernetes API at {proxy.url}, context {CONTEXT}: get deployments/backend-core "
        f"in namespace {kube.namespace}: cannot connect (1 retries): "
    )
    assert "Remote end closed connection without response" in line


def test_a_cluster_that_is_down_is_one_line(kube, tmp_path):
    """The API server's address, with nothing listening there any more."""
    plane = kube.session.sandbox.control_plane
    gone = ApiProxy(plane.url, plane.ssl_context())
    settings = kube.settings(
        kubeconfig=str(gone.write_kubeconfig(tmp_path / "gone", CONTEXT, kube.namespace))
    )
    kubernetes = Kubernetes(settings.model_copy(update={"retries": 1}))
    assert nodes_not_ready(kubernetes)[0] == 3
    gone.close()

    with pytest.raises(ProbeError) as raised:
        nodes_not_ready(kubernetes)

    line = str(raised.value)
    assert "\n" not in line
    assert line.startswith(
        f"kubernetes API at {gone.url}, context {CONTEXT}: list nodes (cluster-wide): "
        "cannot connect (1 retries):"
    )


# -- the preflight gates ---------------------------------------------------------------------------


def environment(kube: Cluster, **kubernetes: Any) -> Environment:
    """A complete environment on the test's namespace (the sections the gates do not read are minimal)."""
    settings = kube.settings(**kubernetes).model_dump(exclude_none=True)
    return Environment.model_validate(
        {
            "environment": {"name": "production", "tier": "production", "service": "granter"},
            "platform": {"kind": "kubernetes", "url": "https://granter.example", "kubernetes": settings},
            "database": {"dsn": "postgresql://granter@db.internal:5432/granter_db"},
            "backup": {"databases": ["granter_db"], "dir": "/var/backups/granter"},
        }
    )


class Evidence_:
    def __init__(self) -> None:
        self.records: list[Evidence] = []
        self.check = Checker(self.records.append, "gates/test_05_kubernetes.py", "preflight", production=True)

    def lines(self) -> list[str]:
        return [r.line() for r in self.records]


@pytest.fixture
def evidence() -> Evidence_:
    return Evidence_()


@pytest.fixture
def connection() -> Iterator[Any]:
    """``connection(settings)``: releasegate's connection with these settings, closed after the test."""
    made: list[Kubernetes] = []

    def connect(settings: Any) -> Kubernetes:
        made.append(Kubernetes(settings))
        return made[-1]

    yield connect
    for kubernetes in made:
        kubernetes.close()


def backend(kube: Cluster, **deployment: Any) -> list[dict[str, Any]]:
    """Granter's backend-core at 1.9.0 in the cluster; its [[platform.kubernetes.deployments]]."""
    kube.add_deployment("backend-core", "granter/backend-core:v1.9.0", **deployment)
    return [{"name": "backend-core", "container": "backend-core", "image": "granter/backend-core:v{release}"}]


def run_all(env: Environment, evidence: Evidence_, kubernetes: Kubernetes) -> list[str]:
    """Every gate of the module, as pytest would run them; the names of those that failed."""
    deployments = env.platform.kubernetes.deployments
    calls = {
        "nodes": lambda: gates.test_every_node_is_ready(kubernetes, evidence.check),
        "usage": lambda: gates.test_node_cpu_and_memory_below_the_limits(kubernetes, env, evidence.check),
        "room": lambda: gates.test_room_for_the_surge_pods(kubernetes, deployments, evidence.check),
        "failing": lambda: gates.test_no_pod_of_the_release_is_failing(
            kubernetes, deployments, evidence.check
        ),
        "budgets": lambda: gates.test_disruption_budgets_allow_the_rollout(
            kubernetes, deployments, evidence.check
        ),
        "strategy": lambda: gates.test_rolling_update_strategy(kubernetes, env, deployments, evidence.check),
    }
    failed = []
    for name, call in calls.items():
        try:
            call()
        except GateFailure:
            failed.append(name)
    return failed


def test_a_healthy_cluster_passes_every_gate_with_evidence(kube, evidence, connection):
    env = environment(kube, deployments=backend(kube))

    assert run_all(env, evidence, connection(env.platform.kubernetes)) == []

    lines = evidence.lines()
    assert "nodes not Ready: 0 == 0: pass [GET /api/v1/nodes]" in lines
    cores = os.cpu_count()
    for node in ("sandbox-node-1", "sandbox-node-2", "sandbox-node-3"):  # the machine's cores and memory
        cpu = rf"node {node} CPU: [\d.]+ % <= 70 %: pass - [\d.]+ of {cores} cores {re.escape(NODES)}"
        memory = rf"node {node} memory: [\d.]+ % <= 80 %: pass - [\d.]+ of [\d.]+ GiB {re.escape(NODES)}"
        assert any(re.fullmatch(cpu, line) for line in lines), lines
        assert any(re.fullmatch(memory, line) for line in lines), lines
    assert any(
        line.startswith(
            "room for 1 surge pod(s) of backend-core: yes: pass - 1 surge pod(s) of 110m CPU / 144 MiB; "
            "1 fit on 3 schedulable node(s)"
        )
        for line in lines
    ), lines
    assert "PodDisruptionBudgets over the release's pods: none: info" in lines


def test_a_node_not_ready_fails_naming_it(kube, evidence, connection):
    """A fourth node whose kubelet reports it NotReady (the node agent's three report Ready)."""
    name = f"{kube.namespace}-node"
    kube.core.create_node({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}})
    try:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        condition = {"type": "Ready", "status": "False", "reason": "KubeletNotReady",
                     "message": "PLEG is not healthy", "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}  # fmt: skip
        kube.core.patch_node_status(name, {"status": {"conditions": [condition]}})

        with pytest.raises(GateFailure) as failure:
            gates.test_every_node_is_ready(connection(kube.settings()), evidence.check)
    finally:
        kube.core.delete_node(name)

    assert str(failure.value) == (
        f"nodes not Ready: 1 == 0: fail - {name}: Ready=False (KubeletNotReady: PLEG is not healthy) "
        "[GET /api/v1/nodes]"
    )
    assert "nodes in the cluster: 4 >= 1: pass" in evidence.lines()[0]


def test_a_busy_node_fails_the_thresholds_of_the_environment(kube, evidence, connection):
    """Each node's memory (what runs on it) against a limit the environment sets at half of the
    highest figure metrics-server gives now, as the gate reads it (a percentage to 0.1)."""
    highest = max(round(u.memory_ratio * 100, 1) for u in node_usage(connection(kube.settings())))
    assert highest > 0, "every node runs something: its share of the node agent at least"
    env = environment(kube, preflight={"max_node_cpu_ratio": 1.0, "max_node_memory_ratio": highest / 200})

    with pytest.raises(GateFailure) as failure:
        gates.test_node_cpu_and_memory_below_the_limits(
            connection(env.platform.kubernetes), env, evidence.check
        )

    assert re.fullmatch(
        rf"node sandbox-node-\d memory: [\d.]+ % <= [\d.]+ %: fail - [\d.]+ of [\d.]+ GiB {re.escape(NODES)}",
        str(failure.value),
    ), str(failure.value)
    assert re.fullmatch(r"node sandbox-node-\d CPU: [\d.]+ % <= 100 %: pass .*", evidence.lines()[0])


def test_no_room_for_the_surge_pod_fails(kube, evidence, connection):
    """Three pods of more than half a node's cores each: one on each node, and no room for a fourth."""
    cores = os.cpu_count() or 1
    cpu = f"{cores * 550}m"
    deployments = backend(kube, requests=(cpu, "128Mi"))
    assert len({p.spec.node_name for p in kube.pods("backend-core")}) == 3, "the scheduler spread them"
    settings = kube.settings(deployments)

    with pytest.raises(GateFailure) as failure:
        gates.test_room_for_the_surge_pods(connection(settings), settings.deployments, evidence.check)

    assert str(failure.value).startswith(
        f"room for 1 surge pod(s) of backend-core: no: fail - 1 surge pod(s) of {cores * 550 + 10}m CPU / "
        "144 MiB; 0 fit on 3 schedulable node(s); the roomiest has "
    )


def test_a_crash_looping_pod_fails_preflight(kube, evidence, connection):
    kube.behave("granter/backend-core:v1.9.0", fault="CrashLoopBackOff", fault_after_s=0.05)
    deployments = backend(kube, wait=False)

    def crash_looping() -> bool:
        """Every pod in its back-off; from the 3rd restart on, it lasts 2 s and more."""
        statuses = [
            s
            for p in kube.pods("backend-core")
            for s in p.status.container_statuses or []
            if s.name == "backend-core"
        ]
        return len(statuses) == 3 and all(
            s.state.waiting and s.state.waiting.reason == "CrashLoopBackOff" and s.restart_count >= 3
            for s in statuses
        )

    kube.settle(crash_looping, "every pod in CrashLoopBackOff", timeout_s=60)
    settings = kube.settings(deployments)

    with pytest.raises(GateFailure) as failure:
        gates.test_no_pod_of_the_release_is_failing(
            connection(settings), settings.deployments, evidence.check
        )

    line = str(failure.value)
    assert re.match(
        r"pods failing \(CrashLoopBackOff, ImagePullBackOff, OOMKilled \.\.\.\): [123] == 0: fail", line
    )
    assert "deployment backend-core: pod backend-core-" in line
    assert "container backend-core: CrashLoopBackOff (back-off " in line
    assert "restarting failed container=backend-core" in line and "last exit Error (code 1)" in line


def test_a_disruption_budget_at_its_minimum_blocks_a_rollout_that_takes_pods_down(kube, evidence, connection):
    deployments = backend(kube)
    deployments[0]["max_unavailable"] = 1
    kube.policy.create_namespaced_pod_disruption_budget(
        kube.namespace,
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "backend-core-pdb"},
            "spec": {"minAvailable": 3, "selector": {"matchLabels": {"app": "backend-core"}}},
        },
    )

    def counted() -> bool:  # the disruption controller's status
        status = kube.policy.read_namespaced_pod_disruption_budget("backend-core-pdb", kube.namespace).status
        return bool(status and status.observed_generation and status.expected_pods == 3)

    kube.settle(counted, "the PodDisruptionBudget's status")
    settings = kube.settings(deployments)
    kubernetes = connection(settings)

    with pytest.raises(GateFailure) as failure:
        gates.test_disruption_budgets_allow_the_rollout(kubernetes, settings.deployments, evidence.check)

    assert str(failure.value) == (
        "PodDisruptionBudget backend-core-pdb allows the rollout of backend-core: no: fail - PodDisruptionBudget "
        "backend-core-pdb over backend-core: 0 disruption(s) allowed, 3/3 healthy; the rollout takes down 1 at a "
        "time [policy/v1 poddisruptionbudgets]"
    )
    deployments[0]["max_unavailable"] = 0  # surge only: the budget is never touched
    settings = kube.settings(deployments)
    gates.test_disruption_budgets_allow_the_rollout(kubernetes, settings.deployments, evidence.check)


def test_a_strategy_that_differs_from_the_environment_fails_unless_it_is_enforced(kube, evidence, connection):
    deployments = backend(
        kube,
        strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
    )
    env = environment(kube, deployments=deployments)
    kubernetes = connection(env.platform.kubernetes)

    with pytest.raises(GateFailure) as failure:
        gates.test_rolling_update_strategy(
            kubernetes, env, env.platform.kubernetes.deployments, evidence.check
        )
    assert (
        "uses RollingUpdate maxSurge 25%, maxUnavailable 25%; the environment expects RollingUpdate maxSurge 1, "
        "maxUnavailable 0" in str(failure.value)
    )

    deployments[0]["enforce_strategy"] = True
    env = environment(kube, deployments=deployments)
    gates.test_rolling_update_strategy(kubernetes, env, env.platform.kubernetes.deployments, evidence.check)
    assert evidence.records[-1].detail == "enforce_strategy: set before the rollout"


def test_helm_missing_is_one_line(kube, evidence, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no helm anywhere on PATH
    env = environment(kube, helm={"release": "summit", "chart": "./charts/summit"})

    with pytest.raises(GateFailure) as failure:
        gates.test_helm_is_installed(env, evidence.check)

    assert str(failure.value) == (
        "helm version: no data: fail - helm: 'helm' not found on PATH (install Helm 3 or "
        "set platform.kubernetes.helm.binary) [helm version --short]"
    )

    helm = tmp_path / "helm"
    helm.write_text("#!/bin/sh\necho v3.15.2+gc4e37b3\n")
    helm.chmod(helm.stat().st_mode | stat.S_IEXEC)
    assert os.access(helm, os.X_OK)
    gates.test_helm_is_installed(env, evidence.check)
    assert evidence.lines()[-1] == "helm version: v3.15.2+gc4e37b3: pass [helm version --short]"


def test_a_cluster_without_argo_rollouts_is_refused_before_a_release_uses_it(kube):
    """This file's control plane has no Argo Rollouts (its CRDs are not installed): an
    environment with a Rollout is stopped in preflight with what to install."""
    settings = kube.settings(
        strategy="argo-rollout",
        argo_rollout={"name": "summit-canary-rollout", "container": "summit-server",
                      "image": "ghcr.io/summit/server:v{release}"},
    )  # fmt: skip
    handled, seen = ArgoRollout(KubernetesPlatform(settings, "https://summit.example")).controller_state()
    assert not handled
    assert seen.startswith("the API argoproj.io/v1alpha1 rollouts is not served: install Argo Rollouts"), seen


# -- the policy bundle -----------------------------------------------------------------------------


@pytest.fixture
def engine(kube: Cluster) -> str:
    """Summit's policy engine at v3.0.0, one pod; its URL."""
    kube.add_deployment("opa", f"{OPA}:1.4.0", replicas=1, env={"BUNDLE_VERSION": "v3.0.0"})
    url = f"http://{kube.add_service('opa', {'app': 'opa'})}"
    kube.settle(lambda: answers(f"{url}/health/policy"), "the engine's Service (the node's service proxy)")
    return url


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def switch(kube: Cluster, engine: str) -> Iterator[object]:
    """``switch(timeout_s)``: the bundle switch of Summit's example ([policy.bundle])."""
    made: list[KubernetesEnvBundle] = []

    def make(timeout_s: float = 60) -> KubernetesEnvBundle:
        policy = PolicySettings.model_validate(
            {
                "url": engine,
                "bundle": {
                    "kind": "kubernetes-env",
                    "deployment": "opa",
                    "container": "opa",
                    "env_var": "BUNDLE_VERSION",
                    "value": "v{release}",
                    "activation_timeout_s": timeout_s,
                },
            }
        )
        made.append(KubernetesEnvBundle(PolicyEngine(policy, engine), policy.bundle, kube.settings()))
        return made[-1]

    yield make
    for bundles in made:
        bundles.close()


def bundle_variable(kube: Cluster) -> str | None:
    container = next(c for c in kube.deployment("opa").spec.template.spec.containers if c.name == "opa")
    return next((e.value for e in container.env or [] if e.name == "BUNDLE_VERSION"), None)


def test_the_engines_deployment_is_told_its_bundle_and_told_back(kube, switch):
    bundles = switch()
    prepared = bundles.prepare("4.0.0")
    assert (prepared.version, prepared.previous_version) == ("v4.0.0", "v3.0.0")
    assert (
        prepared.about
        == f"kubectl set env deployment/opa -n {kube.namespace} BUNDLE_VERSION=v4.0.0 (was v3.0.0)"
    )
    lines: list[str] = []

    forward = bundles.apply(prepared, lines.append)

    assert forward.ok and forward.active == "v4.0.0", forward.detail
    assert bundle_variable(kube) == "v4.0.0"
    assert kube.deployment("opa").metadata.annotations["deployment.kubernetes.io/revision"] == "2"
    assert any("successfully rolled out" in line for line in lines), "it waited for the restart"
    assert all(s.ready for p in kube.pods("opa") for s in p.status.container_statuses)

    back = bundles.restore(prepared.undo, lines.append)

    assert back.ok and back.active == "v3.0.0", back.detail
    assert bundle_variable(kube) == "v3.0.0"
    assert bundles.engine.active_version().version == "v3.0.0"


def test_the_bundle_already_named_changes_nothing(kube, switch):
    assert not switch().prepare("3.0.0").changes
    assert kube.deployment("opa").metadata.annotations["deployment.kubernetes.io/revision"] == "1"


def test_an_engine_that_never_loads_the_bundle_fails_the_switch_with_what_it_reports(kube, switch):
    """v5.0.0 is not on the bundle server: the new pod serves (OPA's plain health check) without
    it and says so at /health/policy (503, its reason), as Summit's API does."""
    bundles = switch(timeout_s=10)  # the rollout of one pod, then the wait for the version

    result = bundles.apply(bundles.prepare("5.0.0"), lambda _line: None)

    assert not result.ok and result.active is None
    assert result.detail.startswith("not active after 10 s: "), result.detail
    assert "503" in result.detail and "bundle v5.0.0: not found on the bundle server" in result.detail, (
        result.detail
    )


# -- last: a cluster without metrics.k8s.io (put back after) ---------------------------------------


def test_no_metrics_api_is_no_data_and_fails(kube, evidence, connection):
    """A cluster without metrics-server: its APIService taken out of the aggregation layer (and
    put back after, for the file's other tests)."""
    registration = client.ApiregistrationV1Api(kube.admin)
    served = registration.read_api_service(METRICS_API)
    registration.delete_api_service(METRICS_API)
    try:
        kube.settle(lambda: not metrics_listed(kube), "metrics.k8s.io gone from the API")
        env = environment(kube)

        with pytest.raises(GateFailure) as failure:
            gates.test_node_cpu_and_memory_below_the_limits(
                connection(env.platform.kubernetes), env, evidence.check
            )
    finally:
        body = {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                "metadata": {"name": METRICS_API, "labels": served.metadata.labels}, "spec": served.spec}  # fmt: skip
        registration.create_api_service(body)
        kube.settle(lambda: metrics_listed(kube), "metrics.k8s.io served again")

    assert str(failure.value) == (
        "node metrics: no data: no data - 404 Not Found: list nodes.metrics.k8s.io (cluster-wide): "
        "404 page not found [GET /apis/metrics.k8s.io/v1beta1/nodes]"
    )


def metrics_listed(kube: Cluster) -> bool:
    try:
        kube.custom.list_cluster_custom_object("metrics.k8s.io", "v1beta1", "nodes")
        return True
    except ApiException:
        return False
