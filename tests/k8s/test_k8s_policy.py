"""The policy bundle on Kubernetes, as the Summit GA guide switches it (7.2): ``kubectl set env
deployment/opa BUNDLE_VERSION=...``, the Deployment's rollout, then the engine's own word.

The cluster is the simulation (k8s_simulation.py); OPA cannot run here, so the engine is a small
HTTP double on 127.0.0.1 answering ``/health/policy`` with the bundle its Deployment's pods were
started with once they are rolled out, as an OPA that pulls its bundle at start would.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from k8s_cluster import NAMESPACE, Cluster

from releasegate.actions.policy_kubernetes import KubernetesEnvBundle
from releasegate.config import PolicySettings
from releasegate.probes.policy import PolicyEngine


class OpaDouble:
    """Reports the bundle of the ``opa`` Deployment's rolled-out pod template; ``stuck`` keeps
    reporting the one it started with (a bundle that never loads)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.stuck = False
        self.reported = self.template_value()
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps({"status": "healthy", "bundleVersion": double.version()}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def template_value(self) -> str | None:
        container = next(
            c for c in self.cluster.deployment("opa").spec.template.spec.containers if c.name == "opa"
        )
        return next((e.value for e in container.env or [] if e.name == "BUNDLE_VERSION"), None)

    def version(self) -> str | None:
        if not self.stuck and self.cluster.rolled_out("opa"):
            self.reported = self.template_value()
        return self.reported

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def opa(cluster: Cluster) -> Iterator[OpaDouble]:
    cluster.add_deployment(
        "opa", "openpolicyagent/opa:1.4.0", replicas=2, env={"BUNDLE_VERSION": "v3.0.0-ga"}
    )
    double = OpaDouble(cluster)
    yield double
    double.close()


def switch(cluster: Cluster, opa: OpaDouble, timeout_s: float = 10) -> KubernetesEnvBundle:
    policy = PolicySettings.model_validate(
        {
            "url": opa.url,
            "bundle": {
                "kind": "kubernetes-env",
                "deployment": "opa",
                "container": "opa",
                "value": "v{release}-ga",
                "activation_timeout_s": timeout_s,
            },
        }
    )
    return KubernetesEnvBundle(PolicyEngine(policy, opa.url), policy.bundle, cluster.settings())


def test_the_engines_deployment_is_told_its_bundle_and_told_back(cluster, opa):
    bundles = switch(cluster, opa)
    prepared = bundles.prepare("4.0.0")
    assert (prepared.version, prepared.previous_version) == ("v4.0.0-ga", "v3.0.0-ga")
    assert prepared.about == (
        f"kubectl set env deployment/opa -n {NAMESPACE} BUNDLE_VERSION=v4.0.0-ga (was v3.0.0-ga)"
    )
    lines: list[str] = []

    forward = bundles.apply(prepared, lines.append)

    assert forward.ok and forward.active == "v4.0.0-ga", forward.detail
    assert opa.template_value() == "v4.0.0-ga"
    assert cluster.deployment("opa").metadata.annotations["deployment.kubernetes.io/revision"] == "2"
    assert any("successfully rolled out" in line for line in lines), "it waited for the restart"

    back = bundles.restore(prepared.undo, lines.append)

    assert back.ok and back.active == "v3.0.0-ga", back.detail
    assert opa.template_value() == "v3.0.0-ga" and opa.version() == "v3.0.0-ga"
    bundles.close()


def test_the_bundle_already_named_changes_nothing(cluster, opa):
    bundles = switch(cluster, opa)
    assert not bundles.prepare("3.0.0").changes
    bundles.close()


def test_an_engine_that_never_loads_the_bundle_fails_the_switch_with_what_it_reports(cluster, opa):
    opa.stuck = True
    bundles = switch(cluster, opa, timeout_s=1.5)

    result = bundles.apply(bundles.prepare("4.0.0"), lambda _line: None)

    assert not result.ok
    assert result.active == "v3.0.0-ga"
    assert result.detail == "not active after 1.5 s: the engine reports v3.0.0-ga"
    bundles.close()
