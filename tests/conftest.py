"""Fixtures shared by the project's tests: real sandboxes on free ports (see sandbox_env.py)."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `sandbox` is a top-level package of the repository, not installed
    sys.path.insert(0, str(ROOT))

from sandbox_env import running_sandbox, write_sandbox_env  # noqa: E402

from releasegate.evidence import Checker, Evidence  # noqa: E402


def _own_dir() -> Iterator[Path]:
    """A directory outside pytest's numbered temp dirs: a concurrent pytest session (another
    terminal, CI on the same runner) prunes old numbered dirs, and a running PostgreSQL whose
    data directory vanishes dies mid-test."""
    path = Path(tempfile.mkdtemp(prefix="releasegate-test-"))
    path.chmod(0o755)  # PostgreSQL runs as its own user and must traverse it
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sandbox_dir() -> Iterator[Path]:
    """Where a test's sandbox lives (see _own_dir)."""
    yield from _own_dir()


@pytest.fixture
def sandbox_env(sandbox_dir: Path) -> Iterator[Path]:
    """A fresh sandbox serving 1.0.0 on free ports; yields its environment file; always torn down.

    Without [metrics] (no Prometheus, no SLO gates): tests about metrics ask for them."""
    with running_sandbox(write_sandbox_env(sandbox_dir, metrics=None)) as env_file:
        yield env_file


@pytest.fixture(scope="module")
def module_sandbox_dir() -> Iterator[Path]:
    yield from _own_dir()


@pytest.fixture(scope="module")
def module_sandbox_env(module_sandbox_dir: Path) -> Iterator[Path]:
    """The same, shared by the tests of one module (for tests that leave it as they found it)."""
    with running_sandbox(write_sandbox_env(module_sandbox_dir, metrics=None)) as env_file:
        yield env_file


@pytest.fixture
def records() -> list[Evidence]:
    """Every evidence record a test's ``check`` wrote, in order."""
    return []


@pytest.fixture
def check(request: pytest.FixtureRequest, records: list[Evidence]) -> Checker:
    """The gates' Checker outside a deployment run, keeping what it records in ``records``
    (journeys run in-process; plugin's own ``check`` needs a run)."""
    return Checker(records.append, request.node.nodeid, "verify")


# -- the order the files are handed to the workers ------------------------------------------------

LONGEST_FIRST = (
    "test_lease.py",
    "test_replicas_kubernetes.py",
    "test_replicas_kubernetes_release_manager.py",
    "test_notes_contracts.py",
    "test_replicas_kubernetes_granter.py",
    "test_canary_notes.py",
    "test_replicas_release_manager.py",
    "test_replicas_summit.py",
    "k8s/test_rolling.py",
    "test_history_baseline.py",
    "test_migration_watch.py",
    "test_canary.py",  # its healthy canary is judged on latency: not beside the Kubernetes stacks
    "test_replicas_granter.py",
    "test_gates.py",
    "test_rollback.py",
    "test_plan.py",
    "test_interruptions.py",
    "test_slo_verify.py",
    "test_slo_observe.py",
    "test_gates_database.py",
    "k8s/test_argo.py",
    "test_readiness_gates.py",
    "k8s/test_k8s_before_rollout.py",
    "test_metrics_sandbox.py",
    "test_blue_green.py",
    "k8s/test_helm.py",
    "k8s/test_strategies.py",
    "test_policy_gates.py",
)
"""Test files by how long they take (--durations, 2026-12-08), longest first; the rest follow in
pytest's order. make test hands files to the workers in this order (--dist loadfile
--no-loadscope-reorder): a long file started last would be the run's tail, and xdist's own
order (most tests first) starts the long files, which have few tests, last."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}

    def key(item: pytest.Item) -> int:
        try:
            name = Path(str(item.path)).resolve().relative_to(here).as_posix()
        except ValueError:
            return len(rank)
        return rank.get(name, len(rank))

    items.sort(key=key)  # stable: each file's tests keep their order
