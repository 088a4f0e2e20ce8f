"""A canary by replica ratio: a stable and a canary Deployment behind the same Service.

Without a service mesh, the share of traffic a canary gets is the share of pods it has. Of the
``total`` pods (the stable Deployment's replicas when the canary starts, written on it as
``releasegate.dev/canary-total``), a weight of p % gives the canary ``round(total * p / 100)``
pods (at least 1), and the stable the rest; at 100 % the canary has all ``total`` pods, and never
fewer than the stable Deployment runs at that point. The canary is scaled up and ready before the
stable is scaled down: capacity never drops, and each pod carries what a stable one does.
``set_weight`` returns the share really reached (10 % of 3 pods is 1 pod, 33 %), so the metrics
gates compare what actually ran.

``deploy`` walks the environment's steps (Release Manager: 10, 50, 100), each followed by the
canary's checks and ``step_pause_s`` of observation, then promotes: the stable Deployment takes
the release in a rolling update and the canary goes back to 0. ``abort`` (and a rollback
during the canary) returns every pod to the stable release.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING

from releasegate.config import KubernetesCanarySettings
from releasegate.errors import ActionError
from releasegate.platforms.base import PlatformStatus, Progress, no_progress
from releasegate.platforms.kubernetes_deployments import instance_of, now

if TYPE_CHECKING:
    from releasegate.platforms.kubernetes import KubernetesPlatform

CANARY_TOTAL = "releasegate.dev/canary-total"


class ReplicaCanary:
    """See the module docstring."""

    def __init__(self, platform: KubernetesPlatform) -> None:
        assert platform.settings.canary is not None
        self.config: KubernetesCanarySettings = platform.settings.canary
        self.kube = platform.kube
        self.ops = platform.deployments
        self.stable = platform.settings.deployment(self.config.stable)
        self.canary = platform.settings.deployment(self.config.canary)

    def current_release(self) -> str | None:
        return self.ops.release(self.stable)

    def previous_release(self) -> str | None:
        return self.ops.undo_record(self.stable).release

    def status(self) -> PlatformStatus:
        instances = []
        for spec in (self.stable, self.canary):
            deployment = self.ops.get(spec.name)
            instances += [
                instance_of(p, spec.container, spec.image, self.ops.commits)
                for p in self.kube.live_pods(deployment.spec.selector)
            ]
        return PlatformStatus(
            self.current_release(),
            self.previous_release(),
            self.total(),
            tuple(instances),
            in_service=tuple(i.name for i in instances if i.ready),
        )

    def total(self) -> int:
        """The pods stable had when the canary started; unrecorded, stable's and canary's now
        (never the stable's alone once it has been scaled down for the canary)."""
        deployment = self.ops.get(self.stable.name)
        recorded = (deployment.metadata.annotations or {}).get(CANARY_TOTAL)
        if recorded and recorded.isdigit():
            return int(recorded)
        return (deployment.spec.replicas or 0) + (self.ops.get(self.canary.name).spec.replicas or 0)

    # -- the canary's life ------------------------------------------------------------------------

    def deploy(self, release: str, say: Progress) -> str | None:
        stable = self.ops.get(self.stable.name)
        if self.ops.release(self.stable, stable) == release:
            say(f"deployment {self.stable.name} already runs {release}: nothing to do")
            return None
        since = now()
        failure = self.start(release, say)
        for percent in self.config.steps:
            if failure:
                return failure
            try:
                self.set_weight(percent, say)
            except ActionError as exc:
                return str(exc)
            failure = self._observe(since, say)
        if failure:
            return failure
        try:
            self.promote(say)
        except ActionError as exc:
            return str(exc)
        return None

    def start(self, release: str, say: Progress = no_progress) -> str | None:
        """Record the stable release and pod count, then the canary Deployment takes the release,
        still at 0 pods; the failure line or None."""
        stable = self.ops.get(self.stable.name)
        self.ops.record_undo(self.stable, release, stable)
        self.ops.annotate(self.stable.name, {CANARY_TOTAL: str(self.total())})
        canary = self.ops.get(self.canary.name)
        image = self.ops.set_image(self.canary, release, canary, replicas=0)
        say(f"kubectl set image deployment/{self.canary.name} {self.canary.container}={image} --replicas=0")
        return self.ops.wait(self.canary, say)

    def set_weight(self, percent: int, say: Progress = no_progress) -> float:
        """Give the canary ``percent`` % of the pods (rounded, at least 1); returns the share reached."""
        if not 0 <= percent <= 100:
            raise ActionError(f"canary weight {percent}: expected 0 to 100")
        total = self.total()
        pods = 0 if percent == 0 else min(total, max(1, round(total * percent / 100)))
        if percent == 100:  # every request on at least as many pods as stable has (scaled up meanwhile)
            pods = max(total, self.ops.get(self.stable.name).spec.replicas or 0)
        self.ops.scale(self.canary.name, pods)
        failure = self.ops.wait(self.canary, say)
        if failure:
            raise ActionError(f"canary at {percent} %: {failure}")
        self.ops.scale(self.stable.name, max(total - pods, 0))
        failure = self.ops.wait(self.stable, say)
        if failure:
            raise ActionError(f"canary at {percent} %: {failure}")
        share = 100 * pods / max(total, pods) if pods else 0.0
        say(
            f"canary weight {percent} % asked: {pods} of {max(total, pods)} pod(s) run the canary ({share:.0f} %)"
        )
        return share

    def promote(self, say: Progress = no_progress) -> None:
        """The stable Deployment takes the canary's release (rolling), then the canary goes to 0."""
        canary = self.ops.get(self.canary.name)
        release = self.ops.release(self.canary, canary)
        if release is None:
            raise ActionError(f"deployment {self.canary.name} runs no release of {self.canary.image}")
        since = now()
        image = self.ops.set_image(
            self.stable, release, self.ops.get(self.stable.name), replicas=self.total()
        )
        say(
            f"promote: kubectl set image deployment/{self.stable.name} {self.stable.container}={image} "
            f"--replicas={self.total()}"
        )
        failure = self.ops.wait(self.stable, say) or self.ops.verify(self.stable, since, say)
        if failure:
            raise ActionError(f"promoting {release}: {failure}")
        self.ops.scale(self.canary.name, 0)
        self.ops.wait(self.canary, say)
        self.ops.annotate(self.stable.name, {CANARY_TOTAL: None})

    def abort(self, say: Progress = no_progress) -> None:
        """Every pod back to the stable release: stable to its total first, then the canary to 0."""
        total = self.total()
        self.ops.scale(self.stable.name, total)
        failure = self.ops.wait(self.stable, say)
        self.ops.scale(self.canary.name, 0)
        failure = failure or self.ops.wait(self.canary, say)
        if failure:
            raise ActionError(f"aborting the canary: {failure}")
        say(f"canary aborted: {total} pod(s) of {self.stable.name}, none of {self.canary.name}")

    def rollback(self, to_release: str | None, say: Progress) -> tuple[str | None, str | None]:
        try:
            if self.ops.get(self.canary.name).spec.replicas:
                self.abort(say)
            target = to_release or self.previous_release()
            stable = self.ops.get(self.stable.name)
            if target and self.ops.release(self.stable, stable) != target:
                image = self.ops.set_image(self.stable, target, stable, replicas=self.total())
                say(f"kubectl set image deployment/{self.stable.name} {self.stable.container}={image}")
                failure = self.ops.wait(self.stable, say)
                if failure:
                    return self.current_release(), failure
            self.ops.annotate(self.stable.name, {CANARY_TOTAL: None})
        except ActionError as exc:
            return self.current_release(), str(exc)
        return self.current_release(), None

    def _observe(self, since: datetime, say: Progress) -> str | None:
        if self.config.step_pause_s:
            say(f"observing the canary for {self.config.step_pause_s:g} s")
            time.sleep(self.config.step_pause_s)
        return self.ops.verify(self.canary, since, say)
