"""Baselines that hold (issue 14, item 4): a rolling update judged against the baseline measured
before it, and against the previous release's own history, side by side on one noisy sandbox.

    python bench/baseline_history.py --runs 5 --healthy-runs 10 --background-error-rate 0.0005

One sandbox rolling one instance at a time (Prometheus every second, 100 requests/s of
synthetic load, every release failing ``--background-error-rate`` of its API requests at
random); ``python -m sandbox history --offset 1d`` gives 1.0.0 a day of history first (60 s of
it serving under that load, laid a day back with promtool). Then, interleaved so that both see
the same machine, each ``[metrics.baseline] source``:

- ``before``: the baseline measured in preflight, a median of three samples of every route;
- ``history``: 1.0.0 over the same window a day before, route by route, at every sample;

deploys ``2.0.0-slow-endpoint`` (GET /api/customers, one request in eight, 1.5 times as slow)
``--runs`` times and the healthy ``2.0.0`` ``--healthy-runs`` times, each put back with
``pytest rollback/``. It prints a markdown table for BENCHMARKS.md with the command and date.
Load goes to 127.0.0.1 only, at the sandbox's bounded rate.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from common import PYTHON, ROOT
from judgement_noise import GOOD, SLOW_ENDPOINT, Run, deploy, noisy_sandbox
from sandbox_env import variant

SOURCES = ("before", "history")
RUN_S = 120
"""A gate run and its rollback, generously: the history must reach past the last run."""


def with_history(env_file: Path, cover_s: float) -> None:
    """1.0.0 at this time yesterday: 60 s of it serving under the sandbox's load, laid out for the
    ``cover_s`` seconds the runs will take."""
    made = subprocess.run(
        [
            *(PYTHON, "-m", "sandbox", "history", "--env", str(env_file), "--offset", "1d"),
            *("--record-s", "60", "--cover-s", f"{cover_s:.0f}"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode:
        raise SystemExit(f"sandbox history failed: {made.stdout}{made.stderr}")


def row(source: str, release: str, runs: list[Run]) -> str:
    rolled_back = [r for r in runs if r.code == 11]
    other = [r for r in runs if r.code not in (0, 11)]
    gates = sorted({r.failed_gate.rsplit("::", 1)[-1] for r in rolled_back})
    where = ", ".join(f"`{g}`" for g in gates) or "-"
    wall = sorted(r.wall_s for r in runs)
    extra = f" ({len(other)} other: exit {', '.join(str(r.code) for r in other)})" if other else ""
    return (
        f"| `{source}` | `{release}` | {len(runs)} | {len(rolled_back)} of {len(runs)}{extra} | {where} | "
        f"{wall[len(wall) // 2]:.0f} s |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="deployments of the slow endpoint per source")
    parser.add_argument("--healthy-runs", type=int, default=10, help="deployments of 2.0.0 per source")
    parser.add_argument("--background-error-rate", type=float, default=0.0005)
    args = parser.parse_args()
    started = time.monotonic()
    results: dict[tuple[str, str], list[Run]] = {(s, r): [] for s in SOURCES for r in (SLOW_ENDPOINT, GOOD)}
    with noisy_sandbox(args.background_error_rate, None) as base:
        rolling = variant(base, "rolling", **{"platform.local.strategy": "rolling"})
        with_history(rolling, cover_s=RUN_S * len(SOURCES) * (args.runs + args.healthy_runs) + 600)
        envs = {
            source: variant(rolling, source, **{"metrics.baseline": {"source": source, "offsets": ["1d"]}})
            for source in SOURCES
        }
        for i in range(max(args.runs, args.healthy_runs)):
            for source, env_file in envs.items():
                for release, count in ((SLOW_ENDPOINT, args.runs), (GOOD, args.healthy_runs)):
                    if i < count:
                        run = deploy(env_file, release)
                        results[source, release].append(run)
                        print(f"{source} {release}: {run}", file=sys.stderr, flush=True)
    command = "python bench/baseline_history.py " + shlex.join(sys.argv[1:])
    lines = [
        f"    {command}",
        "",
        f"Measured on {datetime.now(UTC):%Y-%m-%d}: a rolling update, background error rate "
        f"{args.background_error_rate:g} in every release, 100 requests/s of load, the sandbox's 30 s watch.",
        "",
        "| baseline | release | runs | rolled back | by | median gate run |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [row(source, release, runs) for (source, release), runs in results.items()]
    print("\n".join(lines))
    print(f"\n({(time.monotonic() - started) / 60:.1f} min in all)")


if __name__ == "__main__":
    main()
