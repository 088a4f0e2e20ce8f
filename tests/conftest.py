"""Fixtures shared by the project's tests: real sandboxes on free ports (see sandbox_env.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `sandbox` is a top-level package of the repository, not installed
    sys.path.insert(0, str(ROOT))

from sandbox_env import running_sandbox, write_sandbox_env  # noqa: E402


@pytest.fixture
def sandbox_env(tmp_path: Path) -> Iterator[Path]:
    """A fresh sandbox serving 1.0.0 on free ports; yields its environment file; always torn down."""
    with running_sandbox(write_sandbox_env(tmp_path)) as env_file:
        yield env_file


@pytest.fixture(scope="module")
def module_sandbox_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The same, shared by the tests of one module (for tests that leave it as they found it)."""
    with running_sandbox(write_sandbox_env(tmp_path_factory.mktemp("sandbox"))) as env_file:
        yield env_file
