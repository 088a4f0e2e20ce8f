"""Argo Rollouts: the environment names a Rollout (``argoproj.io/v1alpha1``, canary steps such as
Summit's 5/10/25/50/75/100 with an analysis at each step).

``deploy`` sets the Rollout's image (``kubectl argo rollouts set image``, a JSON Patch on the
container found by name) and follows the controller: each step, weight and pause as a progress
line, each AnalysisRun's verdict. A failed AnalysisRun aborts the Rollout (``kubectl argo
rollouts abort``: the stable ReplicaSet takes all traffic back) and fails the deploy with the
analysis' message. An indefinite pause (``pause: {}``) is promoted when ``promote_paused``;
otherwise ``deploy`` returns there and the gates decide with ``promote()`` or ``abort()``.
``rollback`` aborts what is in progress and sets the image recorded before the change
(``releasegate.dev/undo-release`` on the Rollout): Argo goes back to the stable ReplicaSet
without walking the steps again. ``rollout_status()`` is the record of where it stands.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from releasegate.config import ArgoRolloutSettings, KubernetesPlatformSettings
from releasegate.errors import ActionError, ProbeError
from releasegate.platforms.base import PlatformStatus, Progress, no_progress
from releasegate.platforms.kubernetes_deployments import (
    ROLLING_TO,
    UNDO_RELEASE,
    instance_of,
    missing,
    new_pods_failure,
)
from releasegate.probes.kubernetes import pods_error_lines
from releasegate.probes.kubernetes_objects import pod_failure, pod_ready, restarts
from releasegate.release_names import fill, parse

if TYPE_CHECKING:
    from releasegate.platforms.kubernetes import KubernetesPlatform

GROUP, VERSION, PLURAL = "argoproj.io", "v1alpha1", "rollouts"
FAILED_ANALYSIS = frozenset({"Failed", "Error", "Inconclusive"})
JSON_PATCH = "application/json-patch+json"
TEMPLATE_HASH = "rollouts-pod-template-hash"
"""The label Argo puts on each pod: which ReplicaSet (stable or canary) it belongs to."""


@dataclass(frozen=True)
class RolloutStatus:
    """Where a Rollout stands, as ``kubectl argo rollouts get rollout`` shows it."""

    phase: str
    step: int
    steps: int
    canary_weight: int
    message: str
    aborted: bool
    paused: bool
    analysis_run: str | None
    analysis_status: str | None
    stable: bool
    """The stable ReplicaSet runs the current template: the rollout is complete."""

    def line(self, name: str) -> str:
        text = f"rollout {name}: {self.phase}, step {self.step}/{self.steps}, canary weight {self.canary_weight} %"
        if self.analysis_run:
            text += f", analysis {self.analysis_run} {self.analysis_status}"
        if self.message:
            text += f": {self.message}"
        return text


class ArgoRollout:
    """See the module docstring."""

    def __init__(self, platform: KubernetesPlatform) -> None:
        settings: KubernetesPlatformSettings = platform.settings
        assert settings.argo_rollout is not None
        self.config: ArgoRolloutSettings = settings.argo_rollout
        self.settings = settings
        self.kube = platform.kube
        self.commits = platform.commits
        self.name = self.config.name
        self._reported_step = -1
        """The last step index the progress lines showed, for this rollout of the template."""
        self._analyses_reported: set[str] = set()
        """The AnalysisRuns whose verdict the progress lines showed."""

    # -- reading ------------------------------------------------------------------------------

    def get(self) -> dict[str, Any]:
        return self.kube.read(
            "get",
            f"rollouts.argoproj.io/{self.name}",
            self.kube.custom.get_namespaced_custom_object,
            GROUP,
            VERSION,
            self.kube.namespace,
            PLURAL,
            self.name,
        )

    def controller_state(self) -> tuple[bool, str]:
        """Whether an Argo Rollouts controller would carry out a change of the Rollout, and what
        says so: its API (the CRDs) served, its status at its spec's generation (a controller
        running, of this Rollout's instance id). A change nobody carries out waits for its deadline."""
        try:
            rollout = self.get()
        except ProbeError as exc:
            if not missing(exc):
                raise
            try:  # no Rollout yet (its chart installs it), or no such API at all?
                self.kube.read("list", "rollouts.argoproj.io", self.kube.custom.list_namespaced_custom_object,
                               GROUP, VERSION, self.kube.namespace, PLURAL, limit=1)  # fmt: skip
            except ProbeError as listing:
                if not missing(listing):
                    raise
                return False, (
                    f"the API {GROUP}/{VERSION} {PLURAL} is not served: install Argo Rollouts (its CRDs "
                    "and controller) before a release uses it"
                )
            return True, f"the API {GROUP}/{VERSION} {PLURAL} is served; no rollout {self.name} yet"
        generation = (rollout.get("metadata") or {}).get("generation")
        observed = (rollout.get("status") or {}).get("observedGeneration")
        if observed is None or str(observed) != str(generation):
            return False, (
                f"rollout {self.name} is at generation {generation}, its status at {observed or 'none'}: no "
                "Argo Rollouts controller is handling it (is the controller running, with this Rollout's "
                "instance id?)"
            )
        return True, f"rollout {self.name}'s status is at its generation {generation}"

    def rollout_status(self, rollout: dict[str, Any] | None = None) -> RolloutStatus:
        rollout = rollout or self.get()
        status = rollout.get("status") or {}
        canary = status.get("canary") or {}
        analysis = canary.get("currentStepAnalysisRunStatus") or {}
        steps = ((rollout.get("spec") or {}).get("strategy") or {}).get("canary", {}).get("steps") or []
        weights = canary.get("weights") or {}
        return RolloutStatus(
            phase=status.get("phase") or "Unknown",
            step=int(status.get("currentStepIndex") or 0),
            steps=len(steps),
            canary_weight=int((weights.get("canary") or {}).get("weight") or set_weight(status, steps)),
            message=status.get("message") or "",
            aborted=bool(status.get("abort")),
            paused=bool(status.get("pauseConditions")) or bool((rollout.get("spec") or {}).get("paused")),
            analysis_run=analysis.get("name"),
            analysis_status=analysis.get("status"),
            stable=bool(status.get("stableRS")) and status.get("stableRS") == status.get("currentPodHash"),
        )

    def template_release(self, rollout: dict[str, Any] | None = None) -> str | None:
        rollout = rollout or self.get()
        containers = rollout["spec"]["template"]["spec"].get("containers", [])
        image = next((c.get("image") for c in containers if c.get("name") == self.config.container), None)
        return parse(image, self.config.image, self.commits)

    def current_release(self) -> str | None:
        """The template's release once it is stable; during a canary or after an abort, the stable one."""
        rollout = self.get()
        if self.rollout_status(rollout).stable:
            return self.template_release(rollout)
        return _annotations(rollout).get(UNDO_RELEASE) or self.template_release(rollout)

    def previous_release(self) -> str | None:
        return _annotations(self.get()).get(UNDO_RELEASE)

    def status(self) -> PlatformStatus:
        rollout = self.get()
        selector = (rollout.get("spec") or {}).get("selector")
        pods = self.kube.live_pods(selector) if selector else []
        instances = tuple(
            instance_of(p, self.config.container, self.config.image, self.commits) for p in pods
        )
        return PlatformStatus(
            self.current_release(),
            self.previous_release(),
            int((rollout.get("spec") or {}).get("replicas") or 1),
            instances,
            in_service=tuple(p.metadata.name for p in pods if pod_ready(p)),
        )

    # -- changing -----------------------------------------------------------------------------

    def deploy(self, release: str, say: Progress) -> str | None:
        rollout = self.get()
        current = self.template_release(rollout)
        if current == release and self.rollout_status(rollout).stable:
            say(f"rollout {self.name} already runs {release}: nothing to do")
            return None
        annotations = _annotations(rollout)
        if annotations.get(ROLLING_TO) != release or not annotations.get(UNDO_RELEASE):
            self._annotate({UNDO_RELEASE: self.current_release(), ROLLING_TO: release})
        image = self._set_image(rollout, release)
        self._reported_step = -1
        self._analyses_reported = set()
        say(f"kubectl argo rollouts set image {self.name} {self.config.container}={image}")
        return self.follow(say)

    def follow(
        self, say: Progress, timeout_s: float | None = None, *, walking: bool = True, to_end: bool = False
    ) -> str | None:
        """Follow the controller until the Rollout is stable (None), fails, or waits for a promotion.

        ``walking`` False: back to the previous template (a rollback), which must not walk the
        canary's steps and pauses again: promoted in full at once, no step reported as passed
        (Argo is stable at once when that template is still its stable ReplicaSet's). ``to_end``:
        a full promotion was asked, so a pause seen is one the controller has not left yet."""
        timeout_s = timeout_s or self.settings.rollout_timeout_s
        started = time.monotonic()
        last = ""
        full = to_end
        while True:
            rollout = self.get()
            state = self.rollout_status(rollout)
            observed = _generation((rollout.get("status") or {}).get("observedGeneration"))
            if observed >= int(rollout["metadata"].get("generation") or 0):
                passed = _weights_passed(rollout, self._reported_step, state.step) if walking else []
                for index, weight in passed:
                    say(f"rollout {self.name}: step {index}/{state.steps} passed, canary weight {weight} %")
                self._reported_step = max(self._reported_step, state.step - 1)  # the last step passed
                line = state.line(self.name)
                if line != last:
                    say(f"{line} ({time.monotonic() - started:.1f} s)")
                    last = line
                failed = self._report_analyses(rollout, say)
                if failed is not None:
                    return self._analysis_failed(state, say, failed)
                broken = None if state.stable else self._template_pod_failure(rollout)
                if broken is not None:  # Argo itself waits for its progress deadline (10 min)
                    if self.config.abort_on_failure and not state.aborted:
                        self.abort(say)
                    return f"rollout {self.name}: {broken}; rollout aborted"
                if state.stable and state.phase == "Healthy":
                    # a new release complete: its pods' restarts and error lines (GA 4.3), as the
                    # rolling path checks each deployment; a rollback's pods are not judged
                    return self.verify_new_pods(rollout, say) if walking else None
                if state.analysis_status in FAILED_ANALYSIS:
                    return self._analysis_failed(state, say)
                if state.aborted or state.phase == "Degraded":
                    return f"rollout {self.name} aborted: {state.message or state.phase}"
                if not walking and not full:
                    self._promote_full_patch(say)
                    full = True
                elif state.paused and self._indefinite_pause(rollout, state) and not full:
                    if not self.config.promote_paused:
                        say(
                            f"rollout {self.name} paused at step {state.step} until promoted: the gates decide"
                        )
                        return None
                    self._promote_patch(say)
            if time.monotonic() - started > timeout_s:
                return f"rollout {self.name} not complete within {timeout_s:g} s: {state.line(self.name)}"
            time.sleep(self.settings.poll_interval_s)

    def promote(self, say: Progress = no_progress) -> None:
        """``kubectl argo rollouts promote``, then follow it to the next pause or the end; a
        Rollout already complete has nothing to promote."""
        if self.rollout_status().stable:
            say(f"rollout {self.name} is complete: nothing to promote")
            return
        self._promote_patch(say)
        failure = self.follow(say)
        if failure:
            raise ActionError(failure)

    def abort(self, say: Progress = no_progress) -> None:
        """``kubectl argo rollouts abort``: the stable ReplicaSet takes all traffic back. A
        complete Rollout has no canary to abort (the rollback sets the previous template)."""
        if self.rollout_status().stable:
            say(f"rollout {self.name} is complete: no canary to abort")
            return
        self._status_patch({"status": {"abort": True}})
        say(f"kubectl argo rollouts abort {self.name}")
        started = time.monotonic()
        while time.monotonic() - started < self.settings.rollout_timeout_s:
            state = self.rollout_status()
            if state.canary_weight == 0 and (state.phase == "Degraded" or state.stable):
                say(state.line(self.name))
                return
            time.sleep(self.settings.poll_interval_s)
        raise ActionError(f"rollout {self.name} not aborted within {self.settings.rollout_timeout_s:g} s")

    # -- the gates' canary: releasegate judges each step (analysis = "releasegate") -----------------

    def start(self, release: str, say: Progress = no_progress) -> str | None:
        """Set the image and follow the controller to its first indefinite pause: the canary's
        pods run at the Rollout's first weight and wait for the gates' judgement. The failure
        line, or None."""
        return self.deploy(release, say) or self.judged_pause()

    def judged_pause(self) -> str | None:
        """None when the Rollout waits at an indefinite pause for the gates to judge the step it
        reached; else why it does not (complete without pausing, or paused for a while only)."""
        rollout = self.get()
        state = self.rollout_status(rollout)
        if state.stable:
            return (
                f"rollout {self.name} went to 100 % without stopping for a judgement: with "
                'analysis = "releasegate" each setWeight step is followed by `pause: {}`'
            )
        if not (state.paused and self._indefinite_pause(rollout, state)):
            return f"rollout {self.name} does not wait for a judgement: {state.line(self.name)}"
        return None

    def set_weight(self, percent: int, say: Progress = no_progress) -> float:
        """Promote the Rollout pause by pause until it waits at ``percent`` %, its setWeight (at
        100 %, ``promote --full``: every pod to the canary's release); returns the share of the
        ready pods the canary has, which without a traffic router is its share of requests."""
        if percent >= 100:
            if not self.rollout_status().stable:
                self._promote_full_patch(say)
                failure = self.follow(say, to_end=True)
                if failure:
                    raise ActionError(failure)
            return self._canary_share(percent, say)
        state = self.rollout_status()
        while state.canary_weight < percent and not state.stable:
            self.promote(say)
            state = self.rollout_status()
        if state.canary_weight != percent or state.stable:
            raise ActionError(
                f"rollout {self.name} waits at {state.canary_weight} %, not {percent} %: its setWeight "
                "steps, each followed by `pause: {}`, must be [metrics.canary] steps"
            )
        return self._canary_share(percent, say)

    def verify_new_pods(self, rollout: dict[str, Any], say: Progress) -> str | None:
        """The new template's pods: none restarted more than max_restarts, at most
        max_error_log_lines lines of their logs match log_error_pattern (each pod is new: its
        whole log is since the change)."""
        pods = self._template_pods(rollout)
        container = self.config.container
        counts = {p.metadata.name: restarts(p, container) for p in pods}
        lines = pods_error_lines(
            self.kube,
            pods,
            container,
            since=None,
            pattern=self.settings.log_error_pattern,
            tail_lines=self.settings.log_tail_lines,
        )
        return new_pods_failure(f"rollout {self.name}", counts, lines, self.settings, say)

    def _template_pods(self, rollout: dict[str, Any]) -> list[Any]:
        """The live pods of the Rollout's current template (its newest ReplicaSet)."""
        template = (rollout.get("status") or {}).get("currentPodHash")
        selector = (rollout.get("spec") or {}).get("selector")
        if not template or not selector:
            return []
        return [
            p
            for p in self.kube.live_pods(selector)
            if (p.metadata.labels or {}).get(TEMPLATE_HASH) == template
        ]

    def _template_pod_failure(self, rollout: dict[str, Any]) -> str | None:
        """Why a pod of the Rollout's new template will not become ready (CrashLoopBackOff,
        ImagePullBackOff, OOMKilled ...), as ``kubectl describe pod`` would say; else None."""
        return next((failure for p in self._template_pods(rollout) if (failure := pod_failure(p))), None)

    def _canary_share(self, percent: int, say: Progress) -> float:
        rollout = self.get()
        template = (rollout.get("status") or {}).get("currentPodHash")
        selector = (rollout.get("spec") or {}).get("selector")
        ready = [p for p in self.kube.live_pods(selector) if pod_ready(p)] if selector else []
        canary = [p for p in ready if (p.metadata.labels or {}).get(TEMPLATE_HASH) == template]
        share = 100 * len(canary) / len(ready) if ready else 0.0
        say(
            f"canary weight {percent} %: {len(canary)} of {len(ready)} ready pod(s) run "
            f"{self.template_release(rollout)} ({share:.0f} %)"
        )
        return share

    def rollback(self, to_release: str | None, say: Progress) -> tuple[str | None, str | None]:
        rollout = self.get()
        state = self.rollout_status(rollout)
        target = to_release or _annotations(rollout).get(UNDO_RELEASE)
        if target is None:
            return (
                self.current_release(),
                f"rollout {self.name}: no release to roll back to (none given, none recorded)",
            )
        try:
            if not state.stable and not state.aborted:
                self.abort(say)
            if self.template_release(rollout) != target:
                image = self._set_image(self.get(), target)
                say(f"kubectl argo rollouts set image {self.name} {self.config.container}={image}")
        except ActionError as exc:
            return self.current_release(), str(exc)
        failure = self.follow(say, walking=False)
        return self.current_release(), failure

    # -- helpers ------------------------------------------------------------------------------

    def _set_image(self, rollout: dict[str, Any], release: str) -> str:
        containers = rollout["spec"]["template"]["spec"].get("containers", [])
        index = next((i for i, c in enumerate(containers) if c.get("name") == self.config.container), None)
        if index is None:
            raise ActionError(f"rollout {self.name}: no container named {self.config.container!r}")
        image = fill(self.config.image, release, self.commits)
        self.kube.write(
            "patch",
            f"rollouts.argoproj.io/{self.name}",
            self.kube.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            self.kube.namespace,
            PLURAL,
            self.name,
            [
                {
                    "op": "test",
                    "path": f"/spec/template/spec/containers/{index}/name",
                    "value": self.config.container,
                },
                {"op": "replace", "path": f"/spec/template/spec/containers/{index}/image", "value": image},
            ],
            _content_type=JSON_PATCH,
        )
        return image

    def _promote_full_patch(self, say: Progress) -> None:
        """``kubectl argo rollouts promote --full``: every remaining step and pause skipped."""
        self._status_patch({"status": {"promoteFull": True, "pauseConditions": None}})
        if (self.get().get("spec") or {}).get("paused"):
            self._spec_patch({"spec": {"paused": False}})
        say(f"kubectl argo rollouts promote --full {self.name}")

    def _promote_patch(self, say: Progress) -> None:
        self._status_patch({"status": {"pauseConditions": None}})
        rollout = self.get()
        if (rollout.get("spec") or {}).get("paused"):
            self._spec_patch({"spec": {"paused": False}})
        say(f"kubectl argo rollouts promote {self.name}")

    def _report_analyses(self, rollout: dict[str, Any], say: Progress) -> dict[str, Any] | None:
        """A line for each AnalysisRun of the current template that has ended, once; the first
        that failed is returned. A run can start and end between two looks at the Rollout (a
        web metric takes milliseconds), so the runs are listed, not read off the Rollout's status."""
        template = (rollout.get("status") or {}).get("currentPodHash")
        if not template:
            return None
        runs = self.kube.read(
            "list", "analysisruns.argoproj.io", self.kube.custom.list_namespaced_custom_object,
            GROUP, VERSION, self.kube.namespace, "analysisruns",
            label_selector=f"{TEMPLATE_HASH}={template}",
        ).get("items", [])  # fmt: skip
        failed = None
        for run in sorted(runs, key=lambda r: r["metadata"].get("creationTimestamp") or ""):
            meta, status = run["metadata"], run.get("status") or {}
            owned = any(
                o.get("kind") == "Rollout" and o.get("name") == self.name
                for o in meta.get("ownerReferences") or []
            )
            if not owned or (meta.get("labels") or {}).get(TEMPLATE_HASH) != template:
                continue
            phase = status.get("phase") or ""
            if phase in ("Successful", *FAILED_ANALYSIS) and meta["name"] not in self._analyses_reported:
                self._analyses_reported.add(meta["name"])
                message = f": {status['message']}" if status.get("message") else ""
                say(f"rollout {self.name}: analysis {meta['name']} {phase}{message}")
            if phase in FAILED_ANALYSIS and failed is None:
                failed = run
        return failed

    def _analysis_failed(self, state: RolloutStatus, say: Progress, run: dict[str, Any] | None = None) -> str:
        message = ""
        if run is not None:
            state = replace(
                state,
                analysis_run=run["metadata"]["name"],
                analysis_status=(run.get("status") or {}).get("phase"),
            )
            message = (run.get("status") or {}).get("message") or ""
        elif state.analysis_run:
            run = self.kube.read(
                "get",
                f"analysisruns.argoproj.io/{state.analysis_run}",
                self.kube.custom.get_namespaced_custom_object,
                GROUP,
                VERSION,
                self.kube.namespace,
                "analysisruns",
                state.analysis_run,
            )
            message = (run.get("status") or {}).get("message") or ""
        if self.config.abort_on_failure and not state.aborted:
            self.abort(say)
        detail = f": {message}" if message else ""
        return (
            f"rollout {self.name}: AnalysisRun {state.analysis_run} {state.analysis_status} at step "
            f"{state.step}/{state.steps}{detail}; rollout aborted"
        )

    def _indefinite_pause(self, rollout: dict[str, Any], state: RolloutStatus) -> bool:
        if (rollout.get("spec") or {}).get("paused"):
            return True
        steps = ((rollout.get("spec") or {}).get("strategy") or {}).get("canary", {}).get("steps") or []
        if state.step >= len(steps):
            return False
        pause = steps[state.step].get("pause")
        return isinstance(pause, dict) and not pause.get("duration")

    def _status_patch(self, body: dict[str, Any]) -> None:
        self.kube.write(
            "patch",
            f"rollouts.argoproj.io/{self.name}/status",
            self.kube.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            self.kube.namespace,
            PLURAL,
            self.name,
            body,
        )

    def _annotate(self, annotations: dict[str, str | None]) -> None:
        self._spec_patch({"metadata": {"annotations": annotations}})

    def _spec_patch(self, body: dict[str, Any]) -> None:
        """A merge patch of the Rollout itself (its spec or metadata; not its status)."""
        self.kube.write(
            "patch",
            f"rollouts.argoproj.io/{self.name}",
            self.kube.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            self.kube.namespace,
            PLURAL,
            self.name,
            body,
        )


def _annotations(obj: dict[str, Any]) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def _generation(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def set_weight(status: dict[str, Any], steps: list[Any]) -> int:
    """The canary's weight when no traffic router reports one (``status.canary.weights`` is only
    there with one): the last ``setWeight`` at or before the current step, 100 past the last
    step, 0 once aborted, as Argo Rollouts' own GetCurrentSetWeight reckons it."""
    if status.get("abort"):
        return 0
    index = int(status.get("currentStepIndex") or 0)
    if index >= len(steps):
        return 100
    return next(
        (
            int(steps[i]["setWeight"])
            for i in range(index, -1, -1)
            if isinstance(steps[i], dict) and "setWeight" in steps[i]
        ),
        0,
    )


def _weights_passed(rollout: dict[str, Any], reported: int, now: int) -> list[tuple[int, int]]:
    """The setWeight steps the controller went through between two looks (after ``reported``,
    before ``now``): a fast controller must not make a step vanish from the record."""
    steps = ((rollout.get("spec") or {}).get("strategy") or {}).get("canary", {}).get("steps") or []
    return [
        (index, int(steps[index]["setWeight"]))
        for index in range(reported + 1, min(now, len(steps)))
        if isinstance(steps[index], dict) and "setWeight" in steps[index]
    ]
