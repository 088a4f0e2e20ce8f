"""What the benchmarks share: a sandbox on free ports, timing, and a table for BENCHMARKS.md."""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from sandbox_env import running_sandbox, write_sandbox_env  # noqa: E402

PYTHON = sys.executable


@contextmanager
def sandbox(**overrides: object) -> Iterator[Path]:
    """A sandbox on free ports in its own directory; yields its environment file."""
    with tempfile.TemporaryDirectory(prefix="releasegate-bench-") as directory:
        Path(directory).chmod(0o755)
        with running_sandbox(
            write_sandbox_env(Path(directory), **overrides), progress=lambda _line: None
        ) as env:
            yield env


def timed(command: list[str], cwd: Path = ROOT, env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Wall time of a command, its exit code and its output."""
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env, check=False)
    return time.perf_counter() - started, proc.returncode, proc.stdout + proc.stderr


def alternate(runs: int, **commands: Callable[[], float]) -> dict[str, list[float]]:
    """Run each measurement in turn, ``runs`` times, so both see the same noisy machine."""
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, measure in commands.items():
            samples[name].append(measure())
    return samples


def run_back(env_file: Path) -> int:
    """``pytest rollback/``: the sandbox back on 1.0.0 between two runs of a bench."""
    _s, code, _out = timed(
        [
            PYTHON,
            "-m",
            "pytest",
            "rollback/",
            f"--env={env_file}",
            "--release=1.0.0",
            f"--reports={env_file.parent / 'reports'}",
        ]
    )
    return code


def median(values: list[float]) -> float:
    return statistics.median(values)
