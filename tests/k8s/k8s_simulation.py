"""A small stand-in for the controllers of a cluster, acting on the kmock emulator.

A thread ticks every ``tick_s`` (10 ms); each tick runs inside the emulator's event loop, between
two requests, so the world it writes is always consistent. It does what a cluster would:

- the Deployment controller: one ReplicaSet per pod template (named by a template hash, with a
  ``deployment.kubernetes.io/revision`` that grows, and an old ReplicaSet brought back gets the
  next revision, as ``kubectl rollout undo`` sees it); RollingUpdate scaling within maxSurge /
  maxUnavailable (unhealthy old pods go first), Recreate; the Deployment's status
  (observedGeneration, replicas, updated / ready / available) and its Progressing condition
  (NewReplicaSetAvailable, ReplicaSetUpdated, ProgressDeadlineExceeded after
  ``progressDeadlineSeconds`` without progress) and Available condition;
- the ReplicaSet controller and the kubelet: pods created and deleted to match each
  ReplicaSet, their statuses following the behaviour of their image (``Behaviour``): Ready after
  a while, or CrashLoopBackOff, ImagePullBackOff / ErrImagePull, OOMKilled,
  CreateContainerConfigError, never ready, N restarts; and their logs (``GET .../log``);
- the Argo Rollouts controller, for ``argoproj.io/v1alpha1`` Rollouts with canary steps:
  ``setWeight``, ``pause`` (with a duration, or until promoted), ``analysis`` (an AnalysisRun
  whose result is the image's ``Behaviour.analysis``; Failed aborts the Rollout), ``abort``,
  and a template set back to the stable one is a rollback that skips the steps.

LIMITS (what it does not model):

- no scheduler, resources or node capacity: pods land round-robin on the nodes; node metrics,
  PodDisruptionBudget status and Services are whatever the test wrote (no endpoints);
- no graceful termination: a deleted pod is gone at once; minReadySeconds is 0 (available
  means ready); progress is measured in real seconds at 10 ms resolution;
- pod logs ignore ``sinceSeconds``/``tailLines`` (every line of the image's behaviour is
  returned); ``labelSelector`` is ignored by kmock, as the client is told;
- the Argo controller keeps no pods or ReplicaSets of its own: weights, replica counts and
  phases are status fields only; blue-green Rollouts, experiments, promoteFull and
  background analysis are not modelled;
- the controllers write the emulator's store directly, not through the API: their changes
  appear in the next read, not in watches;
- kmock applies a write to its store even when a test's reaction answers it with an error
  (a 403 on a PATCH still patches): tests that refuse a write assert on what happened after it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kmock
from k8s_emulator import EmulatorThread

DEPLOYMENTS = kmock.resource(group="apps", version="v1", plural="deployments")
REPLICASETS = kmock.resource(group="apps", version="v1", plural="replicasets")
PODS = kmock.resource(group="", version="v1", plural="pods")
NODES = kmock.resource(group="", version="v1", plural="nodes")
ROLLOUTS = kmock.resource(group="argoproj.io", version="v1alpha1", plural="rollouts")
ANALYSISRUNS = kmock.resource(group="argoproj.io", version="v1alpha1", plural="analysisruns")
REVISION = "deployment.kubernetes.io/revision"
HASH = "pod-template-hash"
_LOG_PATH = re.compile(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/log")


@dataclass(frozen=True)
class Behaviour:
    """What the pods of one image do."""

    ready_after_s: float = 0.05
    fault: str | None = None
    """CrashLoopBackOff, ImagePullBackOff, ErrImagePull, OOMKilled, CreateContainerConfigError, NeverReady."""
    fault_after_s: float = 0.15
    restarts: int = 0
    logs: tuple[str, ...] = ("INFO started", "INFO ready")
    analysis: str = "Successful"
    """How an Argo AnalysisRun of this image ends: Successful or Failed."""


class Simulation:
    """The controllers (see the module docstring), started and stopped by the tests."""

    def __init__(self, emulator: EmulatorThread, tick_s: float = 0.01) -> None:
        self.emulator = emulator
        self.server = emulator.server
        self.tick_s = tick_s
        self.behaviours: dict[str, Behaviour] = {}
        self._born: dict[tuple[str, str], float] = {}
        self._progress: dict[tuple[str, str], tuple[Any, float]] = {}
        self._argo: dict[tuple[str, str], dict[str, Any]] = {}
        self._names = itertools.count(1)
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._thread = threading.Thread(target=self._run, name="k8s-simulation", daemon=True)
        self.errors: list[BaseException] = []

    def start(self) -> Simulation:
        self.emulator.call(self._install_log_reaction)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def pause(self, seconds: float) -> None:
        """Let the controllers lag for ``seconds``, as a busy cluster does."""
        self._paused.set()
        threading.Timer(seconds, self._paused.clear).start()

    def settle(self, condition: Callable[[], bool], timeout_s: float = 10) -> None:
        """Wait until ``condition`` holds (checked between ticks); fail the test otherwise."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if self.errors:
                raise self.errors[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"the simulated cluster did not settle within {timeout_s:g} s")
            time.sleep(self.tick_s)

    # -- the loop ---------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._paused.is_set():
                time.sleep(self.tick_s)
                continue
            try:
                self.emulator.call(self._tick)
            except BaseException as exc:  # surfaced by settle() and the fixture's teardown
                self.errors.append(exc)
                return
            time.sleep(self.tick_s)

    def _tick(self) -> None:
        now = time.monotonic()
        for (resource, namespace, _name), obj in list(self.server.objects.items()):
            if obj.deleted:
                continue
            if resource == DEPLOYMENTS:
                self._deployment(namespace, obj, now)
            elif resource == ROLLOUTS:
                self._rollout(namespace, obj, now)
        for (resource, namespace, _name), obj in list(self.server.objects.items()):
            if resource == REPLICASETS and not obj.deleted:
                self._replica_set(namespace, obj, now)
        for (resource, namespace, name), obj in list(self.server.objects.items()):
            if resource == PODS and not obj.deleted:
                self._kubelet(namespace, name, obj, now)
        for (resource, namespace, _name), obj in list(self.server.objects.items()):
            if resource == DEPLOYMENTS and not obj.deleted:
                self._deployment_status(namespace, obj, now)

    # -- Deployments --------------------------------------------------------------------------------

    def _deployment(self, namespace: str, obj: Any, now: float) -> None:
        raw = obj.raw
        name = raw["metadata"]["name"]
        spec = raw.get("spec") or {}
        template = spec.get("template") or {}
        template_hash = _hash(template)
        sets = self._owned(REPLICASETS, namespace, "Deployment", name)
        top = max((_revision(rs.raw) for rs in sets), default=0)
        current = next((rs for rs in sets if rs.raw["metadata"]["labels"].get(HASH) == template_hash), None)
        if current is None:
            current = self._create_replica_set(namespace, name, template, template_hash, top + 1)
            sets.append(current)
        elif _revision(current.raw) != top:
            _set_annotation(current, REVISION, str(top + 1))
        revision = _revision(current.raw)
        if (raw["metadata"].get("annotations") or {}).get(REVISION) != str(revision):
            _set_annotation(obj, REVISION, str(revision))

        desired = spec.get("replicas", 1)
        strategy = spec.get("strategy") or {}
        old = sorted((rs for rs in sets if rs is not current), key=lambda rs: _revision(rs.raw))
        pods = {
            rs.raw["metadata"]["name"]: self._pods_of(namespace, rs.raw["metadata"]["name"]) for rs in sets
        }
        if strategy.get("type") == "Recreate":
            if any(_replicas(rs) for rs in old) or any(pods[rs.raw["metadata"]["name"]] for rs in old):
                for rs in old:
                    _set_replicas(rs, 0)
                _set_replicas(current, 0)
            else:
                _set_replicas(current, desired)
            return
        rolling = strategy.get("rollingUpdate") or {}
        surge = _count(rolling.get("maxSurge", "25%"), desired, up=True)
        unavailable = _count(rolling.get("maxUnavailable", "25%"), desired, up=False)
        if surge == 0 and unavailable == 0:
            unavailable = 1
        total = sum(_replicas(rs) for rs in sets)
        new = _replicas(current)
        if new < desired:
            new = min(desired, new + max(0, desired + surge - total))
        elif new > desired:
            new = desired
        _set_replicas(current, new)
        ready = sum(1 for group in pods.values() for pod in group if _ready(pod.raw))
        floor = desired - unavailable
        for rs in old:
            group = pods[rs.raw["metadata"]["name"]]
            replicas = _replicas(rs)
            replicas -= min(replicas, sum(1 for pod in group if not _ready(pod.raw)))
            cut = min(replicas, max(0, ready - floor))
            ready -= cut
            _set_replicas(rs, replicas - cut)

    def _create_replica_set(
        self, namespace: str, deployment: str, template: dict[str, Any], template_hash: str, revision: int
    ) -> Any:
        name = f"{deployment}-{template_hash}"
        labels = {**(template.get("metadata") or {}).get("labels", {}), HASH: template_hash}
        pod_template = json.loads(json.dumps(template))
        pod_template.setdefault("metadata", {})["labels"] = labels
        self.server.objects[REPLICASETS, namespace, name] = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": labels,
                "annotations": {REVISION: str(revision)},
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": deployment,
                        "uid": deployment,
                        "controller": True,
                    }
                ],
                "creationTimestamp": _timestamp(),
            },
            "spec": {"replicas": 0, "selector": {"matchLabels": labels}, "template": pod_template},
            "status": {"replicas": 0},
        }
        return self.server.objects[REPLICASETS, namespace, name]

    def _deployment_status(self, namespace: str, obj: Any, now: float) -> None:
        raw = obj.raw
        name = raw["metadata"]["name"]
        spec = raw.get("spec") or {}
        desired = spec.get("replicas", 1)
        template_hash = _hash(spec.get("template") or {})
        sets = self._owned(REPLICASETS, namespace, "Deployment", name)
        current = next((rs for rs in sets if rs.raw["metadata"]["labels"].get(HASH) == template_hash), None)
        every = [pod for rs in sets for pod in self._pods_of(namespace, rs.raw["metadata"]["name"])]
        new = self._pods_of(namespace, current.raw["metadata"]["name"]) if current else []
        ready = sum(1 for pod in every if _ready(pod.raw))
        updated_ready = sum(1 for pod in new if _ready(pod.raw))
        rs_name = current.raw["metadata"]["name"] if current else name
        complete = len(new) == desired and len(every) == desired and ready == desired
        marker = (template_hash, len(new), updated_ready, len(every), desired)
        seen, since = self._progress.get((namespace, name), (None, now))
        if seen != marker:
            since = now
            self._progress[namespace, name] = (marker, now)
        deadline = spec.get("progressDeadlineSeconds", 600)
        if complete:
            progressing = (
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rs_name}" has successfully progressed.',
            )
        elif now - since > deadline:
            progressing = (
                "False",
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{rs_name}" has timed out progressing.',
            )
        else:
            progressing = ("True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')
        rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
        floor = desired - _count(rolling.get("maxUnavailable", "25%"), desired, up=False)
        available = (
            ("True", "MinimumReplicasAvailable")
            if ready >= floor
            else ("False", "MinimumReplicasUnavailable")
        )
        obj["status"] = {
            "observedGeneration": raw["metadata"].get("generation", 1),
            "replicas": len(every),
            "updatedReplicas": len(new),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": max(desired - ready, 0),
            "conditions": [
                {"type": "Available", "status": available[0], "reason": available[1]},
                {
                    "type": "Progressing",
                    "status": progressing[0],
                    "reason": progressing[1],
                    "message": progressing[2],
                },
            ],
        }

    # -- ReplicaSets and pods -----------------------------------------------------------------------

    def _replica_set(self, namespace: str, obj: Any, now: float) -> None:
        raw = obj.raw
        name = raw["metadata"]["name"]
        want = raw["spec"].get("replicas", 0)
        pods = self._pods_of(namespace, name)
        for _ in range(want - len(pods)):
            self._create_pod(namespace, raw, now)
        if len(pods) > want:
            doomed = sorted(
                pods,
                key=lambda p: (_ready(p.raw), -self._born.get((namespace, p.raw["metadata"]["name"]), 0)),
            )
            for pod in doomed[: len(pods) - want]:
                pod.delete()
        pods = self._pods_of(namespace, name)
        ready = sum(1 for pod in pods if _ready(pod.raw))
        obj["status"] = {"replicas": len(pods), "readyReplicas": ready, "availableReplicas": ready}

    def _create_pod(self, namespace: str, replica_set: dict[str, Any], now: float) -> None:
        number = next(self._names)
        name = f"{replica_set['metadata']['name']}-{number:05x}"
        template = replica_set["spec"]["template"]
        nodes = sorted(
            key[2] for key, node in self.server.objects.items() if key[0] == NODES and not node.deleted
        )
        spec = json.loads(json.dumps(template.get("spec") or {}))
        spec["nodeName"] = nodes[number % len(nodes)] if nodes else "node-1"
        self._born[namespace, name] = now
        self.server.objects[PODS, namespace, name] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": dict(template["metadata"]["labels"]),
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "name": replica_set["metadata"]["name"],
                        "uid": replica_set["metadata"]["name"],
                        "controller": True,
                    }
                ],
                "creationTimestamp": _timestamp(),
                "uid": f"pod-{number}",
            },
            "spec": spec,
            "status": {"phase": "Pending", "podIP": f"10.1.{number // 250}.{number % 250 + 1}"},
        }

    def _kubelet(self, namespace: str, name: str, obj: Any, now: float) -> None:
        raw = obj.raw
        age = now - self._born.setdefault((namespace, name), now)
        statuses = [self._container(c, age) for c in (raw.get("spec") or {}).get("containers", [])]
        ready = bool(statuses) and all(s["ready"] for s in statuses)
        waiting = [s["state"]["waiting"]["reason"] for s in statuses if "waiting" in s["state"]]
        phase = (
            "Pending"
            if any(
                r in ("ContainerCreating", "ErrImagePull", "ImagePullBackOff", "CreateContainerConfigError")
                for r in waiting
            )
            else "Running"
        )
        obj["status"] = {
            **(raw.get("status") or {}),
            "phase": phase,
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "True" if ready else "False"},
            ],
            "containerStatuses": statuses,
        }

    def _container(self, container: dict[str, Any], age: float) -> dict[str, Any]:
        image = container.get("image", "")
        behaviour = self.behaviours.get(image, Behaviour())
        status: dict[str, Any] = {
            "name": container["name"],
            "image": image,
            "imageID": "",
            "ready": False,
            "restartCount": 0,
            "started": False,
            "state": {},
        }
        running = {"running": {"startedAt": _timestamp()}}
        fault, after = behaviour.fault, behaviour.fault_after_s
        if age < 0.03:
            status["state"] = {"waiting": {"reason": "ContainerCreating"}}
        elif fault in ("ImagePullBackOff", "ErrImagePull"):
            reason = "ErrImagePull" if fault == "ErrImagePull" or age < after else "ImagePullBackOff"
            message = (
                f'Back-off pulling image "{image}"'
                if reason == "ImagePullBackOff"
                else f'failed to pull and unpack image "{image}": not found'
            )
            status["state"] = {"waiting": {"reason": reason, "message": message}}
        elif fault == "CreateContainerConfigError":
            status["state"] = {"waiting": {"reason": fault, "message": 'secret "app-secrets" not found'}}
        elif fault == "CrashLoopBackOff" and age >= after:
            status["restartCount"] = 1 + int((age - after) / 0.5)
            status["state"] = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off 10s restarting failed container={container['name']}",
                }
            }
            status["lastState"] = {"terminated": {"reason": "Error", "exitCode": 1}}
        elif fault == "OOMKilled" and age >= after:
            status["restartCount"] = 1
            status["state"] = running
            status["lastState"] = {"terminated": {"reason": "OOMKilled", "exitCode": 137}}
        else:
            status["state"] = running
            status["started"] = True
            status["ready"] = fault is None and age >= behaviour.ready_after_s
            if behaviour.restarts:
                status["restartCount"] = behaviour.restarts
                status["lastState"] = {"terminated": {"reason": "Error", "exitCode": 1}}
        return status

    def _install_log_reaction(self) -> None:
        self.server["get", _LOG_PATH] << kmock.headers({"Content-Type": "text/plain"}) << self._logs

    def _logs(self, request: Any) -> bytes:
        match = _LOG_PATH.fullmatch(request.url.path)
        assert match is not None
        key = (PODS, match.group(1), match.group(2))
        if key not in self.server.objects or self.server.objects[key].deleted:
            return b""
        containers = self.server.objects[key].raw["spec"].get("containers", [])
        wanted = request.params.get("container") or (containers[0]["name"] if containers else "")
        image = next((c.get("image", "") for c in containers if c["name"] == wanted), "")
        lines = self.behaviours.get(image, Behaviour()).logs
        return ("\n".join(lines) + "\n").encode() if lines else b""

    # -- Argo Rollouts ------------------------------------------------------------------------------

    def _rollout(self, namespace: str, obj: Any, now: float) -> None:
        raw = obj.raw
        name = raw["metadata"]["name"]
        spec = raw.get("spec") or {}
        steps = ((spec.get("strategy") or {}).get("canary") or {}).get("steps") or []
        template_hash = _hash(spec.get("template") or {})
        status = dict(raw.get("status") or {})
        memory = self._argo.setdefault((namespace, name), {"since": now, "paused_at": None})
        image = next(iter((spec.get("template") or {}).get("spec", {}).get("containers", [])), {}).get(
            "image", ""
        )
        behaviour = self.behaviours.get(image, Behaviour())
        replicas = spec.get("replicas", 1)
        status.update(observedGeneration=str(raw["metadata"].get("generation", 1)), replicas=replicas)

        def weight(canary: int) -> None:
            status["canary"] = {
                **(status.get("canary") or {}),
                "weights": {"canary": {"weight": canary}, "stable": {"weight": 100 - canary}},
            }

        def advance() -> None:
            status["currentStepIndex"] = status.get("currentStepIndex", 0) + 1
            memory.update(since=now, paused_at=None)

        if "stableRS" not in status:
            status.update(
                stableRS=template_hash,
                currentPodHash=template_hash,
                phase="Healthy",
                currentStepIndex=len(steps),
                message="",
            )
            weight(0)
        elif status.get("currentPodHash") != template_hash:
            status.update(
                currentPodHash=template_hash,
                currentStepIndex=0,
                pauseConditions=None,
                abort=None,
                message="",
                canary={},
            )
            memory.update(since=now, paused_at=None)
            if template_hash == status["stableRS"]:  # back to the stable template: a rollback, no steps
                status.update(phase="Healthy", currentStepIndex=len(steps))
                weight(0)
            else:
                status.update(phase="Progressing")
        if status.get("abort"):
            status["phase"] = "Degraded"
            status["message"] = (
                status.get("message") or f"RolloutAborted: Rollout aborted update to revision {template_hash}"
            )
            weight(0)
        elif template_hash != status["stableRS"]:
            index = status.get("currentStepIndex", 0)
            if index >= len(steps):
                status.update(stableRS=template_hash, phase="Healthy", message="", pauseConditions=None)
                weight(0)
            else:
                self._step(
                    namespace,
                    name,
                    steps[index],
                    index,
                    template_hash,
                    status,
                    memory,
                    behaviour,
                    now,
                    weight,
                    advance,
                )
        ready = replicas if status.get("phase") == "Healthy" else max(replicas - 1, 0)
        status.update(readyReplicas=ready, availableReplicas=ready, updatedReplicas=ready)
        obj["status"] = status

    def _step(
        self,
        namespace: str,
        rollout: str,
        step: dict[str, Any],
        index: int,
        template_hash: str,
        status: dict[str, Any],
        memory: dict[str, Any],
        behaviour: Behaviour,
        now: float,
        weight: Callable[[int], None],
        advance: Callable[[], None],
    ) -> None:
        status["phase"] = "Progressing"
        if "setWeight" in step:
            weight(int(step["setWeight"]))
            if now - memory["since"] >= behaviour.ready_after_s:
                advance()
        elif "pause" in step:
            duration = _seconds((step.get("pause") or {}).get("duration"))
            if memory["paused_at"] != index:
                memory["paused_at"] = index
                status["pauseConditions"] = [{"reason": "CanaryPauseStep", "startTime": _timestamp()}]
                status["phase"] = "Paused"
            elif not status.get("pauseConditions"):  # promoted
                advance()
            elif duration is not None and now - memory["since"] >= duration:
                status["pauseConditions"] = None
                advance()
            else:
                status["phase"] = "Paused"
        elif "analysis" in step:
            run = f"{rollout}-{template_hash}-{index}"
            key = (ANALYSISRUNS, namespace, run)
            templates = [t.get("templateName", "") for t in (step["analysis"] or {}).get("templates", [])]
            if key not in self.server.objects:
                self.server.objects[key] = {
                    "apiVersion": "argoproj.io/v1alpha1",
                    "kind": "AnalysisRun",
                    "metadata": {"name": run, "namespace": namespace, "labels": {"rollout": rollout}},
                    "spec": {"metrics": [{"name": t} for t in templates]},
                    "status": {"phase": "Running"},
                }
                memory["since"] = now
            outcome = "Running"
            if now - memory["since"] >= 0.1:
                outcome = behaviour.analysis
                metric = templates[0] if templates else "metric"
                message = (
                    ""
                    if outcome == "Successful"
                    else f'Metric "{metric}" assessed {outcome} due to failed (1) > failureLimit (0)'
                )
                self.server.objects[key]["status"] = {"phase": outcome, "message": message}
                if outcome == "Successful":
                    advance()
                else:
                    status.update(
                        abort=True,
                        phase="Degraded",
                        message=f"RolloutAborted: Rollout aborted update to revision {template_hash}: {message}",
                    )
                    weight(0)
            status["canary"] = {
                **(status.get("canary") or {}),
                "currentStepAnalysisRunStatus": {"name": run, "status": outcome},
            }

    # -- helpers ------------------------------------------------------------------------------------

    def _owned(self, resource: Any, namespace: str, kind: str, owner: str) -> list[Any]:
        return [
            obj
            for (res, ns, _n), obj in self.server.objects.items()
            if res == resource
            and ns == namespace
            and not obj.deleted
            and any(
                r.get("kind") == kind and r.get("name") == owner
                for r in obj.raw["metadata"].get("ownerReferences") or []
            )
        ]

    def _pods_of(self, namespace: str, replica_set: str) -> list[Any]:
        return self._owned(PODS, namespace, "ReplicaSet", replica_set)


def _hash(template: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def _revision(raw: dict[str, Any]) -> int:
    return int((raw["metadata"].get("annotations") or {}).get(REVISION, 0))


def _set_annotation(obj: Any, key: str, value: str) -> None:
    metadata = dict(obj.raw["metadata"])
    metadata["annotations"] = {**(metadata.get("annotations") or {}), key: value}
    obj["metadata"] = metadata


def _replicas(obj: Any) -> int:
    return obj.raw["spec"].get("replicas", 0)


def _set_replicas(obj: Any, replicas: int) -> None:
    if _replicas(obj) != replicas:
        obj["spec"] = {**obj.raw["spec"], "replicas": replicas}


def _ready(raw: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (raw.get("status") or {}).get("conditions", [])
    )


def _count(value: int | str, replicas: int, *, up: bool) -> int:
    if isinstance(value, int):
        return value
    exact = replicas * float(value.rstrip("%")) / 100
    return math.ceil(exact) if up else math.floor(exact)


def _seconds(duration: str | int | None) -> float | None:
    if duration is None:
        return None
    if isinstance(duration, int | float):
        return float(duration)
    match = re.fullmatch(r"([0-9.]+)(ms|s|m|h)?", duration)
    if not match:
        return None
    return float(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)]


def _timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
