"""The pure parts of the sandbox's Kubernetes (no control plane needed): the registry's
catalog, the pods' addresses, the service proxy's table, memory quantities."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace as NS

import pytest

from sandbox.control_plane import listen_address
from sandbox.images import DEFAULT, Catalog, Resolved, split_image
from sandbox.kubelet import memory_bytes
from sandbox.replicas.release_manager import COMMITS
from sandbox.service_proxy import routes


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("ghcr.io/summit/server:v4.0.0-ga", ("ghcr.io/summit/server", "v4.0.0-ga")),
        ("registry.local:5000/team/app:v1", ("registry.local:5000/team/app", "v1")),
        ("release-manager:prod-abc123", ("release-manager", "prod-abc123")),
        ("nginx", ("nginx", "latest")),
    ],
)
def test_an_image_splits_into_repository_and_tag(image, expected):
    assert split_image(image) == expected


def test_the_sandbox_registry_runs_each_runbook_service_by_its_own_tag_shape():
    catalog = Catalog.load(DEFAULT)

    summit = catalog.resolve("ghcr.io/summit/server:v4.0.0-ga")
    manager = catalog.resolve(f"release-manager:prod-{COMMITS['2024.01.15'][:7]}")  # git rev-parse --short
    demo = catalog.resolve("releasegate/demo:2.0.0-crashloop")

    assert isinstance(summit, Resolved) and summit.release == "4.0.0"
    assert "sandbox.replicas.summit" in summit.argv(host="127.1.2.3", port=8080)
    assert summit.argv(host="127.1.2.3", port=8080)[-4:] == ["--host", "127.1.2.3", "--port", "8080"]
    assert isinstance(manager, Resolved) and manager.release == "2024.01.15"
    assert isinstance(demo, Resolved) and demo.release == "2.0.0-crashloop"
    assert "has no release prod-2024.01.15" in catalog.resolve("release-manager:prod-2024.01.15")


@pytest.mark.parametrize(
    ("image", "why"),
    [
        ("ghcr.io/summit/server:v9.9.9-ga", "has no release v9.9.9-ga"),
        ("ghcr.io/summit/server:4.0.0", "has no release 4.0.0"),  # the tag's shape is v{release}-ga
        ("release-manager:prod-0000000", "has no release prod-0000000"),  # no tag on that commit
        ("docker.io/unknown/app:1", "no repository docker.io/unknown/app"),
        ("releasegate/demo@sha256:" + "0" * 64, "digests are not served"),
    ],
)
def test_an_image_the_registry_does_not_have_says_why(image, why):
    assert why in Catalog.load(DEFAULT).resolve(image)


def test_a_tag_taken_out_of_a_registry_cannot_be_pulled(tmp_path: Path):
    path = tmp_path / "images.toml"
    path.write_text('[images."app"]\ncommand = ["true"]\nreleases = ["1", "2"]\nmissing = ["2"]\n')

    catalog = Catalog.load(path)

    assert isinstance(catalog.resolve("app:1"), Resolved)
    assert "has no release 2" in catalog.resolve("app:2")
    assert "has no release 3" in catalog.resolve("app:3")


def test_a_pod_listens_on_the_loopback_twin_of_its_address():
    assert listen_address("100.97.3.4") == "127.97.3.4"
    with pytest.raises(ValueError, match="not a sandbox pod address"):
        listen_address("10.0.0.1")


def _slice(service, port, endpoints, namespace="ns", port_name=None):
    return NS(
        metadata=NS(namespace=namespace, labels={"kubernetes.io/service-name": service}),
        ports=[NS(name=port_name, port=port)],
        endpoints=[NS(addresses=[ip], conditions=NS(ready=ready)) for ip, ready in endpoints],
    )


def test_the_proxy_routes_a_service_to_its_ready_endpoints_only():
    service = NS(
        metadata=NS(namespace="ns", name="web"),
        spec=NS(cluster_ip="127.96.0.10", ports=[NS(name=None, port=80)]),
    )
    headless = NS(
        metadata=NS(namespace="ns", name="db"), spec=NS(cluster_ip="None", ports=[NS(name=None, port=5432)])
    )
    slices = [
        _slice("web", 8080, [("100.96.0.2", True), ("100.96.0.3", False), ("100.96.0.4", None)]),
        _slice("web", 8080, [("100.96.0.9", True)], namespace="other"),  # another namespace's web
    ]

    table = routes([service, headless], slices)

    assert table == {("127.96.0.10", 80): [("127.96.0.2", 8080), ("127.96.0.4", 8080)]}


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [("256Mi", 256 * 2**20), ("1Gi", 2**30), ("500M", 500 * 10**6), ("1024", 1024), (None, None)],
)
def test_memory_limits_are_read_as_kubernetes_writes_them(quantity, expected):
    assert memory_bytes(quantity) == expected
