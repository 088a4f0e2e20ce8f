"""Fixtures of the Kubernetes tests.

``kube``: a namespace of its own on a real control plane (real_cluster.py; one control plane per
test file, so that none idles beside the other files' tests; built by ``make k8s-tools``). ``cluster``: the simulated cluster
(k8s_simulation.py) the tests not yet moved to the real API still use.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the emulator and simulation modules sit next to the tests
    sys.path.insert(0, str(HERE))

from k8s_cluster import Cluster  # noqa: E402
from real_cluster import Cluster as RealCluster  # noqa: E402
from real_cluster import Session  # noqa: E402


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A fresh simulated cluster with three Ready nodes, torn down after the test."""
    simulated = Cluster(tmp_path)
    try:
        simulated.add_nodes(3)
        yield simulated
    finally:
        simulated.close()
    assert not simulated.sim.errors, f"the simulation failed: {simulated.sim.errors[0]!r}"


@pytest.fixture(scope="module")
def kube_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    """The file's real control plane, three nodes of the sandbox's node agent, Argo Rollouts."""
    session = Session(tmp_path_factory.mktemp("kubernetes"))
    try:
        yield session
    finally:
        session.close()


@pytest.fixture
def kube(kube_session: Session, tmp_path: Path) -> Iterator[RealCluster]:
    """A namespace of its own on the real control plane, deleted after the test."""
    namespace = RealCluster(kube_session, tmp_path)
    try:
        yield namespace
    finally:
        namespace.close()
