"""Fixtures of the Kubernetes tests.

``kube``: a namespace of its own on a real control plane (real_cluster.py; one control plane per
test file, so that none idles beside the other files' tests; built by ``make k8s-tools``).
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
def kube_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    """The file's real control plane, three nodes of the sandbox's node agent, metrics-server, Argo Rollouts."""
    session = Session(tmp_path_factory.mktemp("kubernetes"))
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
