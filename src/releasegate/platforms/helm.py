"""Helm: when the environment names a chart, the release goes out with ``helm upgrade --install
--wait --timeout`` and comes back with ``helm rollback`` to the revision recorded before
(Summit GA 4.2 and 7.1), through the ``helm`` command.

``HelmPlatform`` wraps a KubernetesPlatform: Helm changes the cluster, the Kubernetes platform
reads it (current release, status) and checks it after Helm is done (each deployment's rollout,
health URL, restarts and logs; or, with an Argo Rollout in the chart, the Rollout's steps and
analyses). Which revision a rollback returns to is taken from ``helm history`` before the
upgrade (the last ``deployed`` one); without that record, the revision before the newest.
``Helm.version()`` is the preflight's question: no ``helm`` on PATH is one line saying so.

Through Helm, a workload that is not there yet means the chart was never installed: nothing
serves (the initial release), and ``helm upgrade --install`` makes it. Helm's own failure says
little ("context deadline exceeded"), so a failed upgrade or rollback adds what ``kubectl get
pods`` would show: the release's pods that are not Ready, and why (CrashLoopBackOff ...).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from contextlib import suppress
from typing import Any, TypeVar

from releasegate.config import HelmSettings, KubernetesPlatformSettings
from releasegate.errors import ActionError, ProbeError
from releasegate.platforms.base import PlatformStatus, Progress, RolloutResult, no_progress
from releasegate.platforms.kubernetes import KubernetesPlatform, Rolling
from releasegate.platforms.kubernetes_deployments import missing, now
from releasegate.probes.kubernetes_objects import pod_not_ready
from releasegate.release_names import Commits, fill

T = TypeVar("T")

_GRACE_S = 30.0
"""How much longer than helm's own --timeout the command may run before it is stopped."""
RELEASE_LABEL = "app.kubernetes.io/instance"
"""The label Helm charts put on their pods, naming the Helm release."""
SHOWN_REASONS = 3
"""How many distinct reasons a failure line shows for the pods that are not Ready."""


class Helm:
    """The helm command for one release of one chart in one namespace."""

    def __init__(
        self, settings: HelmSettings, kubernetes: KubernetesPlatformSettings, commits: Commits | None = None
    ) -> None:
        self.settings = settings
        self.kubernetes = kubernetes
        self.commits = commits

    def version(self) -> str:
        """``helm version --short``; a missing binary is a one-line ProbeError."""
        return self._run(["version", "--short"], timeout_s=30, reading=True).strip()

    def history(self) -> list[dict[str, Any]]:
        """``helm history RELEASE -o json``: revisions oldest first; none for a new release."""
        try:
            out = self._run(
                ["history", self.settings.release, "--output", "json", *self._where()],
                timeout_s=60,
                reading=True,
            )
        except ProbeError as exc:
            if "not found" in exc.problem.lower():
                return []
            raise
        try:
            entries = json.loads(out or "[]")
        except ValueError:
            raise ProbeError(
                "helm", f"helm history {self.settings.release}: not JSON: {out[:120]!r}"
            ) from None
        return sorted(entries, key=lambda e: int(e.get("revision", 0)))

    def deployed_revision(self) -> int | None:
        """The revision serving now (``deployed``); None for a release never installed."""
        deployed = [e for e in self.history() if e.get("status") == "deployed"]
        return int(deployed[-1]["revision"]) if deployed else None

    def previous_revision(self) -> int | None:
        """Where a rollback goes without a record: after a failed upgrade, the revision still
        deployed; after a good one, the last superseded revision before it."""
        entries = self.history()
        if not entries:
            return None
        if entries[-1].get("status") != "deployed":
            return self.deployed_revision()
        older = [e for e in entries[:-1] if e.get("status") in ("superseded", "deployed")]
        return int(older[-1]["revision"]) if older else None

    def upgrade(self, release: str) -> str:
        """``helm upgrade --install RELEASE CHART --wait --timeout Ns -f ... --set image.tag=...``."""
        argv = [
            "upgrade",
            "--install",
            self.settings.release,
            self.settings.chart,
            *self._where(),
            self.settings.wait_flag,
            "--timeout",
            f"{self.settings.timeout_s:g}s",
        ]
        for path in self.settings.values_files:
            argv += ["--values", path]
        for key, value in self.settings.set_values.items():
            argv += ["--set", f"{key}={fill(value, release, self.commits)}"]
        argv += self.settings.extra_args
        return self._run(argv, timeout_s=self.settings.timeout_s + _GRACE_S)

    def rollback(self, revision: int) -> str:
        """``helm rollback RELEASE REVISION --wait --timeout Ns``."""
        argv = [
            "rollback",
            self.settings.release,
            str(revision),
            *self._where(),
            self.settings.wait_flag,
            "--timeout",
            f"{self.settings.timeout_s:g}s",
            *self.settings.extra_args,
        ]
        return self._run(argv, timeout_s=self.settings.timeout_s + _GRACE_S)

    def _where(self) -> list[str]:
        argv = ["--namespace", self.kubernetes.namespace]
        if self.kubernetes.context:
            argv += ["--kube-context", self.kubernetes.context]
        if self.kubernetes.kubeconfig:
            argv += ["--kubeconfig", self.kubernetes.kubeconfig]
        return argv

    def _run(self, argv: list[str], *, timeout_s: float, reading: bool = False) -> str:
        binary = shutil.which(self.settings.binary)
        shown = f"helm {' '.join(argv[:2])}"
        if binary is None:
            raise ProbeError(
                "helm",
                f"{self.settings.binary!r} not found on PATH",
                "install Helm 3 or set platform.kubernetes.helm.binary",
            )
        try:
            proc = subprocess.run(
                [binary, *argv], capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            problem = f"{shown}: no answer within {timeout_s:g} s"
            raise (ProbeError("helm", problem) if reading else ActionError(f"helm: {problem}")) from None
        except OSError as exc:
            raise ProbeError("helm", f"cannot run {binary}: {exc.strerror}") from None
        if proc.returncode != 0:
            lines = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
            problem = f"{shown} failed (exit {proc.returncode}): {lines[-1] if lines else 'no output'}"
            raise ProbeError("helm", problem) if reading else ActionError(f"helm: {problem}")
        return proc.stdout


class HelmPlatform:
    """A release through Helm, checked through Kubernetes (see the module docstring)."""

    def __init__(self, kubernetes: KubernetesPlatform) -> None:
        assert kubernetes.settings.helm is not None
        self.kubernetes = kubernetes
        self.settings = kubernetes.settings
        self.helm = Helm(kubernetes.settings.helm, kubernetes.settings, kubernetes.commits)
        self.recorded_revision: int | None = None
        """The Helm revision that served before this process's last upgrade: the rollback's target."""

    def __getattr__(self, name: str) -> Any:
        """Everything beyond the protocol (maintenance, promote, abort, restart counts ...) is
        the Kubernetes platform's: Helm only changes how the release gets there."""
        if name == "kubernetes":  # not set yet (copying, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.kubernetes, name)

    def current_release(self) -> str | None:
        """The workload's release; None before the chart's first install (no workload yet)."""
        return self._unless_missing(self.kubernetes.current_release, None)

    def status(self) -> PlatformStatus:
        """The workload's pods; none before the chart's first install."""
        return self._unless_missing(self.kubernetes.status, PlatformStatus(None, None, 0, ()))

    def revisions_now(self) -> list[dict[str, Any]]:
        """The deployments' revisions for the ledger; none before the chart's first install."""
        return self._unless_missing(self.kubernetes.revisions_now, [])

    def history(self) -> list[dict[str, Any]]:
        return self.helm.history()

    def start_canary(self, release: str, progress: Progress = no_progress) -> None:
        """An Argo Rollout the gates judge (analysis = "releasegate"): ``helm upgrade`` renders
        the new template, then the Rollout is followed to its first pause, where the gates take
        over (set_canary_weight, promote and abort are the Rollout's own, through Kubernetes)."""
        result = self.deploy(release, progress)
        strategy = self.kubernetes.strategy
        judged_pause = getattr(strategy, "judged_pause", None)
        if judged_pause is None:
            raise ActionError("a canary through Helm is an Argo Rollout's: platform.kubernetes.argo_rollout")
        failure = result.reason if not result.ok else judged_pause()
        if failure:
            raise ActionError(f"starting the canary of {release}: {failure}")

    def deploy(self, release: str, progress: Progress = no_progress) -> RolloutResult:
        """Record the deployed revision, ``helm upgrade --install --wait``, then check the workloads."""
        return self.kubernetes.run_change(
            "deploy",
            release,
            lambda say: (release, self._upgrade(release, say)),
            progress,
            self.current_release,
        )

    def rollback(self, to_release: str | None = None, progress: Progress = no_progress) -> RolloutResult:
        """``helm rollback`` to the recorded revision (or the one before the newest), then check."""
        return self.kubernetes.run_change(
            "rollback",
            to_release,
            lambda say: self._rollback(to_release, say),
            progress,
            self.current_release,
        )

    def _unless_missing(self, read: Callable[[], T], nothing: T) -> T:
        """``read()``, or ``nothing`` when the chart's workload is not there: through Helm that
        means no release installed yet, not a misconfiguration (without Helm it stays an error)."""
        try:
            return read()
        except ProbeError as exc:
            if missing(exc):
                return nothing
            raise

    def _upgrade(self, release: str, say: Progress) -> str | None:
        self.recorded_revision = self.helm.deployed_revision()
        say(
            f"helm history {self.helm.settings.release}: "
            + (
                f"revision {self.recorded_revision} is deployed (recorded for the rollback)"
                if self.recorded_revision is not None
                else "no revision deployed: the chart's first install"
            )
        )
        since = now()
        try:
            self.helm.upgrade(release)
        except ActionError as exc:  # e.g. UPGRADE FAILED: timed out waiting for the condition
            return str(exc) + self._pods_not_ready()
        say(
            f"helm upgrade --install {self.helm.settings.release} {self.helm.settings.chart} {self.helm.settings.wait_flag}: done"
        )
        return self._check(say, since, release)

    def _rollback(self, to_release: str | None, say: Progress) -> tuple[str | None, str | None]:
        revision = (
            self.recorded_revision if self.recorded_revision is not None else self.helm.previous_revision()
        )
        if revision is None:
            return self.current_release(), f"helm release {self.helm.settings.release}: no earlier revision"
        since = now()
        try:
            self.helm.rollback(revision)
        except ActionError as exc:
            return self.current_release(), str(exc) + self._pods_not_ready()
        say(f"helm rollback {self.helm.settings.release} {revision} {self.helm.settings.wait_flag}: done")
        failure = self._check(say, since, None)
        reached = self.current_release()
        if failure is None and to_release and reached != to_release:
            failure = f"after helm rollback to revision {revision}, {reached} serves, not {to_release}"
        return reached, failure

    def _check(self, say: Progress, since: Any, release: str | None) -> str | None:
        """After Helm: the Argo Rollout's steps, or each deployment's rollout and checks."""
        strategy = self.kubernetes.strategy
        follow = getattr(strategy, "follow", None)
        if follow is not None:  # an Argo Rollout: its steps on an upgrade, none on a rollback
            return follow(say, walking=release is not None)
        if isinstance(strategy, Rolling):
            for spec in self.settings.deployments:
                failure = strategy.ops.wait(spec, say) or strategy.ops.verify(
                    spec, since, say, deep=release is not None
                )
                if failure:
                    return failure
        return None

    def _pods_not_ready(self) -> str:
        """What ``kubectl get pods`` adds to helm's bare "context deadline exceeded": the release's
        pods that are not Ready, one line per distinct reason (at most SHOWN_REASONS); "" if none."""
        try:
            pods = self._pods()
        except ProbeError as exc:
            return f"; its pods could not be listed: {exc}"
        by_reason: dict[str, list[str]] = {}
        for pod in pods:
            found = pod_not_ready(pod)
            if found:
                by_reason.setdefault(found[0], []).append(found[1])
        shown = [
            lines[0] + (f" (and {len(lines) - 1} more pod(s) {reason})" if len(lines) > 1 else "")
            for reason, lines in list(by_reason.items())[:SHOWN_REASONS]
        ]
        more = len(by_reason) - SHOWN_REASONS
        return ("; not ready: " + "; ".join(shown) if shown else "") + (
            f"; and pods with {more} other reason(s)" if more > 0 else ""
        )

    def _pods(self) -> list[Any]:
        """The release's pods (not those being deleted), newest first: those with Helm's release
        label, and those the environment's workloads select (a chart need not set the label)."""
        kube = self.kubernetes.kube
        selectors: list[Any] = [{RELEASE_LABEL: self.helm.settings.release}]
        for spec in self.settings.deployments:
            with suppress(ProbeError):  # not made: its pods cannot be there either
                selectors.append(kube.deployment(spec.name).spec.selector)
        if self.settings.argo_rollout is not None:
            with suppress(ProbeError):
                selectors.append(self.kubernetes.strategy.get()["spec"]["selector"])  # type: ignore[attr-defined]
        found = {p.metadata.name: p for selector in selectors for p in kube.live_pods(selector)}
        return sorted(found.values(), key=lambda p: str(p.metadata.creation_timestamp or ""), reverse=True)
