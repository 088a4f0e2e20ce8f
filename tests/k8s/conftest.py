"""Fixtures of the Kubernetes tests: a simulated cluster per test (see k8s_simulation.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the emulator and simulation modules sit next to the tests
    sys.path.insert(0, str(HERE))

from k8s_cluster import Cluster  # noqa: E402


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
