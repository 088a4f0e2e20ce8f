"""Running the suites the way an SRE does (a subprocess, its exit code, its reports) and looking
at the sandbox the way an SRE would afterwards (each instance's /health, psql)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from releasegate.config import Environment, load_environment
from releasegate.evidence import Evidence
from releasegate.ledger import Ledger, RunRecord
from releasegate.platforms import make_platform
from releasegate.probes.health import read_health
from releasegate.probes.http import Http

ROOT = Path(__file__).resolve().parents[1]
TEST_PLUGINS_OFF = ("-p", "no:asyncio", "-p", "no:anyio")
"""The pytest plugins of this test suite (pytest-asyncio, anyio's), which a gate run has no use
for: loading them costs every gate run CPU, on a machine the suite keeps busy."""


CRITICAL_PATH_STEPS = [
    "test data: a requester cleared S and an approver cleared TS",
    "requester logs in",
    "requester creates an entity",
    "requester asks for a high-risk operation: delete it",
    "approver logs in and approves",
    "requester reads the result",
    "audit shows each step",
]
"""Summit GA 6.4's critical path as a reviewer reads it in the reports, step by step."""


def lines(records: list[Evidence]) -> str:
    """Evidence records as every report shows them, one a line."""
    return "\n".join(r.line() for r in records)


@dataclass
class GateRun:
    code: int
    output: str
    reports: Path

    @property
    def report(self) -> str:
        return (self.reports / "deployment-report.md").read_text()


def everything_written(reports: Path) -> str:
    """Every file a run left in its reports directory (reports, JUnit, HTML, Allure results,
    the ledger and its WAL), as text: where a secret must never be found."""
    return "\n".join(p.read_bytes().decode("latin-1") for p in sorted(reports.rglob("*")) if p.is_file())


def run_gates(env_file: Path, release: str, *extra: str, **env_vars: str) -> GateRun:
    return run_suite("gates/", env_file, f"--release={release}", *extra, **env_vars)


def run_suite(suite: str, env_file: Path, *extra: str, **env_vars: str) -> GateRun:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *TEST_PLUGINS_OFF, suite, f"--env={env_file}", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env_vars},
    )
    output = proc.stdout + proc.stderr
    return GateRun(proc.returncode, output, env_file.parent / "reports")


def environment(env_file: Path) -> Environment:
    return load_environment(str(env_file), ROOT)


def serving(env_file: Path) -> list[tuple[str, str, str]]:
    """(release, "healthy" or the status it gave, the version it reports) of every instance nginx
    routes to, read by the environment's own health contract."""
    env = environment(env_file)
    status = make_platform(env).status()
    answers = []
    for instance in status.instances:
        if instance.name in status.in_service:
            health = read_health(Http(instance.url, timeout_s=5), env.verify.health_path, env.verify.health)
            answers.append(
                (instance.release, "healthy" if health.healthy else str(health.status), health.version)
            )
    return answers


def database(env_file: Path) -> dict[str, object]:
    """What an SRE would look at in psql: schema version, columns, rows."""
    with psycopg.connect(environment(env_file).database.dsn) as conn:
        version = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
        columns = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'customers' ORDER BY 1"
            )
        ]
        customers = conn.execute("SELECT count(*) FROM customers").fetchone()[0]
        orders = conn.execute("SELECT count(*), sum(amount_cents) FROM orders").fetchone()
    return {"version": version, "columns": columns, "customers": customers, "orders": tuple(orders)}


def instance_ports(env_file: Path) -> list[str]:
    return sorted(i.url for i in make_platform(environment(env_file)).status().instances)


def ledger(env_file: Path) -> Ledger:
    return Ledger(env_file.parent / "reports" / "ledger.sqlite")


def runs(env_file: Path) -> list[RunRecord]:
    """Every run in the sandbox's ledger, newest first."""
    book = ledger(env_file)
    return [book.run(run_id) for run_id in book.runs(environment(env_file).name, limit=100)]


def start_gates(env_file: Path, release: str, *extra: str) -> subprocess.Popen[str]:
    """The gates in the background, their output line by line, for killing or interrupting them."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            *TEST_PLUGINS_OFF,
            "gates/",
            f"--env={env_file}",
            f"--release={release}",
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=_ctrl_c_obeyed,
    )


def _ctrl_c_obeyed() -> None:
    """A shell without job control starts background jobs (``make test &``, ``nohup``) with SIGINT
    ignored, and an ignored SIGINT is inherited: Python then never turns it into Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_when(
    proc: subprocess.Popen[str], ready: Callable[[str], bool], sig: signal.Signals, timeout_s: float = 120
) -> str:
    """Read the run's output until ``ready(line)``, then send ``sig``; returns all the output."""
    return act_when(proc, ready, lambda: proc.send_signal(sig), timeout_s)


def act_when(
    proc: subprocess.Popen[str],
    ready: Callable[[str], bool],
    act: Callable[[], object],
    timeout_s: float = 180,
) -> str:
    """Read the run's output until ``ready(line)``, then ``act()`` (stop a dependency, send a
    signal); wait for the run to end and return all its output."""
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    for line in proc.stdout:
        seen.append(line)
        if ready(line):
            act()
            break
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the moment to act never came:\n" + "".join(seen))
    else:
        proc.wait(timeout=timeout_s)
        raise AssertionError("the run ended before the moment to act came:\n" + "".join(seen))
    rest, _ = proc.communicate(timeout=timeout_s)
    return "".join(seen) + (rest or "")
