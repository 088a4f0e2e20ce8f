"""``[policy.bundle] kind = "kubernetes-env"``: the policy engine's Deployment is told which
bundle to pull, as the Summit GA guide rolls policies back (7.2)::

    kubectl set env deployment/opa -n governance BUNDLE_VERSION=v3.0.0-ga
    kubectl rollout restart deployment/opa -n governance

Changing the variable changes the pod template, so the Deployment restarts by itself; the
switch waits for that rollout as ``kubectl rollout status`` does, then for the engine to report
the version. The variable's value before the change is kept in the ledger for the undo.
"""

from __future__ import annotations

import time
from typing import Any

from releasegate.actions.policy import Activation, Prepared, wait_for_version
from releasegate.config import KubernetesDeploymentSettings, KubernetesPlatformSettings, PolicyBundleSettings
from releasegate.errors import ActionError, ProbeError
from releasegate.platforms.base import Progress
from releasegate.platforms.kubernetes_deployments import Deployments
from releasegate.probes.kubernetes import Kubernetes
from releasegate.probes.policy import PolicyEngine
from releasegate.release_names import fill


class KubernetesEnvBundle:
    def __init__(
        self, engine: PolicyEngine, settings: PolicyBundleSettings, platform: KubernetesPlatformSettings
    ) -> None:
        assert settings.deployment is not None and settings.container is not None
        self.engine = engine
        self.settings = settings
        self.namespace = settings.namespace or platform.namespace
        self.kube = Kubernetes(platform.model_copy(update={"namespace": self.namespace}))
        self.deployments = Deployments(self.kube, self.kube.settings)
        # set_env and wait find the container by name; the image template is never used here.
        self.spec = KubernetesDeploymentSettings(
            name=settings.deployment, container=settings.container, image="policy-engine:{release}"
        )
        self.where = f"deployment/{settings.deployment} -n {self.namespace}"

    def prepare(self, release: str) -> Prepared:
        value = fill(self.settings.value, release)
        current = self._value_now()
        try:
            previous_version = self.engine.active_version().version
        except ProbeError as exc:
            raise ActionError(f"{exc}: the version to go back to is unknown, not changing it") from None
        return Prepared(
            version=value,
            previous_version=previous_version,
            changes=current != value,
            about=f"kubectl set env {self.where} {self.settings.env_var}={value} (was {current or 'unset'})",
            undo={
                "previous_value": current,
                "previous_version": previous_version,
                "deployment": self.settings.deployment,
                "namespace": self.namespace,
                "env_var": self.settings.env_var,
            },
            facts={
                "deployment": self.where,
                "variable": f"{self.settings.env_var}={value}",
                "source": self.where,
            },
            payload=value,
        )

    def apply(self, prepared: Prepared, progress: Progress) -> Activation:
        return self._set(prepared.payload, prepared.version, progress)

    def restore(self, undo: dict[str, Any], progress: Progress) -> Activation:
        version = undo.get("previous_version")
        if version is None:
            raise ActionError(
                f"the engine reported no version before this run: set {self.settings.env_var} by hand"
            )
        return self._set(undo.get("previous_value"), version, progress)

    def _set(self, value: str | None, version: str, progress: Progress) -> Activation:
        started = time.monotonic()
        shown = f"{self.settings.env_var}={value}" if value is not None else f"{self.settings.env_var}-"
        progress(f"kubectl set env {self.where} {shown}")
        self.deployments.set_env(self.spec, self.settings.env_var, value)
        failure = self.deployments.wait(self.spec, progress, timeout_s=self.settings.activation_timeout_s)
        if failure:
            return Activation(False, version, None, time.monotonic() - started, failure, self.where)
        return wait_for_version(
            self.engine, version, progress, started=started, timeout_s=self.settings.activation_timeout_s
        )

    def _value_now(self) -> str | None:
        deployment = self.deployments.get(self.settings.deployment or "")
        for container in deployment.spec.template.spec.containers:
            if container.name == self.settings.container:
                return next((e.value for e in container.env or [] if e.name == self.settings.env_var), None)
        raise ActionError(f"{self.where} has no container {self.settings.container!r}")

    def close(self) -> None:
        self.engine.close()
        self.kube.close()
