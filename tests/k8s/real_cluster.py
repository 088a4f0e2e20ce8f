"""A real Kubernetes control plane for the tests (sandbox.cluster): one per test file, a fresh
namespace per test, and the same helpers the tests had on the simulated cluster.

releasegate reaches the API server through a recording proxy (api_proxy.ApiProxy), so a test can
see which writes it made and inject what the real API cannot be made to do on demand; the
test's own client talks to the API server directly. The images are the test registry's
(``catalog``): every repository runs ``sandbox.workload``, whose behaviour for an image a test
sets with ``behave`` (a crash, never ready, error lines, a leak); ``behave(image,
fault="ImagePullBackOff")`` takes the tag out of the registry.
"""

from __future__ import annotations

import itertools
import json
import time
import tomllib
from pathlib import Path
from typing import Any

import tomli_w
from api_proxy import ApiProxy
from kubernetes import client
from kubernetes.client.rest import ApiException

from releasegate.config import KubernetesPlatformSettings
from releasegate.probes.kubernetes_objects import rollout_state
from sandbox.cluster import Cluster as SandboxCluster
from sandbox.images import DEFAULT as DEFAULT_CATALOG

CONTEXT = "sandbox-prod"
DEMO = "releasegate/demo"
"""The sandbox's demo service (sandbox.service), run as it is."""
OPA = "openpolicyagent/opa"
"""A policy engine that pulls the bundle its BUNDLE_VERSION names from Summit's (policy_engine.py)."""
OPA_COMMAND = ["{python}", "{root}/tests/k8s/policy_engine.py", "--host", "{host}", "--port", "{port}",
               "--bundles", "{root}/sandbox/replicas/summit_policy"]  # fmt: skip
REPOSITORIES = (
    "granter/backend-core",
    "granter/data-service",
    "granter/web-frontend",
    "release-manager",
    "ghcr.io/summit/server",
)
_numbers = itertools.count(1)


def write_catalog(path: Path, behaviours: Path, missing: dict[str, list[str]] | None = None) -> None:
    """The test registry: the workload for every repository of REPOSITORIES, the sidecar a
    sleeping process, the policy engine (OPA), and the sandbox's demo service as
    sandbox/images.toml runs it."""
    missing = missing or {}
    images: dict[str, Any] = {
        "fluent/fluent-bit": {"command": ["sleep", "infinity"], "releases": "*"},
        DEMO: tomllib.loads(DEFAULT_CATALOG.read_text())["images"][DEMO],
        OPA: {"command": OPA_COMMAND, "releases": "*"},
    }
    for repo in REPOSITORIES:
        images[repo] = {
            "command": [
                "{python}",
                "-m",
                "sandbox.workload",
                "--image",
                "{image}",
                "--host",
                "{host}",
                "--port",
                "{port}",
                "--behaviours",
                str(behaviours),
            ],
            "releases": "*",
            "missing": missing.get(repo, []),
        }
    partial = path.with_suffix(".partial")  # the agent reads it while a test writes it
    partial.write_text(tomli_w.dumps({"images": images}))
    partial.replace(path)


class Session:
    """A test file's control plane, nodes and registry."""

    def __init__(self, directory: Path, *, metrics: bool = False, argo: bool = False) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.catalog = directory / "images.toml"
        self.behaviours = directory / "behaviours.json"
        self.behaviours.write_text("{}")
        write_catalog(self.catalog, self.behaviours)
        self.sandbox = SandboxCluster(
            directory / "cluster", nodes=3, catalog=self.catalog, backoff_s=1.0, metrics=metrics, argo=argo
        )
        self.sandbox.start(lambda _line: None)
        self.admin = self.sandbox.api()
        self.proxy = ApiProxy(self.sandbox.control_plane.url, self.sandbox.control_plane.ssl_context())

    def close(self) -> None:
        self.proxy.close()
        self.sandbox.stop(lambda _line: None)


class Cluster:
    """One test's namespace on the worker's cluster (see the module docstring)."""

    def __init__(self, session: Session, tmp_path: Path) -> None:
        self.session = session
        self.namespace = f"t{next(_numbers)}"
        self.kubeconfig = session.proxy.write_kubeconfig(tmp_path / "kubeconfig", CONTEXT, self.namespace)
        self.admin = session.admin
        self.apps = client.AppsV1Api(self.admin)
        self.core = client.CoreV1Api(self.admin)
        self.custom = client.CustomObjectsApi(self.admin)
        self.policy = client.PolicyV1Api(self.admin)
        self._changes_from = len(session.proxy.changes)
        self.core.create_namespace({"metadata": {"name": self.namespace}})
        self.settle(self._service_account, "the namespace's default ServiceAccount")

    def _service_account(self) -> bool:
        try:
            self.core.read_namespaced_service_account("default", self.namespace)
            return True
        except ApiException:
            return False

    def close(self) -> None:
        self.session.behaviours.write_text("{}")
        write_catalog(self.session.catalog, self.session.behaviours)
        self.core.delete_namespace(self.namespace)

    def settings(
        self, deployments: list[dict[str, Any]] | None = None, **overrides: Any
    ) -> KubernetesPlatformSettings:
        """releasegate's settings for this namespace: short polls, timeouts for a busy machine."""
        values: dict[str, Any] = {
            "kubeconfig": str(self.kubeconfig),
            "context": CONTEXT,
            "namespace": self.namespace,
            "request_timeout_s": 10,
            "retries": 1,
            "retry_backoff_s": 0,
            "rollout_timeout_s": 60,
            "poll_interval_s": 0.2,
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

    # -- the registry and the workload's behaviour -----------------------------------------------

    def behave(self, image: str, fault: str | None = None, fault_after_s: float = 0.5, restarts: int = 0,
               logs: tuple[str, ...] = ()) -> None:  # fmt: skip
        """What ``image`` does when it runs (sandbox.workload), or that it cannot be pulled."""
        repo, _, tag = image.rpartition(":")
        if fault in ("ImagePullBackOff", "ErrImagePull"):
            text = tomllib.loads(self.session.catalog.read_text())
            missing = {r: list(e.get("missing", [])) for r, e in text["images"].items() if r in REPOSITORIES}
            missing.setdefault(repo, []).append(tag)
            write_catalog(self.session.catalog, self.session.behaviours, missing)
            return
        behaviour: dict[str, Any] = {}
        if fault == "CrashLoopBackOff":
            behaviour["crash_after_s"] = fault_after_s
        elif fault == "NeverReady":
            behaviour["never_ready"] = True
        elif fault == "OOMKilled":  # grows while it starts up: killed before it is ever ready
            behaviour |= {"leak_mib_per_s": 200, "never_ready": True}
        elif fault == "AnalysisFailed":  # its /analysis reports a 50 % error rate
            behaviour["error_rate"] = 0.5
        elif fault is not None:
            raise ValueError(f"the workload cannot do {fault}")
        if restarts:
            behaviour |= {"crash_after_s": 0.3, "crash_times": restarts}
        if logs:
            behaviour["log_lines"] = list(logs)
        every = json.loads(self.session.behaviours.read_text())
        every[image] = behaviour
        partial = self.session.behaviours.with_suffix(".partial")
        partial.write_text(json.dumps(every))
        partial.replace(self.session.behaviours)

    def push(self, image: str) -> None:
        """The registry has ``image`` from now on (after ``behave(image, fault="ImagePullBackOff")``)."""
        repo, _, tag = image.rpartition(":")
        text = tomllib.loads(self.session.catalog.read_text())
        missing = {
            r: [t for t in e.get("missing", []) if (r, t) != (repo, tag)]
            for r, e in text["images"].items()
            if r in REPOSITORIES
        }
        write_catalog(self.session.catalog, self.session.behaviours, missing)

    # -- seeding ---------------------------------------------------------------------------------

    def add_deployment(
        self,
        name: str,
        image: str,
        *,
        replicas: int = 3,
        container: str | None = None,
        labels: dict[str, str] | None = None,
        selector: dict[str, str] | None = None,
        progress_deadline_s: int = 600,
        strategy: dict[str, Any] | None = None,
        requests: tuple[str, str] = ("100m", "128Mi"),
        env: dict[str, str] | None = None,
        secret_env: dict[str, str] | None = None,
        wait: bool = True,
    ) -> None:
        """A Deployment whose release container sits second, after a sidecar (found by name);
        ``secret_env`` (variable -> Secret, made here with a key ``value``) is read from Secrets;
        ``selector`` (default: all of ``labels``) is immutable once made, as the API says."""
        labels = labels or {"app": name}
        for secret in set((secret_env or {}).values()):
            self.core.create_namespaced_secret(
                self.namespace, {"metadata": {"name": secret}, "stringData": {"value": "s3cret"}}
            )
        container = container or name
        self.apps.create_namespaced_deployment(
            self.namespace,
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "labels": {"app": name}},
                "spec": {
                    "replicas": replicas,
                    "progressDeadlineSeconds": progress_deadline_s,
                    "selector": {"matchLabels": selector or labels},
                    "strategy": strategy
                    or {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "terminationGracePeriodSeconds": 5,
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
                                    + [{"name": k, "value": v} for k, v in (env or {}).items()]
                                    + [
                                        {
                                            "name": k,
                                            "valueFrom": {"secretKeyRef": {"name": v, "key": "value"}},
                                        }
                                        for k, v in (secret_env or {}).items()
                                    ],
                                    "resources": {
                                        "requests": {"cpu": requests[0], "memory": requests[1]},
                                        "limits": {"memory": "256Mi"},
                                    },
                                    "readinessProbe": {
                                        "httpGet": {"path": "/health", "port": 8080},
                                        "periodSeconds": 1,
                                        "failureThreshold": 1,
                                    },
                                },
                            ],
                        },
                    },
                },
            },
        )
        if wait:
            self.settle(lambda: self.rolled_out(name), f"deployment {name} rolled out")

    def add_service(self, name: str, selector: dict[str, str]) -> str:
        """A Service on port 80; returns its ClusterIP (where the service proxy listens)."""
        service = self.core.create_namespaced_service(
            self.namespace,
            {
                "metadata": {"name": name},
                "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": 8080}]},
            },
        )
        return service.spec.cluster_ip

    def add_rollout(
        self,
        name: str,
        image: str,
        steps: list[dict[str, Any]],
        *,
        container: str = "summit-server",
        replicas: int = 4,
    ) -> str:
        """An Argo Rollout with canary steps, Healthy at ``image``, and its AnalysisTemplate
        ``error-rate``: Argo's web provider asks the canary's pods (``<name>-canary``, the
        Service Argo points at the canary's ReplicaSet) for their error rate, < 2 % passes, as
        Summit's templates say. Returns the stable Service's ClusterIP."""
        labels = {"app": name}
        stable_ip = self.add_service(f"{name}-stable", labels)
        canary_ip = self.add_service(f"{name}-canary", labels)
        self.custom.create_namespaced_custom_object(
            "argoproj.io", "v1alpha1", self.namespace, "analysistemplates",
            {
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "AnalysisTemplate",
                "metadata": {"name": "error-rate"},
                "spec": {
                    "metrics": [
                        {
                            "name": "error-rate",
                            "count": 1,
                            # the canary Service's new selector has reached the proxy by then
                            "initialDelay": "2s",
                            "failureLimit": 0,
                            "successCondition": "result < 0.02",
                            "provider": {"web": {"url": f"http://{canary_ip}/analysis", "jsonPath": "{$.error_rate}"}},
                        }
                    ]
                },
            },
        )  # fmt: skip
        self.custom.create_namespaced_custom_object(
            "argoproj.io", "v1alpha1", self.namespace, "rollouts",
            {
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "Rollout",
                "metadata": {"name": name},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "terminationGracePeriodSeconds": 5,
                            "containers": [
                                {
                                    "name": container,
                                    "image": image,
                                    "ports": [{"containerPort": 8080}],
                                    "readinessProbe": {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 1, "failureThreshold": 1},
                                }
                            ],
                        },
                    },
                    "strategy": {
                        "canary": {"steps": steps, "canaryService": f"{name}-canary", "stableService": f"{name}-stable"}
                    },
                },
            },
        )  # fmt: skip
        self.settle(
            lambda: self.rollout(name).get("status", {}).get("phase") == "Healthy", f"rollout {name} Healthy"
        )
        return stable_ip

    def rollout(self, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(
            "argoproj.io", "v1alpha1", self.namespace, "rollouts", name
        )

    # -- reading ---------------------------------------------------------------------------------

    def settle(self, condition: Any, what: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout_s:g} s: {what}")
            time.sleep(0.2)

    def deployment(self, name: str) -> Any:
        return self.apps.read_namespaced_deployment(name, self.namespace)

    def rolled_out(self, name: str) -> bool:
        return rollout_state(self.deployment(name)).done

    def image(self, name: str, container: str | None = None) -> str:
        containers = self.deployment(name).spec.template.spec.containers
        return next(c.image for c in containers if c.name == (container or name))

    def image_changes(self) -> list[tuple[str, str]]:
        """(deployment, image) for every image releasegate asked the API server to set, in order."""
        found = []
        for method, path, body in self.session.proxy.changes[self._changes_from :]:
            if method == "PATCH" and "/deployments/" in path and isinstance(body, list):
                for op in body:
                    if op.get("path", "").endswith("/image") or op.get("path") == "/spec/template":
                        value = op["value"]
                        image = value if isinstance(value, str) else value["spec"]["containers"][1]["image"]
                        found.append((path.rsplit("/", 1)[-1], image))
        return found

    def pods(self, name: str) -> list[Any]:
        """The deployment's pods that are not on their way out."""
        selector = self.deployment(name).spec.selector.match_labels
        return [
            p
            for p in self.core.list_namespaced_pod(self.namespace).items
            if all((p.metadata.labels or {}).get(k) == v for k, v in selector.items())
            and p.metadata.deletion_timestamp is None
        ]
