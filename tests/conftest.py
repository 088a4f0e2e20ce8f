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
