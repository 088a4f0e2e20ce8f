"""Time from a failed verify gate to the previous release serving on every instance.

    python bench/rollback_time.py [--runs 3]

Deploys 2.0.0-bad-health to a fresh sandbox (1.0.0 on three instances) and reads, from the
ledger's timestamps: the failed gate, the start of the undo, the platform's first new
instance, and nginx sending all traffic to the previous release. releasegate's own part is
everything but the platform starting processes and waiting for them to be ready (which
min_ready_s, 2 s in the sandbox, dominates). Target: under 10 s in all, under 1 s of it
releasegate's own.
"""

from __future__ import annotations

import argparse
import sqlite3
from datetime import datetime

from common import PYTHON, median, sandbox, timed


def stamp(text: str) -> datetime:
    return datetime.fromisoformat(text)


def one_run() -> dict[str, float]:
    with sandbox() as env_file:
        reports = env_file.parent / "reports"
        _seconds, code, out = timed(
            [
                PYTHON,
                "-m",
                "pytest",
                "gates/",
                f"--env={env_file}",
                "--release=2.0.0-bad-health",
                f"--reports={reports}",
            ]
        )
        assert code == 11, out[-3000:]
        db = sqlite3.connect(reports / "ledger.sqlite")
        run_id, undo_started = db.execute(
            "SELECT id, undo_started_at FROM runs ORDER BY started_at DESC"
        ).fetchone()
        failed = db.execute(
            "SELECT at FROM gates WHERE run_id = ? AND outcome = 'failed'", (run_id,)
        ).fetchone()[0]
        events = db.execute("SELECT at, line FROM events WHERE run_id = ? ORDER BY seq", (run_id,)).fetchall()
        after = [(stamp(at), line) for at, line in events if stamp(at) >= stamp(undo_started)]
        first_start = next(at for at, line in after if line.startswith("started 1.0.0"))
        last_ready = max(at for at, line in after if line.startswith("1.0.0 on") and "ready after" in line)
        switched = next(at for at, line in after if line == "nginx -> 1.0.0×3")
    failed_at, undo_at = stamp(failed), stamp(undo_started)
    total = (switched - failed_at).total_seconds()
    platform_wait = (last_ready - first_start).total_seconds()  # processes starting, readiness, min_ready_s
    return {"total": total, "own": total - platform_wait, "decide": (undo_at - failed_at).total_seconds()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = [one_run() for _ in range(args.runs)]
    total, own, decide = (median([r[key] for r in runs]) for key in ("total", "own", "decide"))
    print(
        f"failed verify gate -> 1.0.0 serving on every instance: {total:.2f} s "
        f"(releasegate's own part {own:.2f} s, of which deciding to roll back {decide:.3f} s; "
        f"median of {args.runs})"
    )


if __name__ == "__main__":
    main()
