"""Blue-green: two Deployments, one Service; the release goes to the idle color, then the Service's
selector switches to it (Summit GA 8.1: ``kubectl patch service ... selector version``).

The Service selects on ``selector_key``; each color's pod template carries that label, with the
color's name (``selector_value = "color"``) or the release it runs (``"release"``; then the
Deployment's own selector must not use that key). What the Service selected before the switch
is written on the Service (``releasegate.dev/undo-selector``), so a rollback switches back even
after a crash. The old color keeps running unless ``scale_down_previous``: switching back is
instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from releasegate.config import KubernetesBlueGreenSettings, KubernetesDeploymentSettings
from releasegate.errors import ActionError
from releasegate.platforms.base import Instance, PlatformStatus, Progress
from releasegate.platforms.kubernetes_deployments import ROLLING_TO, UNDO_RELEASE, instance_of, now
from releasegate.probes.kubernetes_objects import pod_ready, selector_matches

if TYPE_CHECKING:
    from releasegate.platforms.kubernetes import KubernetesPlatform

UNDO_SELECTOR = "releasegate.dev/undo-selector"


class BlueGreen:
    """See the module docstring."""

    def __init__(self, platform: KubernetesPlatform) -> None:
        assert platform.settings.blue_green is not None
        self.config: KubernetesBlueGreenSettings = platform.settings.blue_green
        self.kube = platform.kube
        self.ops = platform.deployments
        self.colors = {
            "blue": platform.settings.deployment(self.config.blue),
            "green": platform.settings.deployment(self.config.green),
        }

    # -- reading ------------------------------------------------------------------------------

    def service(self) -> Any:
        return self.kube.read(
            "get",
            f"services/{self.config.service}",
            self.kube.core.read_namespaced_service,
            self.config.service,
            self.kube.namespace,
        )

    def active(self) -> tuple[str, str]:
        """(active color, idle color): the color whose pod label the Service selects."""
        selected = (self.service().spec.selector or {}).get(self.config.selector_key)
        for color, spec in self.colors.items():
            if self._label(self.ops.get(spec.name)) == selected:
                return color, "green" if color == "blue" else "blue"
        raise ActionError(
            f"service {self.config.service} selects {self.config.selector_key}={selected}: "
            f"neither {self.config.blue} nor {self.config.green} carries that label"
        )

    def current_release(self) -> str | None:
        color, _ = self.active()
        return self.ops.release(self.colors[color])

    def previous_release(self) -> str | None:
        return (self.service().metadata.annotations or {}).get(UNDO_RELEASE)

    def status(self) -> PlatformStatus:
        selector = self.service().spec.selector or {}
        instances, serving, desired = [], [], 0
        active, _ = self.active()
        for color, spec in self.colors.items():
            deployment = self.ops.get(spec.name)
            if color == active:
                desired = deployment.spec.replicas or 0
            for pod in self.kube.live_pods(deployment.spec.selector):
                instances.append(instance_of(pod, spec.container, spec.image, self.ops.commits))
                if pod_ready(pod) and selector_matches(selector, pod.metadata.labels):
                    serving.append(pod.metadata.name)
        return PlatformStatus(
            self.current_release(),
            self.previous_release(),
            desired,
            tuple(instances),
            in_service=tuple(serving),
        )

    # -- changing -----------------------------------------------------------------------------

    def deploy(self, release: str, say: Progress) -> str | None:
        """Start, switch and (when configured) scale down in one go, for ``platform.deploy``."""
        active, _ = self.active()
        if self.ops.release(self.colors[active]) == release:
            say(f"{active} ({self.colors[active].name}) already serves {release}: nothing to do")
            return None
        failure = self.start(release, say)
        if failure:
            return failure
        failure = self.switch_to("green", say)
        if failure:
            return failure
        return self.retire(say)

    def start(self, release: str, say: Progress) -> str | None:
        """The idle color runs ``release`` on as many pods as the live one, checked, taking no
        traffic; what the Service selects now is written on it first, for the rollback."""
        active, idle = self.active()
        live, spare = self.colors[active], self.colors[idle]
        live_release = self.ops.release(live)
        self._annotate_service(
            {
                UNDO_SELECTOR: self._label(self.ops.get(live.name)),
                UNDO_RELEASE: live_release,
                ROLLING_TO: release,
            }
        )
        say(
            f"service {self.config.service} serves {active} ({live.name}, {live_release}); recorded for the rollback"
        )
        replicas = self.ops.get(live.name).spec.replicas or 1
        return self._prepare(spare, release, replicas, say)

    def role(self, role: str) -> str:
        """The color in a role as the gates name them: "green" runs the release being deployed,
        "blue" served before (the local platform's words, whatever the Deployments are called)."""
        annotations = self.service().metadata.annotations or {}
        if role == "green":
            target = annotations.get(ROLLING_TO)
            found = [c for c, spec in self.colors.items() if target and self.ops.release(spec) == target]
        elif role == "blue":
            recorded = annotations.get(UNDO_SELECTOR)
            found = [c for c, spec in self.colors.items() if self._label(self.ops.get(spec.name)) == recorded]
        else:
            raise ActionError(f"no color {role!r}: blue-green knows blue and green")
        if not found:
            raise ActionError(
                f"no {role} color is recorded on service {self.config.service}: start green first"
            )
        return found[0]

    def switch_to(self, role: str, say: Progress) -> str | None:
        color = self.role(role)
        self.switch(color, say)
        return self._serving(self.colors[color])

    def green_instances(self) -> list[Instance]:
        """Where green answers before it takes traffic: the preview URL, or its pods (reachable
        from inside the cluster only)."""
        spec = self.colors[self.role("green")]
        if self.config.preview_url:
            release = self.ops.release(spec) or "?"
            return [Instance(f"{spec.name} (preview)", release, self.config.preview_url, True)]
        deployment = self.ops.get(spec.name)
        return [
            instance_of(pod, spec.container, spec.image, self.ops.commits)
            for pod in self.kube.live_pods(deployment.spec.selector)
        ]

    def retire(self, say: Progress) -> str | None:
        """After the switch: the previous color scaled to 0 when the environment says so, else kept."""
        previous = self.colors[self.role("blue")]
        if not self.config.scale_down_previous:
            say(f"{previous.name} kept running (scale_down_previous = false): switching back stays instant")
            return None
        self.ops.scale(previous.name, 0)
        say(f"kubectl scale deployment/{previous.name} --replicas=0 (previous color)")
        return None

    def rollback(self, to_release: str | None, say: Progress) -> tuple[str | None, str | None]:
        service = self.service()
        recorded = (service.metadata.annotations or {}).get(UNDO_SELECTOR)
        active, idle = self.active()
        back = next(
            (c for c, s in self.colors.items() if self._label(self.ops.get(s.name)) == recorded), idle
        )
        spec = self.colors[back]
        if back == active:
            say(f"service {self.config.service} already selects {back} ({spec.name})")
        else:
            deployment = self.ops.get(spec.name)
            if not deployment.spec.replicas:
                replicas = self.ops.get(self.colors[active].name).spec.replicas or 1
                self.ops.scale(spec.name, replicas)
                say(f"kubectl scale deployment/{spec.name} --replicas={replicas} (it was scaled down)")
                failure = self.ops.wait(spec, say)
                if failure:
                    return self.ops.release(self.colors[active]), failure
            self.switch(back, say)
        reached = self.ops.release(spec)
        failure = self._serving(spec)
        if failure is None and to_release and reached != to_release:
            failure = f"{back} ({spec.name}) runs {reached}, not {to_release}"
        return reached, failure

    def switch(self, color: str, say: Progress) -> None:
        """Point the Service at ``color``: only the selector's key changes, the rest stays."""
        if color not in self.colors:
            raise ActionError(f"no color {color!r}: blue-green knows blue and green")
        value = self._label(self.ops.get(self.colors[color].name))
        if value is None:
            raise ActionError(
                f"deployment {self.colors[color].name} has no pod label {self.config.selector_key}"
            )
        self.kube.write(
            "patch",
            f"services/{self.config.service}",
            self.kube.core.patch_namespaced_service,
            self.config.service,
            self.kube.namespace,
            {"spec": {"selector": {self.config.selector_key: value}}},
        )
        say(
            f"kubectl patch service {self.config.service} selector {self.config.selector_key}={value} "
            f"({color}, {self.colors[color].name})"
        )

    # -- helpers ------------------------------------------------------------------------------

    def _prepare(
        self, spec: KubernetesDeploymentSettings, release: str, replicas: int, say: Progress
    ) -> str | None:
        """The idle color runs ``release`` on as many pods as the live one, checked, before any traffic."""
        deployment = self.ops.get(spec.name)
        since = now()
        labels = {self.config.selector_key: release} if self.config.selector_value == "release" else None
        image = self.ops.set_image(spec, release, deployment, replicas=replicas, labels=labels)
        say(
            f"kubectl set image deployment/{spec.name} {spec.container}={image} --replicas={replicas} (idle color)"
        )
        return self.ops.wait(spec, say) or self.ops.verify(spec, since, say)

    def _serving(self, spec: KubernetesDeploymentSettings) -> str | None:
        """After a switch: the Service selects ready pods, all of them this color's."""
        selector = self.service().spec.selector or {}
        pods = [p for p in self.kube.live_pods(selector) if pod_ready(p)]
        if not pods:
            return f"service {self.config.service} selects no ready pod after the switch"
        own = self.ops.get(spec.name).spec.selector
        others = sorted(p.metadata.name for p in pods if not selector_matches(own, p.metadata.labels))
        if others:
            return f"service {self.config.service} still selects pods outside {spec.name}: {', '.join(others[:3])}"
        return None

    def _label(self, deployment: Any) -> str | None:
        labels = (
            deployment.spec.template.metadata.labels if deployment.spec.template.metadata else None
        ) or {}
        return labels.get(self.config.selector_key)

    def _annotate_service(self, annotations: dict[str, str | None]) -> None:
        self.kube.write(
            "patch",
            f"services/{self.config.service}",
            self.kube.core.patch_namespaced_service,
            self.config.service,
            self.kube.namespace,
            {"metadata": {"annotations": annotations}},
        )
