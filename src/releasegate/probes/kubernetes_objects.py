"""What a Kubernetes object says, read the way kubectl reads it: pure functions, no I/O.

The objects are the official client's models (``V1Deployment``, ``V1Pod`` ...). Everything that
decides "is this rollout done", "why did this pod fail", "which release is this image" lives
here, so the platform and the preflight probes judge the cluster the same way.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

REVISION = "deployment.kubernetes.io/revision"
TEMPLATE_HASH = "pod-template-hash"

FATAL_WAITING = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)
"""Container waiting reasons that will not fix themselves: a rollout fails at once on them."""

FATAL_TERMINATED = frozenset({"OOMKilled"})

_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")
_SUFFIX = {
    "": 1.0,
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
    "Pi": 2.0**50,
    "Ei": 2.0**60,
}


def container_index(pod_spec: Any, name: str) -> int:
    """Where container ``name`` sits in the pod spec: JSON Patch addresses containers by index."""
    for index, container in enumerate(pod_spec.containers or []):
        if container.name == name:
            return index
    names = ", ".join(c.name for c in pod_spec.containers or []) or "none"
    raise LookupError(f"no container named {name!r} (containers: {names})")


def container_image(pod_spec: Any, name: str) -> str | None:
    for container in pod_spec.containers or []:
        if container.name == name:
            return container.image
    return None


# -- labels and selectors ---------------------------------------------------------------------


def selector_matches(selector: Any, labels: dict[str, str] | None) -> bool:
    """Whether a label selector (model or dict) selects ``labels``; an empty selector selects nothing."""
    labels = labels or {}
    match_labels, expressions = _selector_parts(selector)
    if not match_labels and not expressions:
        return False
    if any(labels.get(key) != value for key, value in match_labels.items()):
        return False
    for key, operator, values in expressions:
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def selector_string(selector: Any) -> str:
    """The ``labelSelector`` query for a selector: the server filters, the caller checks again."""
    match_labels, expressions = _selector_parts(selector)
    parts = [f"{key}={value}" for key, value in sorted(match_labels.items())]
    for key, operator, values in expressions:
        if operator == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif operator == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif operator == "Exists":
            parts.append(key)
        elif operator == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def _selector_parts(selector: Any) -> tuple[dict[str, str], list[tuple[str, str, list[str]]]]:
    if selector is None:
        return {}, []
    if isinstance(selector, dict):
        if "matchLabels" in selector or "matchExpressions" in selector:
            raw = selector.get("matchExpressions") or []
            expressions = [(e["key"], e["operator"], list(e.get("values") or [])) for e in raw]
            return dict(selector.get("matchLabels") or {}), expressions
        return dict(selector), []  # a Service's plain map selector
    expressions = [(e.key, e.operator, list(e.values or [])) for e in selector.match_expressions or []]
    return dict(selector.match_labels or {}), expressions


# -- quantities and surge ---------------------------------------------------------------------


def quantity(value: str | int | float | None) -> float:
    """A Kubernetes quantity (``250m``, ``512Mi``, ``1.5``) as a plain number (cores, bytes)."""
    if value is None or value == "":
        return 0.0
    if isinstance(value, int | float):
        return float(value)
    match = _QUANTITY.match(value.strip())
    if not match or match.group(2) not in _SUFFIX:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


def resolve_count(value: int | str | None, replicas: int, *, round_up: bool) -> int:
    """maxSurge / maxUnavailable as a pod count: percentages round up for surge, down otherwise."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    if value.endswith("%"):
        exact = replicas * float(value[:-1]) / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(value)


# -- deployments ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RolloutState:
    """One look at a Deployment, as ``kubectl rollout status`` would print it."""

    done: bool
    message: str
    failed: str | None = None
    observed: bool = True
    """The controller has seen the latest spec: until then, its status and pods are the old ones."""


def revision_of(obj: Any) -> int | None:
    annotations = (obj.metadata.annotations if obj.metadata else None) or {}
    try:
        return int(annotations[REVISION])
    except (KeyError, ValueError):
        return None


def rollout_state(deployment: Any) -> RolloutState:
    """kubectl's rule: the spec change is observed, every replica is updated, ready and available,
    no old replica is left; a Progressing condition with ProgressDeadlineExceeded is a failure."""
    name = deployment.metadata.name
    status = deployment.status
    generation = deployment.metadata.generation or 0
    observed = (status.observed_generation if status else None) or 0
    if generation > observed:
        return RolloutState(
            False, f"waiting for deployment {name} spec update to be observed", observed=False
        )
    for condition in (status.conditions if status else None) or []:
        if condition.type == "Progressing" and condition.reason == "ProgressDeadlineExceeded":
            detail = f": {condition.message}" if condition.message else ""
            return RolloutState(
                False,
                "progress deadline exceeded",
                f"deployment {name} exceeded its progress deadline (ProgressDeadlineExceeded){detail}",
            )
    desired = deployment.spec.replicas if deployment.spec.replicas is not None else 1
    replicas = status.replicas or 0
    updated = status.updated_replicas or 0
    ready = status.ready_replicas or 0
    available = status.available_replicas or 0
    waiting = f"waiting for deployment {name} rollout to finish"
    if updated < desired:
        return RolloutState(False, f"{waiting}: {updated} of {desired} new replicas updated")
    if replicas > updated:
        return RolloutState(False, f"{waiting}: {replicas - updated} old replicas pending termination")
    if ready < updated:
        return RolloutState(False, f"{waiting}: {ready} of {updated} updated replicas ready")
    if available < updated:
        return RolloutState(False, f"{waiting}: {available} of {updated} updated replicas available")
    return RolloutState(True, f"deployment {name} successfully rolled out ({desired}/{desired} ready)")


# -- pods -------------------------------------------------------------------------------------


def not_terminating(pods: list[Any]) -> list[Any]:
    """The pods that are not on their way out: a pod being deleted has left its Service's
    endpoints already and is no instance of the release any more, though the API lists it
    until its grace period ends."""
    return [p for p in pods if not p.metadata.deletion_timestamp]


def pod_ready(pod: Any) -> bool:
    for condition in (pod.status.conditions if pod.status else None) or []:
        if condition.type == "Ready":
            return condition.status == "True"
    return False


def restarts(pod: Any, container: str | None = None) -> int:
    statuses = (pod.status.container_statuses if pod.status else None) or []
    return sum(s.restart_count or 0 for s in statuses if container is None or s.name == container)


def pod_failure(pod: Any) -> str | None:
    """Why a pod will not become ready on its own (CrashLoopBackOff, OOMKilled ...), or None."""
    fatal = _fatal(pod)
    return fatal[1] if fatal else None


def pod_not_ready(pod: Any) -> tuple[str, str] | None:
    """Why a pod is not Ready, as ``kubectl get pods`` (the reason) and ``kubectl describe pod``
    (the line) say it; None for a Ready pod. A reason that will not fix itself is pod_failure's;
    else the scheduler's (Pending: Unschedulable), a container's waiting reason, or "not ready"
    with the restarts and last exit, so a crash seen between two back-offs still shows."""
    if pod_ready(pod):
        return None
    fatal = _fatal(pod)
    if fatal:
        return fatal
    name = pod.metadata.name
    phase = (pod.status.phase if pod.status else None) or "Pending"
    for condition in (pod.status.conditions if pod.status else None) or []:
        if condition.type == "PodScheduled" and condition.status == "False" and condition.reason:
            detail = f" ({_one_line(condition.message)})" if condition.message else ""
            return condition.reason, f"pod {name}: {phase}: {condition.reason}{detail}"
    statuses = _statuses(pod)
    for status in statuses:
        waiting = status.state.waiting if status.state else None
        if waiting is not None and waiting.reason:
            return waiting.reason, f"pod {name} container {status.name}: {waiting.reason}{_exits(status)}"
    worst = max(statuses, key=lambda s: s.restart_count or 0, default=None)
    return "not ready", f"pod {name}: {phase}, not ready{_exits(worst) if worst else ''}"


def _statuses(pod: Any) -> list[Any]:
    statuses = list((pod.status.init_container_statuses if pod.status else None) or [])
    return statuses + list((pod.status.container_statuses if pod.status else None) or [])


def _exits(status: Any) -> str:
    """``, 2 restart(s), last exit Error (code 1)``: what a container's restarts say, or nothing."""
    last = status.last_state.terminated if status.last_state else None
    text = f", {status.restart_count} restart(s)" if status.restart_count else ""
    return text + (
        f", last exit {last.reason} (code {last.exit_code})" if last is not None and last.reason else ""
    )


def _fatal(pod: Any) -> tuple[str, str] | None:
    """pod_failure's reason (CrashLoopBackOff, OOMKilled ...) and line, or None."""
    for status in _statuses(pod):
        waiting = status.state.waiting if status.state else None
        last = status.last_state.terminated if status.last_state else None
        terminated = status.state.terminated if status.state else None
        where = f"pod {pod.metadata.name} container {status.name}"
        oom = next((t for t in (terminated, last) if t is not None and t.reason in FATAL_TERMINATED), None)
        if waiting is not None and waiting.reason in FATAL_WAITING:
            text = f"{where}: {waiting.reason}"
            if waiting.message:
                text += f" ({_one_line(waiting.message)})"
            if status.restart_count:
                text += f", {status.restart_count} restart(s)"
            if oom is not None:
                text += f", last exit {oom.reason} (code {oom.exit_code})"
            elif last is not None and last.reason:
                text += f", last exit {last.reason} (code {last.exit_code})"
            return waiting.reason, text
        if oom is not None:
            return oom.reason, (
                f"{where}: {oom.reason} (exit code {oom.exit_code}), {status.restart_count or 0} restart(s)"
            )
    return None


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
