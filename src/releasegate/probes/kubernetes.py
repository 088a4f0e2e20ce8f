"""Kubernetes through the official client: one connection per environment, and read-only probes.

``Kubernetes`` is the connection: kubeconfig (with the environment's context) or in-cluster,
one namespace, explicit retries (refused connections, timeouts and 5xx, with backoff) and a
timeout on every call. Whatever goes wrong comes back as one line naming the verb, the
resource and the namespace (``ProbeError`` for reads, ``ActionError`` for changes), never as
a traceback: a 403 reads ``cannot patch deployments/backend-core in namespace production``.

The functions below it are the preflight's questions (Summit GA 2.2, Granter checklist 2):
are the nodes Ready, how loaded are they (``kubectl top nodes``), is there room for the surge
pods, is anything already crash-looping, do the PodDisruptionBudgets allow the rollout; and
the rollout's own checks: restart counts and ERROR lines in the new pods' logs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import urllib3
from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException, OpenApiException
from kubernetes.config.config_exception import ConfigException
from urllib3.util.retry import Retry

from releasegate.config import KubernetesDeploymentSettings, KubernetesPlatformSettings
from releasegate.errors import ActionError, ProbeError
from releasegate.probes.kubernetes_objects import (
    TEMPLATE_HASH,
    container_image,
    not_terminating,
    pod_failure,
    quantity,
    resolve_count,
    restarts,
    revision_of,
    selector_matches,
    selector_string,
)

T = TypeVar("T")
RETRY_STATUSES = (500, 502, 503, 504)
_RETRIED_METHODS = frozenset({"GET", "HEAD", "PATCH", "PUT", "DELETE"})
"""POST (create) is never retried: it is not idempotent. Our patches are (whole values, by index)."""

METRICS = ("metrics.k8s.io", "v1beta1", "nodes")


class Kubernetes:
    """One namespace of one cluster, as the environment names it."""

    def __init__(self, settings: KubernetesPlatformSettings) -> None:
        self.settings = settings
        self.namespace = settings.namespace
        self.timeout_s = settings.request_timeout_s
        configuration, self.context = _configuration(settings)
        self.host = configuration.host
        self.api_client = client.ApiClient(configuration)
        self.core = client.CoreV1Api(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)
        self.policy = client.PolicyV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)

    @property
    def component(self) -> str:
        context = f", context {self.context}" if self.context else ""
        return f"kubernetes API at {self.host}{context}"

    def close(self) -> None:
        self.api_client.close()

    # -- calls ------------------------------------------------------------------------------

    def read(
        self,
        verb: str,
        resource: str,
        call: Callable[..., T],
        *args: Any,
        namespace: str | None = "",
        **kwargs: Any,
    ) -> T:
        """A read-only call with the request timeout; a failure is a one-line ProbeError."""
        return self._call(False, verb, resource, namespace, call, *args, **kwargs)

    def write(
        self,
        verb: str,
        resource: str,
        call: Callable[..., T],
        *args: Any,
        namespace: str | None = "",
        **kwargs: Any,
    ) -> T:
        """A change with the request timeout; a failure is a one-line ActionError."""
        return self._call(True, verb, resource, namespace, call, *args, **kwargs)

    def _call(
        self,
        mutating: bool,
        verb: str,
        resource: str,
        namespace: str | None,
        call: Callable[..., T],
        *args: Any,
        **kwargs: Any,
    ) -> T:
        namespace = self.namespace if namespace == "" else namespace
        kwargs.setdefault("_request_timeout", self.timeout_s)
        try:
            return call(*args, **kwargs)
        except (ApiException, urllib3.exceptions.HTTPError, OpenApiException, ValueError) as exc:
            raise self.error(exc, mutating, verb, resource, namespace) from None

    def error(
        self, exc: Exception, mutating: bool, verb: str, resource: str, namespace: str | None = ""
    ) -> ActionError | ProbeError:
        """The one-line error of a failed call (for a caller that handles some answers itself,
        such as a 409 Conflict, and leaves the others to this)."""
        namespace = self.namespace if namespace == "" else namespace
        if isinstance(exc, ApiException):
            problem, hint = self._refusal(exc, verb, resource, namespace)
        elif isinstance(exc, urllib3.exceptions.HTTPError):
            problem, hint = self._unreachable(exc, verb, resource, namespace), "is the cluster reachable?"
        else:  # a body the client could not read
            problem, hint = f"{verb} {_where(resource, namespace)}: unreadable answer: {_first_line(exc)}", ""
        if mutating:
            return ActionError(f"{self.component}: {problem}" + (f" ({hint})" if hint else ""))
        return ProbeError(self.component, problem, hint)

    def _refusal(self, exc: ApiException, verb: str, resource: str, namespace: str | None) -> tuple[str, str]:
        status = exc.status or 0
        message = _server_message(exc)
        where = _where(resource, namespace)
        if status == 401:
            return (
                f"401 Unauthorized: cannot {verb} {where}: the credentials were rejected",
                f"check the kubeconfig user of context {self.context or '(current)'}",
            )
        if status == 403:
            return (
                f"403 Forbidden: cannot {verb} {where}" + (f": {message}" if message else ""),
                "the account needs RBAC permission for this verb",
            )
        if status == 404:
            return f"404 Not Found: {verb} {where}" + (f": {message}" if message else ""), ""
        retried = f" after {self.settings.retries} retries" if status in RETRY_STATUSES else ""
        text = f"{status} {exc.reason or ''}".strip()
        return f"{verb} {where}: {text}{retried}" + (f": {message}" if message else ""), ""

    def _unreachable(
        self, exc: urllib3.exceptions.HTTPError, verb: str, resource: str, namespace: str | None
    ) -> str:
        reason = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
        tries = f" ({self.settings.retries} retries)" if self.settings.retries else ""
        where = _where(resource, namespace)
        if isinstance(reason, urllib3.exceptions.NewConnectionError):  # a subclass of the timeout
            return f"{verb} {where}: cannot connect{tries}: {_first_line(reason)}"
        if isinstance(reason, urllib3.exceptions.TimeoutError):
            return f"{verb} {where}: no answer within {self.timeout_s:g} s{tries}"
        if isinstance(reason, urllib3.exceptions.ResponseError):
            return f"{verb} {where}: {_first_line(reason)}{tries}"
        return f"{verb} {where}: cannot connect{tries}: {_first_line(reason)}"

    # -- reads ------------------------------------------------------------------------------

    def namespace_exists(self) -> bool | None:
        """Whether the namespace exists; None when this identity may not ask (reading namespaces
        is often not granted) or the question fails: then nothing is said about it."""
        try:
            self.read(
                "get",
                f"namespaces/{self.namespace}",
                self.core.read_namespace,
                self.namespace,
                namespace=None,
            )
        except ProbeError as exc:
            return False if exc.problem.startswith("404 ") else None
        return True

    def deployment(self, name: str) -> Any:
        return self.read(
            "get", f"deployments/{name}", self.apps.read_namespaced_deployment, name, self.namespace
        )

    def pods(self, selector: Any) -> list[Any]:
        """Pods a selector selects, filtered here too (not every server filters a selector)."""
        query = selector_string(selector)
        found = self.read("list", "pods", self.core.list_namespaced_pod, self.namespace, label_selector=query)
        return [p for p in found.items if selector_matches(selector, p.metadata.labels)]

    def live_pods(self, selector: Any) -> list[Any]:
        """The selected pods that are instances of a release: not those being deleted (they have
        left their Services' endpoints; the API lists them until their grace period ends)."""
        return not_terminating(self.pods(selector))

    def replica_sets(self, deployment: Any) -> list[Any]:
        """The ReplicaSets a Deployment owns, oldest revision first."""
        selector = deployment.spec.selector
        found = self.read(
            "list",
            "replicasets",
            self.apps.list_namespaced_replica_set,
            self.namespace,
            label_selector=selector_string(selector),
        )
        owned = [
            rs
            for rs in found.items
            if _owned_by(rs, "Deployment", deployment.metadata.name)
            or (not rs.metadata.owner_references and selector_matches(selector, rs.metadata.labels))
        ]
        return sorted(owned, key=lambda rs: revision_of(rs) or 0)

    def new_pods(self, deployment: Any, container: str) -> list[Any]:
        """Pods of the Deployment's current template: its newest ReplicaSet's pod-template-hash,
        or (without ReplicaSets to go by) the pods running the template's image."""
        pods = self.pods(deployment.spec.selector)
        revision = revision_of(deployment)
        current = [
            rs for rs in self.replica_sets(deployment) if revision is not None and revision_of(rs) == revision
        ]
        if current:
            template_hash = (current[-1].metadata.labels or {}).get(TEMPLATE_HASH)
            if template_hash:
                return [p for p in pods if (p.metadata.labels or {}).get(TEMPLATE_HASH) == template_hash]
        image = container_image(deployment.spec.template.spec, container)
        return [p for p in pods if container_image(p.spec, container) == image]

    def nodes(self) -> list[Any]:
        return self.read("list", "nodes", self.core.list_node, namespace=None).items

    def pod_log(self, pod: str, container: str, *, since: datetime | None, tail_lines: int) -> str:
        since_seconds = None
        if since is not None:
            since_seconds = max(1, int((datetime.now(UTC) - since).total_seconds()) + 1)
        return self.read(
            "get",
            f"pods/{pod}/log",
            self.core.read_namespaced_pod_log,
            pod,
            self.namespace,
            container=container,
            since_seconds=since_seconds,
            tail_lines=tail_lines,
        )


def _configuration(settings: KubernetesPlatformSettings) -> tuple[client.Configuration, str | None]:
    """The client configuration: kubeconfig or in-cluster, then our retries over whatever it says."""
    configuration = client.Configuration()
    context = settings.context
    source = "in-cluster service account" if settings.in_cluster else (settings.kubeconfig or "kubeconfig")
    try:
        if settings.in_cluster:
            kube_config.load_incluster_config(client_configuration=configuration)
        else:
            path = str(Path(settings.kubeconfig).expanduser()) if settings.kubeconfig else None
            kube_config.load_kube_config(
                config_file=path, context=context, client_configuration=configuration, persist_config=False
            )
            if context is None:
                _, active = kube_config.list_kube_config_contexts(config_file=path)
                context = active.get("name") if active else None
    except (ConfigException, OSError, ValueError, TypeError) as exc:
        raise ProbeError(
            "kubernetes",
            f"cannot load {source}: {_first_line(exc)}",
            "check platform.kubernetes.kubeconfig / context",
        ) from None
    if settings.token is not None:
        # The token is who acts, whatever the kubeconfig says: its client certificate would be
        # sent as well (and the API server authenticates a certificate first), and its refresh
        # hook would write its own token back before every request.
        configuration.api_key = {"BearerToken": f"Bearer {settings.token.resolve()}"}
        configuration.api_key_prefix = {}
        configuration.refresh_api_key_hook = None
        configuration.cert_file = configuration.key_file = None
    configuration.retries = Retry(
        total=settings.retries,
        connect=settings.retries,
        read=settings.retries,
        status=settings.retries,
        other=0,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=_RETRIED_METHODS,
        backoff_factor=settings.retry_backoff_s,
        raise_on_status=False,
        respect_retry_after_header=True,
    )
    return configuration, context


# -- preflight probes -----------------------------------------------------------------------


@dataclass(frozen=True)
class NodeUsage:
    """``kubectl top nodes``: usage against allocatable."""

    name: str
    cpu_cores: float
    cpu_allocatable: float
    memory_bytes: float
    memory_allocatable: float

    @property
    def cpu_ratio(self) -> float:
        return self.cpu_cores / self.cpu_allocatable if self.cpu_allocatable else float("nan")

    @property
    def memory_ratio(self) -> float:
        return self.memory_bytes / self.memory_allocatable if self.memory_allocatable else float("nan")


@dataclass(frozen=True)
class SurgeRoom:
    """Whether the surge pods of one deployment fit on the nodes' free allocatable room."""

    deployment: str
    pods: int
    cpu_each: float
    memory_each: float
    fits: bool
    detail: str


def nodes_not_ready(kube: Kubernetes) -> tuple[int, list[str]]:
    """``kubectl get nodes``: how many nodes, and one line per node that is not Ready."""
    nodes = kube.nodes()
    problems = []
    for node in nodes:
        ready = (
            next((c for c in node.status.conditions or [] if c.type == "Ready"), None)
            if node.status
            else None
        )
        if ready is None or ready.status != "True":
            why = f" ({ready.reason}: {ready.message})" if ready is not None and ready.reason else ""
            problems.append(f"{node.metadata.name}: Ready={ready.status if ready else 'Unknown'}{why}")
    return len(nodes), problems


def node_usage(kube: Kubernetes) -> list[NodeUsage]:
    """CPU and memory per node from metrics.k8s.io (what ``kubectl top nodes`` shows)."""
    metrics = kube.read(
        "list", "nodes.metrics.k8s.io", kube.custom.list_cluster_custom_object, *METRICS, namespace=None
    )
    allocatable = {n.metadata.name: (n.status.allocatable or {}) for n in kube.nodes()}
    usage = []
    for item in metrics.get("items", []):
        name = item["metadata"]["name"]
        alloc = allocatable.get(name, {})
        usage.append(
            NodeUsage(
                name=name,
                cpu_cores=quantity(item["usage"].get("cpu")),
                cpu_allocatable=quantity(alloc.get("cpu")),
                memory_bytes=quantity(item["usage"].get("memory")),
                memory_allocatable=quantity(alloc.get("memory")),
            )
        )
    return usage


def surge_room(kube: Kubernetes, deployments: Iterable[KubernetesDeploymentSettings]) -> list[SurgeRoom]:
    """Free allocatable room (allocatable minus the requests of the pods on each Ready,
    schedulable node) against each deployment's surge pods, placed first-fit one deployment at
    a time, as the rollout goes (the surge of one is gone before the next starts)."""
    nodes = [n for n in kube.nodes() if _schedulable(n)]
    pods = kube.read("list", "pods", kube.core.list_pod_for_all_namespaces, namespace=None).items
    free: dict[str, list[float]] = {}
    for node in nodes:
        alloc = node.status.allocatable or {}
        free[node.metadata.name] = [quantity(alloc.get("cpu")), quantity(alloc.get("memory"))]
    for pod in pods:
        node = pod.spec.node_name if pod.spec else None
        if node in free and (pod.status.phase if pod.status else None) not in ("Succeeded", "Failed"):
            cpu, memory = _requests(pod.spec)
            free[node][0] -= cpu
            free[node][1] -= memory
    rooms = []
    for settings in deployments:
        deployment = kube.deployment(settings.name)
        replicas = deployment.spec.replicas if deployment.spec.replicas is not None else 1
        surge = max(resolve_count(settings.max_surge, replicas, round_up=True), 1 if replicas else 0)
        cpu, memory = _requests(deployment.spec.template.spec)
        left = {name: list(room) for name, room in free.items()}
        placed = 0
        for _ in range(surge):
            node = next((n for n, (c, m) in left.items() if c >= cpu and m >= memory), None)
            if node is None:
                break
            left[node][0] -= cpu
            left[node][1] -= memory
            placed += 1
        best = max(left.values(), key=lambda r: r[0], default=[0.0, 0.0]) if left else [0.0, 0.0]
        detail = (
            f"{surge} surge pod(s) of {cpu * 1000:.0f}m CPU / {memory / 2**20:.0f} MiB; "
            f"{placed} fit on {len(free)} schedulable node(s); the roomiest has "
            f"{max(best[0], 0) * 1000:.0f}m / {max(best[1], 0) / 2**20:.0f} MiB free"
        )
        rooms.append(SurgeRoom(settings.name, surge, cpu, memory, placed >= surge, detail))
    return rooms


def failing_pods(kube: Kubernetes, deployments: Iterable[str]) -> list[str]:
    """Pods of these deployments in CrashLoopBackOff, ImagePullBackOff, OOMKilled ...: one line each."""
    found = []
    for name in deployments:
        deployment = kube.deployment(name)
        for pod in kube.pods(deployment.spec.selector):
            failure = pod_failure(pod)
            if failure:
                found.append(f"deployment {name}: {failure}")
    return found


@dataclass(frozen=True)
class DisruptionBudget:
    name: str
    deployment: str
    disruptions_allowed: int
    current_healthy: int
    desired_healthy: int
    rollout_takes_down: int

    @property
    def allows_rollout(self) -> bool:
        return (
            self.current_healthy >= self.desired_healthy
            and self.disruptions_allowed >= self.rollout_takes_down
        )

    def line(self) -> str:
        return (
            f"PodDisruptionBudget {self.name} over {self.deployment}: {self.disruptions_allowed} disruption(s) "
            f"allowed, {self.current_healthy}/{self.desired_healthy} healthy; the rollout takes down "
            f"{self.rollout_takes_down} at a time"
        )


def disruption_budgets(
    kube: Kubernetes, deployments: Iterable[KubernetesDeploymentSettings]
) -> list[DisruptionBudget]:
    """PodDisruptionBudgets over the release's pods. A rolling update with maxUnavailable 0 takes
    nothing down; otherwise the budget must allow maxUnavailable disruptions, and none may be
    below its desired healthy count already (then any further loss breaks it)."""
    budgets = kube.read(
        "list", "poddisruptionbudgets", kube.policy.list_namespaced_pod_disruption_budget, kube.namespace
    ).items
    found = []
    for settings in deployments:
        deployment = kube.deployment(settings.name)
        labels = deployment.spec.template.metadata.labels if deployment.spec.template.metadata else {}
        replicas = deployment.spec.replicas if deployment.spec.replicas is not None else 1
        down = resolve_count(settings.max_unavailable, replicas, round_up=False)
        for budget in budgets:
            if selector_matches(budget.spec.selector, labels):
                status = budget.status
                found.append(
                    DisruptionBudget(
                        budget.metadata.name,
                        settings.name,
                        disruptions_allowed=(status.disruptions_allowed or 0) if status else 0,
                        current_healthy=(status.current_healthy or 0) if status else 0,
                        desired_healthy=(status.desired_healthy or 0) if status else 0,
                        rollout_takes_down=down,
                    )
                )
    return found


# -- rollout checks -------------------------------------------------------------------------


def restart_counts(kube: Kubernetes, settings: KubernetesDeploymentSettings) -> dict[str, int]:
    """Container restarts of each pod of the deployment's current template."""
    deployment = kube.deployment(settings.name)
    return {
        p.metadata.name: restarts(p, settings.container)
        for p in kube.new_pods(deployment, settings.container)
    }


def error_log_lines(
    kube: Kubernetes,
    settings: KubernetesDeploymentSettings,
    *,
    since: datetime | None,
    pattern: str,
    tail_lines: int,
) -> list[str]:
    """``kubectl logs -l app=... | grep ERROR`` over the new pods, since ``since``: ``pod: line``."""
    deployment = kube.deployment(settings.name)
    pods = kube.new_pods(deployment, settings.container)
    return pods_error_lines(
        kube, pods, settings.container, since=since, pattern=pattern, tail_lines=tail_lines
    )


def pods_error_lines(
    kube: Kubernetes,
    pods: list[Any],
    container: str,
    *,
    since: datetime | None,
    pattern: str,
    tail_lines: int,
) -> list[str]:
    """The log lines of ``pods``' ``container`` that match ``pattern``: ``pod: line``."""
    matcher = re.compile(pattern)
    found = []
    for pod in pods:
        text = kube.pod_log(pod.metadata.name, container, since=since, tail_lines=tail_lines)
        found += [
            f"{pod.metadata.name}: {line.strip()}" for line in text.splitlines() if matcher.search(line)
        ]
    return found


# -- helpers --------------------------------------------------------------------------------


def _schedulable(node: Any) -> bool:
    ready = (
        next((c for c in (node.status.conditions or []) if c.type == "Ready"), None) if node.status else None
    )
    return bool(ready and ready.status == "True" and not (node.spec and node.spec.unschedulable))


def _requests(pod_spec: Any) -> tuple[float, float]:
    cpu = memory = 0.0
    for container in pod_spec.containers or []:
        requests = (container.resources.requests if container.resources else None) or {}
        cpu += quantity(requests.get("cpu"))
        memory += quantity(requests.get("memory"))
    return cpu, memory


def _owned_by(obj: Any, kind: str, name: str) -> bool:
    return any(ref.kind == kind and ref.name == name for ref in obj.metadata.owner_references or [])


def _where(resource: str, namespace: str | None) -> str:
    return f"{resource} in namespace {namespace}" if namespace else f"{resource} (cluster-wide)"


def _server_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        return _first_line(exc.body or "")
    return _first_line(body.get("message", "")) if isinstance(body, dict) else ""


def _first_line(value: object, limit: int = 240) -> str:
    text = str(value).strip()
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"
