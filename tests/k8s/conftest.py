"""Fixtures of the Kubernetes tests.

``kube``: a namespace of its own on a real control plane (real_cluster.py; one control plane per
test file, so that none idles beside the other files' tests; built by ``make k8s-tools``). The
control plane has three nodes of the sandbox's node agent; a file whose tests need metrics-server
or the Argo Rollouts controller says so with ``pytestmark = pytest.mark.cluster(metrics=True,
argo=True)``: each costs CPU for as long as the file runs, and metrics-server about 10 s to start.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the cluster's helpers sit next to the tests
    sys.path.insert(0, str(HERE))

from real_cluster import Cluster, Session  # noqa: E402


@pytest.fixture(scope="module")
def kube_session(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Session]:
    """The file's real control plane and three nodes, with what its ``cluster`` marker asks for."""
    marker = request.node.get_closest_marker("cluster")
    wanted = marker.kwargs if marker else {}
    session = Session(
        tmp_path_factory.mktemp("kubernetes"),
        metrics=wanted.get("metrics", False),
        argo=wanted.get("argo", False),
    )
    try:
        yield session
    finally:
        session.close()


@pytest.fixture
def kube(kube_session: Session, tmp_path: Path) -> Iterator[Cluster]:
    """A namespace of its own on the real control plane, deleted after the test."""
    namespace = Cluster(kube_session, tmp_path)
    try:
        yield namespace
    finally:
        namespace.close()
