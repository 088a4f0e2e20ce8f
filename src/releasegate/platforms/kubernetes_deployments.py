"""What changes a Deployment, and the wait and the checks after each change.

Every strategy (rolling, blue-green, canary) is made of these steps: ``kubectl set image``
(a JSON Patch on the container found by name, never a merge of the container list),
``kubectl patch ... strategy``, ``kubectl scale``, ``kubectl set env``, ``kubectl rollout undo
--to-revision``; then ``kubectl rollout status`` (failing fast, with the pod's own reason, on
CrashLoopBackOff, ImagePullBackOff, OOMKilled ...), then the deployment's health URL, its
restart counts and the ERROR lines its new pods logged since the change.

What a rollback needs is written on the Deployment itself before it changes (annotations
``releasegate.dev/undo-revision`` and ``undo-release``), so ``pytest rollback/`` finds it even
when the process that deployed was killed half way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from releasegate.config import KubernetesDeploymentSettings, KubernetesPlatformSettings
from releasegate.errors import ActionError, ProbeError
from releasegate.platforms.base import Instance, Progress
from releasegate.probes.kubernetes import Kubernetes, error_log_lines, restart_counts
from releasegate.probes.kubernetes_objects import (
    TEMPLATE_HASH,
    container_image,
    container_index,
    pod_failure,
    pod_ready,
    revision_of,
    rollout_state,
)
from releasegate.release_names import Commits, fill, parse

UNDO_REVISION = "releasegate.dev/undo-revision"
UNDO_RELEASE = "releasegate.dev/undo-release"
ROLLING_TO = "releasegate.dev/rolling-to"
MAINTENANCE_REPLICAS = "releasegate.dev/maintenance-replicas"


@dataclass(frozen=True)
class UndoRecord:
    """What a deployment ran before releasegate changed it."""

    deployment: str
    revision: int | None
    release: str | None
    rolling_to: str | None


class Deployments:
    """The Deployment steps every strategy is made of (see the module docstring)."""

    def __init__(
        self, kube: Kubernetes, settings: KubernetesPlatformSettings, commits: Commits | None = None
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.commits = commits
        """The release's git tags, for images named by its commit (``prod-{sha}``)."""

    # -- reading ------------------------------------------------------------------------------

    def get(self, name: str) -> Any:
        """The Deployment. releasegate changes Deployments, it does not create them: a missing
        one is a one-line error saying so (HelmPlatform reads it as "nothing installed yet")."""
        try:
            return self.kube.deployment(name)
        except ProbeError as exc:
            if not missing(exc):
                raise
            if self.kube.namespace_exists() is False:  # the API answers as for a missing Deployment
                raise ProbeError(
                    exc.component,
                    exc.problem,
                    f"namespace {self.kube.namespace} does not exist on this cluster: correct "
                    "[platform.kubernetes] namespace (or context), or create the namespace",
                ) from None
            raise ProbeError(
                exc.component,
                exc.problem,
                f"releasegate sets the image of an existing Deployment: create deployment {name} in "
                f"namespace {self.kube.namespace} first (kubectl apply, or install its chart through "
                "[platform.kubernetes.helm]), or correct its name in [[platform.kubernetes.deployments]]",
            ) from None

    def release(self, spec: KubernetesDeploymentSettings, deployment: Any | None = None) -> str | None:
        """The release a deployment's template runs, read from its image through the template."""
        deployment = deployment or self.get(spec.name)
        image = container_image(deployment.spec.template.spec, spec.container)
        return parse(image, spec.image, self.commits)

    def undo_record(self, spec: KubernetesDeploymentSettings, deployment: Any | None = None) -> UndoRecord:
        deployment = deployment or self.get(spec.name)
        annotations = deployment.metadata.annotations or {}
        revision = annotations.get(UNDO_REVISION)
        return UndoRecord(
            spec.name,
            int(revision) if revision and revision.isdigit() else None,
            annotations.get(UNDO_RELEASE) or None,
            annotations.get(ROLLING_TO) or None,
        )

    # -- changes ------------------------------------------------------------------------------

    def record_undo(self, spec: KubernetesDeploymentSettings, target: str, deployment: Any) -> UndoRecord:
        """Write down what runs now, before it changes. A second attempt at the same target keeps
        the first record: after a killed rollout, the template already is half the new one."""
        record = self.undo_record(spec, deployment)
        if record.rolling_to == target and (record.revision is not None or record.release is not None):
            return record
        revision = revision_of(deployment)
        release = self.release(spec, deployment)
        self.annotate(
            spec.name,
            {
                UNDO_REVISION: str(revision) if revision is not None else None,
                UNDO_RELEASE: release,
                ROLLING_TO: target,
            },
        )
        return UndoRecord(spec.name, revision, release, target)

    def settle_undo(self, spec: KubernetesDeploymentSettings) -> None:
        """After a rollback: the record names what runs now (a second rollback changes nothing)
        and no rollout is under way (the next deploy writes a fresh record)."""
        deployment = self.get(spec.name)
        revision = revision_of(deployment)
        self.annotate(
            spec.name,
            {
                UNDO_REVISION: str(revision) if revision is not None else None,
                UNDO_RELEASE: self.release(spec, deployment),
                ROLLING_TO: None,
            },
        )

    def annotate(self, name: str, annotations: dict[str, str | None]) -> None:
        """Set (or, with None, remove) annotations on the Deployment: metadata only, no rollout."""
        self.kube.write(
            "patch",
            f"deployments/{name}",
            self.kube.apps.patch_namespaced_deployment,
            name,
            self.kube.namespace,
            {"metadata": {"annotations": annotations}},
        )

    def set_image(
        self,
        spec: KubernetesDeploymentSettings,
        release: str,
        deployment: Any,
        replicas: int | None = None,
        labels: dict[str, str] | None = None,
    ) -> str:
        """``kubectl set image deployment/NAME CONTAINER=IMAGE`` as a JSON Patch; the ``test``
        operation makes sure the index found still holds that container when the patch lands.
        ``replicas`` and pod ``labels`` go in the same patch: one template change, one rollout."""
        image = fill(spec.image, release, self.commits)
        index = self._index(spec, deployment)
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": f"/spec/template/spec/containers/{index}/name", "value": spec.container},
            {"op": "replace", "path": f"/spec/template/spec/containers/{index}/image", "value": image},
        ]
        if replicas is not None:
            ops.append({"op": "replace", "path": "/spec/replicas", "value": replicas})
        for key, value in (labels or {}).items():
            pointer = key.replace("~", "~0").replace("/", "~1")
            ops.append({"op": "add", "path": f"/spec/template/metadata/labels/{pointer}", "value": value})
        self._json_patch(spec.name, ops)
        return image

    def set_strategy(self, spec: KubernetesDeploymentSettings) -> None:
        """``kubectl patch deployment ... RollingUpdate maxSurge/maxUnavailable`` (RM step 5)."""
        strategy = {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": spec.max_surge, "maxUnavailable": spec.max_unavailable},
        }
        self._json_patch(spec.name, [{"op": "add", "path": "/spec/strategy", "value": strategy}])

    def strategy_mismatch(self, spec: KubernetesDeploymentSettings, deployment: Any) -> str | None:
        """How the deployment's strategy differs from the environment's, or None."""
        strategy = deployment.spec.strategy
        kind = (strategy.type if strategy else None) or "RollingUpdate"
        rolling = strategy.rolling_update if strategy else None
        surge = rolling.max_surge if rolling and rolling.max_surge is not None else "25%"
        unavailable = rolling.max_unavailable if rolling and rolling.max_unavailable is not None else "25%"
        if (
            kind == "RollingUpdate"
            and str(surge) == str(spec.max_surge)
            and str(unavailable) == str(spec.max_unavailable)
        ):
            return None
        has = (
            kind
            if kind != "RollingUpdate"
            else f"RollingUpdate maxSurge {surge}, maxUnavailable {unavailable}"
        )
        return (
            f"deployment {spec.name} uses {has}; the environment expects RollingUpdate "
            f"maxSurge {spec.max_surge}, maxUnavailable {spec.max_unavailable}"
        )

    def scale(self, name: str, replicas: int) -> None:
        """``kubectl scale deployment/NAME --replicas=N`` through the scale subresource."""
        self.kube.write(
            "patch",
            f"deployments/{name}/scale",
            self.kube.apps.patch_namespaced_deployment_scale,
            name,
            self.kube.namespace,
            {"spec": {"replicas": replicas}},
        )

    def set_env(self, spec: KubernetesDeploymentSettings, variable: str, value: str | None) -> str | None:
        """``kubectl set env``: the container's whole env list replaced (idempotent); returns the
        previous value (None when unset). ``value`` None removes the variable."""
        deployment = self.get(spec.name)
        index = self._index(spec, deployment)
        container = deployment.spec.template.spec.containers[index]
        current = [self.kube.api_client.sanitize_for_serialization(e) for e in container.env or []]
        previous = next((e.get("value") for e in current if e.get("name") == variable), None)
        wanted = [e for e in current if e.get("name") != variable]
        if value is not None:
            wanted.append({"name": variable, "value": value})
        self._json_patch(
            spec.name,
            [
                {
                    "op": "test",
                    "path": f"/spec/template/spec/containers/{index}/name",
                    "value": spec.container,
                },
                {"op": "add", "path": f"/spec/template/spec/containers/{index}/env", "value": wanted},
            ],
        )
        return previous

    def undo_to_revision(self, spec: KubernetesDeploymentSettings, revision: int, deployment: Any) -> bool:
        """``kubectl rollout undo --to-revision=N``: the ReplicaSet of that revision gives its pod
        template back (without its pod-template-hash label). False when it already runs."""
        sets = self.kube.replica_sets(deployment)
        chosen = next((rs for rs in sets if revision_of(rs) == revision), None)
        if chosen is None:
            known = ", ".join(str(revision_of(rs)) for rs in sets) or "none"
            raise ActionError(
                f"deployment {spec.name}: no ReplicaSet has revision {revision} (revisions: {known})"
            )
        template = self.kube.api_client.sanitize_for_serialization(chosen.spec.template)
        template.setdefault("metadata", {}).setdefault("labels", {}).pop(TEMPLATE_HASH, None)
        current = self.kube.api_client.sanitize_for_serialization(deployment.spec.template)
        if current == template:
            return False
        self._json_patch(spec.name, [{"op": "replace", "path": "/spec/template", "value": template}])
        return True

    def previous_revision(self, deployment: Any) -> int | None:
        """The revision before the current one: where a plain ``kubectl rollout undo`` goes."""
        current = revision_of(deployment)
        older = [
            r
            for rs in self.kube.replica_sets(deployment)
            if (r := revision_of(rs)) is not None and (current is None or r < current)
        ]
        return max(older) if older else None

    # -- waiting and checking -------------------------------------------------------------------

    def wait(
        self, spec: KubernetesDeploymentSettings, say: Progress, timeout_s: float | None = None
    ) -> str | None:
        """``kubectl rollout status`` with a progress line per change; the failure line or None.

        Fails at once, with the pod's reason, when a new pod cannot become ready by itself
        (CrashLoopBackOff, ImagePullBackOff, ErrImagePull, OOMKilled, CreateContainerConfigError)
        and when the Deployment reports ProgressDeadlineExceeded."""
        timeout_s = timeout_s or self.settings.rollout_timeout_s
        started = time.monotonic()
        last = ""
        while True:
            deployment = self.get(spec.name)
            state = rollout_state(deployment)
            elapsed = time.monotonic() - started
            if state.message != last:
                say(f"{state.message} ({elapsed:.1f} s)")
                last = state.message
            new_pods = self.kube.new_pods(deployment, spec.container) if state.observed else []
            failure = next((f for p in new_pods if (f := pod_failure(p))), None)
            if failure:
                return f"deployment {spec.name}: {failure} ({elapsed:.1f} s into the rollout)"
            if state.failed:
                return state.failed + _not_ready(new_pods)
            if state.done:
                return None
            if elapsed > timeout_s:
                return f"deployment {spec.name} not rolled out within {timeout_s:g} s: {state.message}{_not_ready(new_pods)}"
            time.sleep(min(self.settings.poll_interval_s, max(timeout_s - elapsed, 0.01)))

    def wait_scaled_down(self, name: str, say: Progress) -> str | None:
        """Until no pod of the deployment is left (a scale to 0 that finished)."""
        started = time.monotonic()
        while True:
            deployment = self.get(name)
            pods = self.kube.pods(deployment.spec.selector)
            if not pods and not (deployment.status and deployment.status.replicas):
                say(f"deployment {name}: no pod left ({time.monotonic() - started:.1f} s)")
                return None
            if time.monotonic() - started > self.settings.rollout_timeout_s:
                return f"deployment {name}: {len(pods)} pod(s) still running {self.settings.rollout_timeout_s:g} s after scaling to 0"
            time.sleep(self.settings.poll_interval_s)

    def verify(
        self, spec: KubernetesDeploymentSettings, since: datetime, say: Progress, *, deep: bool = True
    ) -> str | None:
        """After a rollout: the health URL answers 200; with ``deep`` (a new release, not a
        rollback to pods that may have restarted long ago) no new pod restarted more than
        allowed and none logged an ERROR line since the change (Granter 3.3, 4.2)."""
        if spec.health_url:
            failure = self.health(spec, say)
            if failure:
                return failure
        if not deep:
            return None
        counts = restart_counts(self.kube, spec)
        lines = error_log_lines(
            self.kube,
            spec,
            since=since,
            pattern=self.settings.log_error_pattern,
            tail_lines=self.settings.log_tail_lines,
        )
        return new_pods_failure(f"deployment {spec.name}", counts, lines, self.settings, say, since)

    def health(self, spec: KubernetesDeploymentSettings, say: Progress) -> str | None:
        """GET health_url until it answers 200, for at most health_timeout_s."""
        assert spec.health_url is not None
        deadline = time.monotonic() + spec.health_timeout_s
        last = ""
        with httpx.Client(
            timeout=min(self.settings.request_timeout_s, spec.health_timeout_s), trust_env=False
        ) as http:
            while True:
                try:
                    response = http.get(spec.health_url)
                    if response.status_code == 200:
                        say(f"deployment {spec.name}: GET {spec.health_url} -> 200")
                        return None
                    last = str(response.status_code)
                except httpx.HTTPError as exc:
                    last = str(exc) or type(exc).__name__
                if time.monotonic() > deadline:
                    return (
                        f"deployment {spec.name}: GET {spec.health_url} -> {last} "
                        f"(no 200 within {spec.health_timeout_s:g} s)"
                    )
                time.sleep(min(self.settings.poll_interval_s, 1.0))

    # -- helpers --------------------------------------------------------------------------------

    def _index(self, spec: KubernetesDeploymentSettings, deployment: Any) -> int:
        try:
            return container_index(deployment.spec.template.spec, spec.container)
        except LookupError as exc:
            raise ActionError(f"deployment {spec.name}: {exc}") from None

    def _json_patch(self, name: str, ops: list[dict[str, Any]]) -> None:
        self.kube.write(
            "patch",
            f"deployments/{name}",
            self.kube.apps.patch_namespaced_deployment,
            name,
            self.kube.namespace,
            ops,
        )


def new_pods_failure(
    what: str,
    counts: dict[str, int],
    lines: list[str],
    settings: KubernetesPlatformSettings,
    say: Progress,
    since: datetime | None = None,
) -> str | None:
    """The verdict on a new release's pods (Granter 3.3, 4.2; Summit GA 4.3): none restarted more
    than max_restarts, at most max_error_log_lines log lines match log_error_pattern."""
    worst = max(counts.items(), key=lambda item: item[1], default=None)
    if worst and worst[1] > settings.max_restarts:
        return (
            f"{what}: pod {worst[0]} restarted {worst[1]} time(s) (at most {settings.max_restarts} allowed)"
        )
    if len(lines) > settings.max_error_log_lines:
        when = f"since {since:%H:%M:%S}" if since else "in their logs"
        return (
            f"{what}: {len(lines)} log line(s) match {settings.log_error_pattern} {when} "
            f"(at most {settings.max_error_log_lines}); first: {lines[0]}"
        )
    say(
        f"{what}: restarts {sum(counts.values())}, {len(lines)} log line(s) matching "
        f"{settings.log_error_pattern} in {len(counts)} new pod(s)"
    )
    return None


def now() -> datetime:
    return datetime.now(UTC)


def missing(exc: ProbeError) -> bool:
    """The API server answered 404 (probes.kubernetes words it so): the object is not there."""
    return exc.problem.startswith("404 ")


def _not_ready(pods: list[Any]) -> str:
    waiting = [p for p in pods if not pod_ready(p)]
    if not waiting:
        return ""
    shown = ", ".join(f"{p.metadata.name} ({_phase(p)})" for p in waiting[:3])
    return f"; {len(waiting)} new pod(s) not ready: {shown}"


def _phase(pod: Any) -> str:
    phase = (pod.status.phase if pod.status else None) or "Pending"
    for status in (pod.status.container_statuses if pod.status else None) or []:
        if status.state and status.state.waiting and status.state.waiting.reason:
            return f"{phase}, {status.state.waiting.reason}"
    return f"{phase}, not ready" if phase == "Running" else phase


def instance_of(pod: Any, container_name: str, template: str, commits: Commits | None = None) -> Instance:
    """A pod as the gates see an instance: its release (from the image), address and readiness."""
    image = container_image(pod.spec, container_name)
    release = parse(image, template, commits) or image or "?"
    container = next((c for c in pod.spec.containers if c.name == container_name), None)
    port = container.ports[0].container_port if container and container.ports else None
    ip = pod.status.pod_ip if pod.status else None
    url = f"http://{ip}:{port}" if ip and port else f"http://{ip}" if ip else ""
    phase = (pod.status.phase if pod.status else None) or "Pending"
    node = pod.spec.node_name or "unscheduled"
    return Instance(pod.metadata.name, release, url, pod_ready(pod), detail=f"{phase} on {node}")
