"""A measured trade-off: false rollbacks on a noisy service against the time to catch small faults.

    python bench/judgement_noise.py --healthy-runs 30 --bad-runs 3 --background-error-rate 0.0005

One sandbox (Prometheus scraping every second, 100 requests/s of synthetic load through nginx,
the sandbox's own canary steps unless ``--steps``) whose every release answers a share of its API
requests with a 500 at random (``python -m sandbox up --background-error-rate``: every instance,
whoever starts it, a canary or a rollback), beside the demo's natural latency noise (its
lognormal downstream wait and whatever the machine adds):

- ``2.0.0`` (good) is deployed as a canary against 1.0.0 ``--healthy-runs`` times, and put back
  with ``pytest rollback/`` between runs: every run that does not promote is a false rollback,
  counted with its reason (the failed gate and its message);
- ``2.0.0-errors-5x`` (five times the background error rate) and ``2.0.0-slow-endpoint``
  (GET /api/customers, one request in eight of the load, 1.5 times as slow; every other route
  unchanged) are deployed
  ``--bad-runs`` times each: caught or not, at which canary step, and the seconds from the
  canary's first traffic to the rollback decision (the ledger's event timestamps).

It prints a markdown table for BENCHMARKS.md, with the command and the date. Load goes to
127.0.0.1 only, at the sandbox's bounded rate ([metrics.load]).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
from common import PYTHON, median, run_back, timed
from sandbox_env import write_sandbox_env

from releasegate.config import load_environment
from sandbox import stack

GOOD, ERRORS_5X, SLOW_ENDPOINT = "2.0.0", "2.0.0-errors-5x", "2.0.0-slow-endpoint"
OVERRIDES: dict[str, object] = {
    "platform.local.strategy": "canary",
    "metrics.load.rps": 100,  # the sandbox's own (the tests' sandboxes halve it)
}
"""The sandbox's own watch (30 s) is kept: a release failing 0.25 % of requests against a 0.1 % SLO
shows only over thousands of requests, which the canary's early steps never have."""
STEP_FAILED = re.compile(r"canary step ([\d.]+) % failed: (.*?)(?:: taking the canary out)?$")


@dataclass
class Run:
    release: str
    code: int
    decision: str
    failed_phase: str
    failed_gate: str
    reason: str
    step: str  # the canary step that failed ("" when none did)
    seconds: float | None  # from the canary's first traffic to the rollback decision
    wall_s: float


@contextmanager
def noisy_sandbox(rate: float, steps: list[int] | None, watch_s: float | None = None) -> Iterator[Path]:
    """A sandbox on free ports whose releases all fail ``rate`` of their API requests; its watch
    after release ``watch_s`` long (default: the sandbox's own, 30 s)."""
    overrides = dict(OVERRIDES)
    if steps:
        overrides["metrics.canary.steps"] = steps
    if watch_s:  # the sandbox's first 30 s (every 2 s, then every 5 s), then every 10 s
        overrides["metrics.observe.schedule"] = [
            {"every_s": 2, "until_s": 10},
            {"every_s": 5, "until_s": 30},
            *([{"every_s": 10, "until_s": watch_s}] if watch_s > 30 else []),
        ]
    with tempfile.TemporaryDirectory(prefix="releasegate-bench-") as directory:
        Path(directory).chmod(0o755)
        env_file = write_sandbox_env(Path(directory), **overrides)
        sandbox = stack.load(env_file)
        try:
            sandbox.up(lambda _line: None, background_error_rate=rate)
            yield env_file
        finally:
            stack.down(env_file, lambda _line: None, force=True)


def instances_rate(env_file: Path) -> set[float]:
    """The background error rate every running instance reports on /metrics."""
    rates = set()
    for instance in stack.load(env_file).platform.status().instances:
        text = httpx.get(instance.url + "/metrics", timeout=5, trust_env=False).text
        found = re.search(r"^demo_background_error_rate ([0-9.e+-]+)$", text, re.M)
        rates.add(float(found.group(1)) if found else float("nan"))
    return rates


def gates(env_file: Path, release: str) -> tuple[float, int, str]:
    reports = env_file.parent / "reports"
    return timed(
        [
            PYTHON,
            "-m",
            "pytest",
            "gates/",
            f"--env={env_file}",
            f"--release={release}",
            f"--reports={reports}",
        ]
    )


def deploy(env_file: Path, release: str) -> Run:
    """One gate run of ``release`` as a canary, read back from the ledger; then back to 1.0.0."""
    wall_s, code, out = gates(env_file, release)
    db = sqlite3.connect(env_file.parent / "reports" / "ledger.sqlite")
    db.row_factory = sqlite3.Row
    run = db.execute("SELECT * FROM runs WHERE kind = 'deploy' ORDER BY started_at DESC LIMIT 1").fetchone()
    events = db.execute("SELECT at, line FROM events WHERE run_id = ? ORDER BY seq", (run["id"],)).fetchall()
    first_traffic = next(
        (
            datetime.fromisoformat(e["at"])
            for e in events
            if re.search(rf"canary {re.escape(release)} at (?!0 %)[\d.]+ %", e["line"])
        ),
        None,
    )
    failed_step = next(((e, m) for e in events if (m := STEP_FAILED.search(e["line"]))), None)
    failed_gate = run["failed_gate"] or ""
    reason = ""
    decided = None
    if failed_gate:
        gate = db.execute(
            "SELECT message, at FROM gates WHERE run_id = ? AND gate = ?", (run["id"], failed_gate)
        ).fetchone()
        if gate is not None:
            reason = first_line(gate["message"])
            decided = datetime.fromisoformat(gate["at"])
    step = ""
    if failed_step is not None:
        event, match = failed_step
        step, reason = match.group(1), reason or match.group(2)
        decided = datetime.fromisoformat(event["at"])
    if code not in (0, 10, 11, 12) and not reason:
        reason = f"pytest exited {code}: {first_line(out.strip().splitlines()[-1] if out.strip() else '')}"
    seconds = (decided - first_traffic).total_seconds() if decided and first_traffic else None
    back = run_back(env_file)
    if back not in (0, 4):  # 4: nothing to undo after a run that changed nothing
        print(f"warning: pytest rollback/ exited {back} after {release}", file=sys.stderr)
    return Run(
        release,
        code,
        run["decision"] or "",
        run["failed_phase"] or "",
        failed_gate,
        reason,
        step,
        seconds,
        wall_s,
    )


def where(run: Run) -> str:
    """ "5 %" for a canary step, else the phase and the gate ("verify: ...[error_ratio]")."""
    if run.step:
        return f"{run.step} %"
    return f"after the canary ({run.failed_phase}: `{run.failed_gate.rsplit('::', 1)[-1]}`)"


def first_line(text: str) -> str:
    return next((line.strip() for line in (text or "").splitlines() if line.strip()), "")[:200]


def table(args: argparse.Namespace, env_file: Path, healthy: list[Run], bad: dict[str, list[Run]]) -> str:
    env = load_environment(str(env_file), Path.cwd())
    assert env.metrics is not None and env.metrics.load is not None
    canary = env.metrics.canary
    command = "python bench/judgement_noise.py " + shlex.join(sys.argv[1:])
    lines = [
        f"    {command}",
        "",
        f"Measured on {datetime.now(UTC):%Y-%m-%d}: background error rate {args.background_error_rate:g} "
        f"in every release, canary steps {', '.join(str(s) for s in canary.steps)} %, pauses of "
        f"{canary.pause_s:g} s, {env.metrics.load.rps:g} requests/s of load, Prometheus every "
        f"{env.metrics.scrape_interval_s:g} s, a watch after release of {env.metrics.observe.duration_s:g} s.",
        "",
        "| release | runs | rolled back | at canary step | first canary traffic -> rollback decision |",
        "| --- | --- | --- | --- | --- |",
    ]
    false = [r for r in healthy if r.code != 0]
    if healthy:
        lines.append(
            f"| `{GOOD}` (healthy) | {len(healthy)} | **{len(false)} false** | "
            f"{', '.join(where(r) for r in false) or '-'} | |"
        )
    for release, runs in bad.items():
        caught = [r for r in runs if r.code == 11]
        times = [r.seconds for r in caught if r.seconds is not None]
        when = f"median **{median(times):.1f} s** ({', '.join(f'{t:.1f}' for t in times)})" if times else "-"
        steps = ", ".join(where(r) for r in caught) or "-"
        lines.append(f"| `{release}` | {len(runs)} | {len(caught)} of {len(runs)} | {steps} | {when} |")
    if false:
        lines += ["", "False rollbacks, by reason:", ""]
        for (gate, reason), count in Counter((r.failed_gate, r.reason) for r in false).most_common():
            lines.append(f"- {count} x `{gate}`: {reason}")
    missed = [r for runs in bad.values() for r in runs if r.code != 11]
    if missed:
        lines += ["", "Faulty releases not rolled back:", ""]
        lines += [
            f"- `{r.release}`: exit {r.code} ({r.decision or 'no decision'}) {r.reason}" for r in missed
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--healthy-runs", type=int, default=30)
    parser.add_argument("--bad-runs", type=int, default=3)
    parser.add_argument("--background-error-rate", type=float, default=0.0005)
    parser.add_argument(
        "--steps", type=lambda s: [int(x) for x in s.split(",")], help="canary steps, e.g. 5,50,100"
    )
    parser.add_argument(
        "--watch-s", type=float, help="the watch after release, in seconds (default: the sandbox's 30 s)"
    )
    parser.add_argument(
        "--only", choices=[GOOD, ERRORS_5X, SLOW_ENDPOINT], action="append", help="deploy only these releases"
    )
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    args = parser.parse_args()
    started = time.monotonic()
    with noisy_sandbox(args.background_error_rate, args.steps, args.watch_s) as env_file:
        rates = instances_rate(env_file)
        assert rates == {args.background_error_rate}, f"instances report background error rates {rates}"
        bad = {release: [] for release in (ERRORS_5X, SLOW_ENDPOINT) if not args.only or release in args.only}
        healthy: list[Run] = []
        for i in range(max(args.healthy_runs, args.bad_runs)):  # interleaved: the same machine for all
            for release in bad:
                if i < args.bad_runs:
                    bad[release].append(deploy(env_file, release))
                    print(f"{release}: {bad[release][-1]}", file=sys.stderr, flush=True)
            if i < args.healthy_runs and (not args.only or GOOD in args.only):
                healthy.append(deploy(env_file, GOOD))
                print(f"{GOOD}: {healthy[-1]}", file=sys.stderr, flush=True)
        print(table(args, env_file, healthy, bad))
    print(f"\n({(time.monotonic() - started) / 60:.1f} min in all)")
    if args.json:
        runs = [r.__dict__ for r in healthy] + [r.__dict__ for rs in bad.values() for r in rs]
        args.json.write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
