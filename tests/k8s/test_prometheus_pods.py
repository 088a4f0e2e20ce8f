"""The sandbox's Prometheus finds the pods of a release itself, through its own Kubernetes service
discovery on the real API server, as a production Prometheus does (sandbox.prometheus.PodDiscovery).

What a user would see in Prometheus is asserted through its HTTP API: each ready pod of the
release is a series ``up == 1`` labelled with its ``release`` (read from the container's image in
the registry's tag shape: ``ghcr.io/summit/server:v4.0.0-ga`` is release 4.0.0) and its
``instance`` (the pod's name); after an image change the new release's pods take their place;
a pod that does not ask to be scraped is not.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from real_cluster import Cluster

from releasegate.config import MetricsSettings
from sandbox.control_plane import free_port
from sandbox.prometheus import PodDiscovery, Prometheus

JOB = "summit"
IMAGE = "ghcr.io/summit/server"


@pytest.fixture
def prometheus(kube: Cluster, tmp_path: Path) -> Iterator[Prometheus]:
    """A Prometheus scraping every second the pods of the test's namespace. The tag shapes are
    the sandbox's registry's (sandbox/images.toml, the default): the test registry runs the same
    repositories as the workload, whatever their tags."""
    metrics = MetricsSettings(prometheus_url=f"http://127.0.0.1:{free_port()}", scrape_interval_s=1)
    pods = PodDiscovery(kube.session.sandbox.kubeconfig, kube.namespace)
    server = Prometheus(tmp_path, metrics, None, JOB, pods=pods)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def deploy(kube: Cluster, name: str, image: str, *, scrape: bool = True, replicas: int = 2) -> None:
    """A Deployment of ``image`` beside a log-shipping sidecar (an image and no port of the
    release: not a target), annotated to be scraped on its port 8080 when ``scrape``."""
    annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": "8080"} if scrape else {}
    kube.apps.create_namespaced_deployment(
        kube.namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "template": {
                    "metadata": {"labels": {"app": name}, "annotations": annotations},
                    "spec": {
                        "terminationGracePeriodSeconds": 5,
                        "containers": [
                            {"name": "log-shipper", "image": "fluent/fluent-bit:3.0"},
                            {
                                "name": "server",
                                "image": image,
                                "ports": [{"containerPort": 8080}],
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
    kube.settle(lambda: kube.rolled_out(name), f"deployment {name} rolled out")


def series(prometheus: Prometheus, query: str) -> list[dict[str, Any]]:
    """The instant vector Prometheus answers ``query`` with: each series' labels and value."""
    answer = httpx.get(f"{prometheus.url}/api/v1/query", params={"query": query}, timeout=5, trust_env=False)
    answer.raise_for_status()
    return [{**s["metric"], "value": s["value"][1]} for s in answer.json()["data"]["result"]]


def up(prometheus: Prometheus) -> set[tuple[str, str, str]]:
    """(instance, release, value) of every series of ``up`` of the job."""
    return {
        (s["instance"], s.get("release", ""), s["value"]) for s in series(prometheus, f'up{{job="{JOB}"}}')
    }


def instances(prometheus: Prometheus, query: str) -> set[str]:
    return {s["instance"] for s in series(prometheus, query)}


def running(kube: Cluster, name: str) -> set[str]:
    return {p.metadata.name for p in kube.pods(name)}


def test_prometheus_finds_the_pods_of_a_release_and_follows_an_image_change(
    kube: Cluster, prometheus: Prometheus
):
    deploy(kube, "summit-server", f"{IMAGE}:v4.0.0-ga")
    deploy(kube, "unscraped", f"{IMAGE}:v9.9.9-ga", scrape=False, replicas=1)
    first = running(kube, "summit-server")

    expected = {(pod, "4.0.0", "1") for pod in first}
    kube.settle(lambda: up(prometheus) == expected, f"up == 1 for each pod of release 4.0.0: {expected}")
    for s in series(prometheus, f'up{{job="{JOB}"}}'):
        assert s["pod"] == s["instance"] and s["namespace"] == kube.namespace
        assert s["__name__"] == "up" and s["job"] == JOB
    probes = 'workload_requests_total{release="4.0.0",path="/health"}'
    kube.settle(lambda: instances(prometheus, probes) == first, "the pods' own metrics, with their release")

    kube.apps.patch_namespaced_deployment(
        "summit-server",
        kube.namespace,
        [{"op": "replace", "path": "/spec/template/spec/containers/1/image", "value": f"{IMAGE}:v4.1.0-ga"}],
    )
    kube.settle(
        lambda: kube.rolled_out("summit-server") and not running(kube, "summit-server") & first,
        "the new release rolled out and the old pods are gone",
    )
    second = running(kube, "summit-server")

    expected = {(pod, "4.1.0", "1") for pod in second}
    kube.settle(lambda: up(prometheus) == expected, f"only the new release's pods: {expected}")
    unscraped = running(kube, "unscraped")
    assert unscraped and not instances(prometheus, "{namespace!=''}") & unscraped
    assert not series(prometheus, 'up{release="9.9.9"}')
