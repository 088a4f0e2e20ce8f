"""A simulated cluster for one test: the emulator, the controllers, a kubeconfig, seed objects.

The test talks to it as an administrator would (``kubectl apply``) through the official client,
and builds releasegate's settings pointing at it through a real kubeconfig file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from k8s_emulator import EmulatorThread
from k8s_simulation import Behaviour, Simulation
from kubernetes import client

from releasegate.config import KubernetesPlatformSettings
from releasegate.probes.kubernetes_objects import rollout_state

NAMESPACE = "production"
CONTEXT = "sim-prod"


class Cluster:
    """What a test needs of a cluster (see the module docstring)."""

    def __init__(self, tmp_path: Path) -> None:
        self.emulator = EmulatorThread()
        self.server = self.emulator.server
        self.url = self.emulator.url
        self.sim = Simulation(self.emulator).start()
        self.kubeconfig = tmp_path / "kubeconfig"
        self.kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "sim", "cluster": {"server": self.url}}],
                    "users": [{"name": "releasegate", "user": {"token": "test-token"}}],
                    "contexts": [
                        {
                            "name": CONTEXT,
                            "context": {"cluster": "sim", "user": "releasegate", "namespace": NAMESPACE},
                        }
                    ],
                    "current-context": CONTEXT,
                }
            )
        )
        self.emulator.call(self._declare_resources)
        configuration = client.Configuration(host=self.url)
        configuration.retries = 0
        self.admin = client.ApiClient(configuration)
        self.apps = client.AppsV1Api(self.admin)
        self.core = client.CoreV1Api(self.admin)
        self.custom = client.CustomObjectsApi(self.admin)
        self.policy = client.PolicyV1Api(self.admin)

    def _declare_resources(self) -> None:
        """What a cluster serves even when it holds none of them (kmock answers 404 otherwise);
        metrics.k8s.io only comes with ``add_nodes(usage=...)``, like metrics-server."""
        for resource in (
            "v1/pods",
            "v1/nodes",
            "v1/services",
            "apps/v1/deployments",
            "apps/v1/replicasets",
            "policy/v1/poddisruptionbudgets",
            "argoproj.io/v1alpha1/rollouts",
            "argoproj.io/v1alpha1/analysisruns",
        ):
            self.server.resources[resource] = {}

    def close(self) -> None:
        self.sim.stop()
        self.admin.close()
        self.emulator.close()

    def settings(
        self, deployments: list[dict[str, Any]] | None = None, **overrides: Any
    ) -> KubernetesPlatformSettings:
        """releasegate's settings for this cluster: fast polls, short timeouts."""
        values: dict[str, Any] = {
            "kubeconfig": str(self.kubeconfig),
            "context": CONTEXT,
            "namespace": NAMESPACE,
            "request_timeout_s": 2,
            "retries": 1,
            "retry_backoff_s": 0,
            "rollout_timeout_s": 10,
            "poll_interval_s": 0.03,
            "deployments": deployments
            or [
                {
                    "name": "backend-core",
                    "container": "backend-core",
                    "image": "granter/backend-core:v{release}",
                }
            ],
        }
        values.update(overrides)
        return KubernetesPlatformSettings.model_validate(values)

    # -- seeding ----------------------------------------------------------------------------

    def behave(self, image: str, **behaviour: Any) -> None:
        self.sim.behaviours[image] = Behaviour(**behaviour)

    def add_nodes(
        self,
        count: int = 3,
        *,
        cpu: str = "4",
        memory: str = "16Gi",
        ready: bool = True,
        usage: tuple[str, str] | None = ("1", "4Gi"),
    ) -> None:
        for number in range(1, count + 1):
            name = f"node-{number}"
            self.core.create_node(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": name},
                    "spec": {},
                    "status": {
                        "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
                        "capacity": {"cpu": cpu, "memory": memory, "pods": "110"},
                        "conditions": [
                            {
                                "type": "Ready",
                                "status": "True" if ready else "False",
                                "reason": "KubeletReady" if ready else "KubeletNotReady",
                                "message": "kubelet is posting ready status"
                                if ready
                                else "PLEG is not healthy",
                            }
                        ],
                    },
                }
            )
            if usage is not None:
                self.custom.create_cluster_custom_object(
                    "metrics.k8s.io",
                    "v1beta1",
                    "nodes",
                    {
                        "apiVersion": "metrics.k8s.io/v1beta1",
                        "kind": "NodeMetrics",
                        "metadata": {"name": name},
                        "usage": {"cpu": usage[0], "memory": usage[1]},
                    },
                )

    def add_deployment(
        self,
        name: str,
        image: str,
        *,
        replicas: int = 3,
        container: str | None = None,
        labels: dict[str, str] | None = None,
        progress_deadline_s: int = 600,
        strategy: dict[str, Any] | None = None,
        requests: tuple[str, str] = ("100m", "128Mi"),
        env: dict[str, str] | None = None,
        wait: bool = True,
    ) -> None:
        """A Deployment whose release container sits second, after a sidecar (found by name)."""
        labels = labels or {"app": name}
        container = container or name
        self.apps.create_namespaced_deployment(
            NAMESPACE,
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": name}},
                "spec": {
                    "replicas": replicas,
                    "progressDeadlineSeconds": progress_deadline_s,
                    "selector": {"matchLabels": labels},
                    "strategy": strategy
                    or {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "containers": [
                                {
                                    "name": "log-shipper",
                                    "image": "fluent/fluent-bit:3.0",
                                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                                },
                                {
                                    "name": container,
                                    "image": image,
                                    "ports": [{"containerPort": 8080}],
                                    "env": [{"name": "APP_ENV", "value": "production"}]
                                    + [{"name": k, "value": v} for k, v in (env or {}).items()],
                                    "resources": {"requests": {"cpu": requests[0], "memory": requests[1]}},
                                },
                            ]
                        },
                    },
                },
            },
        )
        if wait:
            self.sim.settle(lambda: self.rolled_out(name))

    def add_service(self, name: str, selector: dict[str, str]) -> None:
        self.core.create_namespaced_service(
            NAMESPACE,
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": 8080}]},
            },
        )

    def add_rollout(
        self,
        name: str,
        image: str,
        steps: list[dict[str, Any]],
        *,
        container: str = "summit-server",
        replicas: int = 4,
    ) -> None:
        """An Argo Rollout with canary steps, settled Healthy at ``image``."""
        self.custom.create_namespaced_custom_object(
            "argoproj.io",
            "v1alpha1",
            NAMESPACE,
            "rollouts",
            {
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "Rollout",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {
                        "metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{"name": container, "image": image}]},
                    },
                    "strategy": {"canary": {"steps": steps}},
                },
            },
        )
        self.sim.settle(lambda: self.rollout(name).get("status", {}).get("phase") == "Healthy")

    # -- reading ----------------------------------------------------------------------------

    def rollout(self, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(
            "argoproj.io", "v1alpha1", NAMESPACE, "rollouts", name
        )

    def deployment(self, name: str) -> Any:
        return self.apps.read_namespaced_deployment(name, NAMESPACE)

    def rolled_out(self, name: str) -> bool:
        return rollout_state(self.deployment(name)).done

    def image(self, name: str, container: str | None = None) -> str:
        containers = self.deployment(name).spec.template.spec.containers
        return next(c.image for c in containers if c.name == (container or name))

    def image_changes(self) -> list[tuple[str, str]]:
        """(deployment, image) for every image the API server was asked to set, in order."""
        found = []
        for method, path, body in self.server.changes:
            if method == "PATCH" and "/deployments/" in path and isinstance(body, list):
                for op in body:
                    if op.get("path", "").endswith("/image") or op.get("path") == "/spec/template":
                        value = op["value"]
                        image = value if isinstance(value, str) else value["spec"]["containers"][1]["image"]
                        found.append((path.rsplit("/", 1)[-1], image))
        return found

    def pods(self, name: str) -> list[Any]:
        selector = self.deployment(name).spec.selector.match_labels
        return [
            p
            for p in self.core.list_namespaced_pod(NAMESPACE).items
            if all((p.metadata.labels or {}).get(k) == v for k, v in selector.items())
        ]
