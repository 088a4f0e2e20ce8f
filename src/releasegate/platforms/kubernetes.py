"""The Kubernetes platform: a release is an image tag on one or more Deployments.

``KubernetesPlatform`` implements the Platform protocol (current_release, status, deploy,
rollback) through the official client, with the strategy the environment names:

- ``rolling`` (Granter, Release Manager): ``kubectl set image`` on each deployment in the order
  the environment gives, each followed by its own ``rollout status``, health URL, restart and
  log checks before the next one starts; rollback in reverse order, by ``rollout undo`` to the
  revision recorded before the change, or by the previous image tag.
- ``blue-green``, ``canary`` (replica ratio) and ``argo-rollout``: see their own modules.

Beyond the protocol, the gates can call: ``enter_maintenance``/``leave_maintenance`` (around
migrations), ``restart_counts``, ``error_log_lines``, ``undo_records`` (what the ledger should
keep), and the strategies' own steps (``switch_traffic``, ``set_canary_weight``,
``promote``, ``abort``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from releasegate.config import KubernetesDeploymentSettings, KubernetesPlatformSettings
from releasegate.errors import ActionError
from releasegate.platforms.base import Instance, PlatformStatus, Progress, RolloutResult, no_progress
from releasegate.platforms.kubernetes_deployments import (
    MAINTENANCE_REPLICAS,
    Deployments,
    UndoRecord,
    instance_of,
    now,
)
from releasegate.probes import kubernetes as probes
from releasegate.probes.kubernetes import Kubernetes
from releasegate.probes.kubernetes_objects import revision_of, rollout_state
from releasegate.release_names import Commits


class Strategy(Protocol):
    """How a release replaces another: one implementation per ``platform.kubernetes.strategy``."""

    def current_release(self) -> str | None: ...

    def previous_release(self) -> str | None: ...

    def status(self) -> PlatformStatus: ...

    def deploy(self, release: str, say: Progress) -> str | None:
        """Roll ``release`` out; the failure line, or None."""

    def rollback(self, to_release: str | None, say: Progress) -> tuple[str | None, str | None]:
        """Go back; the release now serving and the failure line (None when it worked)."""


@dataclass
class Maintenance:
    """What ``enter_maintenance`` changed, so that ``leave_maintenance`` puts it back."""

    mode: str
    before: dict[str, Any] = field(default_factory=dict)
    """scale-to-zero: replicas per deployment; env: the variable's previous value (None: unset)."""


class KubernetesPlatform:
    """A release on Kubernetes (see the module docstring)."""

    def __init__(
        self,
        settings: KubernetesPlatformSettings,
        url: str,
        *,
        kube: Kubernetes | None = None,
        commits: Commits | None = None,
    ) -> None:
        self.settings = settings
        self.url = url
        self.commits = commits
        """The release's git tags, for images named by its commit (``prod-{sha}``)."""
        self._kube = kube
        self._strategy: Strategy | None = None

    @property
    def kube(self) -> Kubernetes:
        """The connection, made on first use (building the platform talks to nobody)."""
        if self._kube is None:
            self._kube = Kubernetes(self.settings)
        return self._kube

    @property
    def deployments(self) -> Deployments:
        return Deployments(self.kube, self.settings, self.commits)

    @property
    def strategy(self) -> Strategy:
        if self._strategy is None:
            self._strategy = _make_strategy(self)
        return self._strategy

    # -- the Platform protocol ------------------------------------------------------------------

    def current_release(self) -> str | None:
        """The release the (first) workload's image carries, read through its image template."""
        return self.strategy.current_release()

    def status(self) -> PlatformStatus:
        """Pods (name, release from the image, ready) and which of them receive traffic."""
        return self.strategy.status()

    def deploy(self, release: str, progress: Progress = no_progress) -> RolloutResult:
        """Roll ``release`` out with the environment's strategy, waiting until done or failed."""
        return self.run_change(
            "deploy", release, lambda say: (release, self.strategy.deploy(release, say)), progress
        )

    def rollback(self, to_release: str | None = None, progress: Progress = no_progress) -> RolloutResult:
        """Go back to what was recorded before the last change (or to ``to_release``), in reverse order."""
        return self.run_change(
            "rollback", to_release, lambda say: self.strategy.rollback(to_release, say), progress
        )

    # -- beyond the protocol ----------------------------------------------------------------------

    def undo_records(self) -> list[UndoRecord]:
        """What each deployment ran before releasegate last changed it: what the ledger keeps."""
        return [self.deployments.undo_record(spec) for spec in self.settings.deployments]

    def revisions_now(self) -> list[dict[str, Any]]:
        """Each deployment's revision and release before a change: the ledger's copy of what
        ``rollout undo`` goes back to, for an auditor (and a person) if the annotations are lost."""
        found = []
        for spec in self.settings.deployments:
            deployment = self.deployments.get(spec.name)
            found.append(
                {
                    "deployment": spec.name,
                    "revision": revision_of(deployment),
                    "release": self.deployments.release(spec, deployment),
                }
            )
        return found

    def restart_counts(self) -> dict[str, dict[str, int]]:
        """Per deployment, the restarts of each pod of its current template (a gate's input)."""
        return {spec.name: probes.restart_counts(self.kube, spec) for spec in self.settings.deployments}

    def error_log_lines(self, since: datetime | None) -> list[str]:
        """``deployment/pod: line`` for each log line of the new pods matching log_error_pattern."""
        found = []
        for spec in self.settings.deployments:
            lines = probes.error_log_lines(
                self.kube,
                spec,
                since=since,
                pattern=self.settings.log_error_pattern,
                tail_lines=self.settings.log_tail_lines,
            )
            found += [f"{spec.name}/{line}" for line in lines]
        return found

    def enter_maintenance(self, progress: Progress = no_progress) -> Maintenance:
        """Take the service out for a migration: scale to 0 (Granter 1.3, Summit GA 3.3) or set
        MAINTENANCE_MODE=true (Summit runbook), as the environment says; waits until it holds.

        Scale to 0 records each deployment's replicas on it first, so the next deploy or a
        rollback brings them back even if this process dies."""
        settings = self._maintenance_settings()
        state = Maintenance(settings.mode)
        for spec in self._maintenance_targets():
            if settings.mode == "scale-to-zero":
                deployment = self.deployments.get(spec.name)
                replicas = deployment.spec.replicas if deployment.spec.replicas is not None else 1
                recorded = (deployment.metadata.annotations or {}).get(MAINTENANCE_REPLICAS)
                state.before[spec.name] = int(recorded) if recorded and not replicas else replicas
                self.deployments.annotate(spec.name, {MAINTENANCE_REPLICAS: str(state.before[spec.name])})
                self.deployments.scale(spec.name, 0)
                progress(f"kubectl scale deployment/{spec.name} --replicas=0 (was {state.before[spec.name]})")
                failure = self.deployments.wait_scaled_down(spec.name, progress)
            else:
                state.before[spec.name] = self.deployments.set_env(spec, settings.env_var, settings.on_value)
                progress(f"kubectl set env deployment/{spec.name} {settings.env_var}={settings.on_value}")
                failure = self.deployments.wait(spec, progress)
            if failure:
                raise ActionError(f"maintenance mode: {failure}")
        if settings.mode == "scale-to-zero" and settings.drain_s:
            progress(f"waiting {settings.drain_s:g} s for connections to drain")
            time.sleep(settings.drain_s)
        return state

    def leave_maintenance(self, state: Maintenance | None = None, progress: Progress = no_progress) -> None:
        """Undo ``enter_maintenance``: replicas back (from ``state`` or the annotation), or the
        variable back to its previous value (``off_value`` when it was unset). Safe to repeat: a
        rollback may find that the rollout already brought the replicas back."""
        settings = self._maintenance_settings()
        for spec in self._maintenance_targets():
            if settings.mode == "scale-to-zero":
                deployment = self.deployments.get(spec.name)
                recorded = (deployment.metadata.annotations or {}).get(MAINTENANCE_REPLICAS)
                replicas = state.before.get(spec.name) if state else None
                replicas = replicas if replicas is not None else int(recorded) if recorded else None
                if replicas is None and deployment.spec.replicas:
                    progress(
                        f"deployment {spec.name} is not in maintenance: {deployment.spec.replicas} replicas"
                    )
                    continue
                if replicas is None:
                    raise ActionError(f"deployment {spec.name}: no record of its replicas before maintenance")
                self.deployments.scale(spec.name, replicas)
                progress(f"kubectl scale deployment/{spec.name} --replicas={replicas}")
                failure = self.deployments.wait(spec, progress)
                if not failure:
                    self.deployments.annotate(spec.name, {MAINTENANCE_REPLICAS: None})
            else:
                previous = state.before.get(spec.name) if state else None
                value = previous if previous is not None else settings.off_value
                self.deployments.set_env(spec, settings.env_var, value)
                progress(f"kubectl set env deployment/{spec.name} {settings.env_var}={value}")
                failure = self.deployments.wait(spec, progress)
            if failure:
                raise ActionError(f"leaving maintenance mode: {failure}")

    # -- strategies' own steps, for the gates that drive them ------------------------------------

    def start_green(self, release: str, progress: Progress = no_progress) -> RolloutResult:
        """Blue-green: the release on the idle color, checked, no traffic yet (GA 8.1)."""
        return self.run_change(
            "start green", release, lambda say: (release, self._blue_green().start(release, say)), progress
        )

    def green_instances(self) -> list[Instance]:
        return self._blue_green().green_instances()

    def switch_traffic(self, to: str, progress: Progress = no_progress) -> RolloutResult:
        """Blue-green: point the Service at ``to`` ("green": the release start_green started;
        "blue": what served before), ``kubectl patch service ... selector``."""

        def switch(say: Progress) -> tuple[str | None, str | None]:
            failure = self._blue_green().switch_to(to, say)
            return self.current_release(), failure

        return self.run_change(f"switch to {to}", None, switch, progress)

    def warm_remaining_s(self) -> float:
        """Kubernetes keeps the previous color as the environment says, with no timer of its own."""
        return 0.0

    def retire(self, progress: Progress = no_progress, *, wait: bool = False) -> RolloutResult:
        return self.run_change(
            "retire the previous color",
            None,
            lambda say: (self.current_release(), self._blue_green().retire(say)),
            progress,
        )

    def _blue_green(self) -> Any:
        from releasegate.platforms.kubernetes_bluegreen import BlueGreen

        return self._strategy_as(BlueGreen)

    def start_canary(self, release: str, progress: Progress = no_progress) -> None:
        """Canary by replicas: the canary Deployment takes ``release`` at 0 pods (weights next);
        an Argo Rollout judged by the gates: the image set, the Rollout at its first pause."""
        failure = self._canary().start(release, progress)
        if failure:
            raise ActionError(f"starting the canary of {release}: {failure}")

    def set_canary_weight(self, percent: int, progress: Progress = no_progress) -> float:
        """``percent`` % of the pods run the canary (the Rollout promoted to the step that sets
        it); returns the real share."""
        return self._canary().set_weight(percent, progress)

    def _canary(self) -> Any:
        from releasegate.platforms.argo import ArgoRollout
        from releasegate.platforms.kubernetes_canary import ReplicaCanary

        return self._strategy_as(ReplicaCanary, ArgoRollout)

    def promote(self, progress: Progress = no_progress) -> None:
        """Canary or Argo Rollout: finish the rollout now (``kubectl argo rollouts promote``)."""
        strategy = self.strategy
        promote: Callable[[Progress], Any] | None = getattr(strategy, "promote", None)
        if promote is None:
            raise ActionError(f"strategy {self.settings.strategy!r} has nothing to promote")
        promote(progress)

    def abort(self, progress: Progress = no_progress) -> None:
        """Canary or Argo Rollout: send all traffic back to stable (``kubectl argo rollouts abort``)."""
        abort: Callable[[Progress], Any] | None = getattr(self.strategy, "abort", None)
        if abort is None:
            raise ActionError(f"strategy {self.settings.strategy!r} has nothing to abort")
        abort(progress)

    # -- shared with HelmPlatform ---------------------------------------------------------------

    def run_change(
        self,
        action: str,
        target: str | None,
        work: Callable[[Progress], tuple[str | None, str | None]],
        progress: Progress,
        current: Callable[[], str | None] | None = None,
    ) -> RolloutResult:
        """Time a change and collect its progress lines into a RolloutResult (Helm uses it too,
        with its own ``current``: before a chart's first install no release serves).
        ``work`` returns the release reached and the failure line, None when it worked."""
        started = time.monotonic()
        events: list[str] = []

        def say(line: str) -> None:
            events.append(line)
            progress(line)

        before = (current or self.current_release)()
        say(
            f"{action} {before or '(nothing)'} -> {target or '(the recorded release)'} "
            f"in namespace {self.settings.namespace} ({self.settings.strategy})"
        )
        reached, failure = work(say)
        duration = time.monotonic() - started
        if failure:
            say(f"{action} failed after {duration:.1f} s: {failure}")
        else:
            say(f"{action} to {reached} done in {duration:.1f} s")
        return RolloutResult(
            ok=failure is None,
            release=reached or target or "",
            previous_release=before,
            duration_s=duration,
            reason=failure or "",
            events=events,
        )

    # -- helpers ----------------------------------------------------------------------------------

    def _strategy_as(self, *kinds: type[Any]) -> Any:
        strategy = self.strategy
        if not isinstance(strategy, kinds):
            names = " or ".join(kind.__name__ for kind in kinds)
            raise ActionError(f"platform.kubernetes.strategy is {self.settings.strategy!r}, not {names}")
        return strategy

    def _maintenance_settings(self) -> Any:
        if self.settings.maintenance is None:
            raise ActionError(
                "no [platform.kubernetes.maintenance] section: maintenance mode is not configured"
            )
        return self.settings.maintenance

    def _maintenance_targets(self) -> list[KubernetesDeploymentSettings]:
        names = self._maintenance_settings().deployments
        return [self.settings.deployment(n) for n in names] if names else list(self.settings.deployments)


class Rolling:
    """Deployments updated one after the other, each checked before the next (Granter phase 3)."""

    def __init__(self, platform: KubernetesPlatform) -> None:
        self.settings = platform.settings
        self.kube = platform.kube
        self.ops = platform.deployments

    def current_release(self) -> str | None:
        return self.ops.release(self.settings.deployments[0])

    def previous_release(self) -> str | None:
        return self.ops.undo_record(self.settings.deployments[0]).release

    def status(self) -> PlatformStatus:
        instances: list[Instance] = []
        desired = 0
        for spec in self.settings.deployments:
            deployment = self.ops.get(spec.name)
            desired += deployment.spec.replicas if deployment.spec.replicas is not None else 1
            instances += [
                instance_of(p, spec.container, spec.image, self.ops.commits)
                for p in self.kube.live_pods(deployment.spec.selector)
            ]
        return PlatformStatus(
            self.current_release(),
            self.previous_release(),
            desired,
            tuple(instances),
            in_service=tuple(i.name for i in instances if i.ready),
        )

    def deploy(self, release: str, say: Progress) -> str | None:
        for spec in self.settings.deployments:
            failure = self.roll(spec, release, say)
            if failure:
                return failure
        return None

    def roll(self, spec: KubernetesDeploymentSettings, release: str, say: Progress) -> str | None:
        """One deployment: record, (strategy), set image, rollout status, checks."""
        deployment = self.ops.get(spec.name)
        replicas = _replicas_after_maintenance(deployment)
        if (
            self.ops.release(spec, deployment) == release
            and rollout_state(deployment).done
            and replicas is None
        ):
            say(f"deployment {spec.name} already runs {release}: nothing to do")
            return None
        record = self.ops.record_undo(spec, release, deployment)
        say(
            f"deployment {spec.name}: revision {record.revision} runs {record.release} (recorded for the rollback)"
        )
        if spec.enforce_strategy and self.ops.strategy_mismatch(spec, deployment):
            self.ops.set_strategy(spec)
            say(
                f"kubectl patch deployment/{spec.name}: RollingUpdate maxSurge {spec.max_surge}, "
                f"maxUnavailable {spec.max_unavailable}"
            )
        since = now()
        image = self.ops.set_image(spec, release, deployment, replicas=replicas)
        say(
            f"kubectl set image deployment/{spec.name} {spec.container}={image}"
            + (f" (and --replicas={replicas}, after maintenance)" if replicas is not None else "")
        )
        failure = self.ops.wait(spec, say) or self.ops.verify(spec, since, say)
        if failure is None and replicas is not None:
            self.ops.annotate(spec.name, {MAINTENANCE_REPLICAS: None})
        return failure

    def rollback(self, to_release: str | None, say: Progress) -> tuple[str | None, str | None]:
        """Each deployment back, last first. Without ``to_release``, only the deployments the last
        deploy changed (their record names the same target as the first one's) are touched."""
        failures = []
        last = self.ops.undo_record(self.settings.deployments[0]).rolling_to
        for spec in reversed(self.settings.deployments):
            if to_release is None and (last is None or self.ops.undo_record(spec).rolling_to != last):
                say(f"deployment {spec.name}: not changed by the last deploy, left as it is")
                continue
            try:
                failure = self.undo(spec, to_release, say)
            except ActionError as exc:
                failure = str(exc)
            if failure:
                failures.append(failure)
        reached = self.current_release()
        if to_release and reached != to_release and not failures:
            failures.append(
                f"deployment {self.settings.deployments[0].name} runs {reached}, not {to_release}"
            )
        return reached, "; ".join(failures) or None

    def undo(self, spec: KubernetesDeploymentSettings, to_release: str | None, say: Progress) -> str | None:
        """One deployment back: ``rollout undo`` to the recorded revision, or the recorded image."""
        deployment = self.ops.get(spec.name)
        record = self.ops.undo_record(spec, deployment)
        current = self.ops.release(spec, deployment)
        replicas = _replicas_after_maintenance(deployment)
        if replicas is not None:
            self.ops.scale(spec.name, replicas)
            say(f"kubectl scale deployment/{spec.name} --replicas={replicas} (it was in maintenance)")
        if self.settings.rollback == "revision":
            revision = record.revision if to_release is None or record.release == to_release else None
            if revision is None and to_release is not None and current == to_release:
                say(f"deployment {spec.name} already runs {to_release}")
            else:
                revision = revision if revision is not None else self.ops.previous_revision(deployment)
                if revision is None:
                    return f"deployment {spec.name}: no earlier revision to roll back to"
                changed = self.ops.undo_to_revision(spec, revision, deployment)
                say(
                    f"kubectl rollout undo deployment/{spec.name} --to-revision={revision}"
                    + ("" if changed else ": its template is already that revision's")
                )
        else:
            target = to_release or record.release
            if target is None:
                return f"deployment {spec.name}: no release to roll back to (none given, none recorded)"
            if current != target:
                image = self.ops.set_image(spec, target, deployment)
                say(f"kubectl set image deployment/{spec.name} {spec.container}={image}")
            else:
                say(f"deployment {spec.name} already runs {target}")
        failure = self.ops.wait(spec, say) or self.ops.verify(spec, now(), say, deep=False)
        if failure is None:
            self.ops.settle_undo(spec)
            if replicas is not None:
                self.ops.annotate(spec.name, {MAINTENANCE_REPLICAS: None})
        return failure


def _replicas_after_maintenance(deployment: Any) -> int | None:
    """The replicas to restore when maintenance left the deployment at 0, else None."""
    recorded = (deployment.metadata.annotations or {}).get(MAINTENANCE_REPLICAS)
    if recorded and recorded.isdigit() and not deployment.spec.replicas:
        return int(recorded)
    return None


def _make_strategy(platform: KubernetesPlatform) -> Strategy:
    kind = platform.settings.strategy
    if kind == "blue-green":
        from releasegate.platforms.kubernetes_bluegreen import BlueGreen

        return BlueGreen(platform)
    if kind == "canary":
        from releasegate.platforms.kubernetes_canary import ReplicaCanary

        return ReplicaCanary(platform)
    if kind == "argo-rollout":
        from releasegate.platforms.argo import ArgoRollout

        return ArgoRollout(platform)
    return Rolling(platform)
