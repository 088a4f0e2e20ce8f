"""How fast the canary catches a bad release, how much harm it lets through, and how often it
cries wolf.

    python bench/canary_detection.py [--bad-runs 3] [--healthy-runs 20]

On one sandbox (Prometheus scraping every second, 100 requests/s of synthetic load), with the
canary steps 5, 50 and 100 % and 10 s pauses:
- `2.0.0-bad-errors` (every 50th API request of an instance answers 500) is deployed as a canary
  `--bad-runs` times. From the canary's own log and the ledger's timestamps: the first bad
  request, the rollback decision, and the moment no request reaches the canary any more; and the
  bad requests it served.
- `2.0.0` is deployed as a canary `--healthy-runs` times (rolled back with `pytest rollback/`
  between runs): every run that does not promote is a false positive (target: 0).
"""

from __future__ import annotations

import argparse
import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from common import PYTHON, median, run_back, sandbox, timed

from releasegate.config import load_environment

OVERRIDES = {
    "platform.local.strategy": "canary",
    "metrics.canary.steps": [5, 50, 100],
    "metrics.observe.schedule": [{"every_s": 4, "until_s": 8}],
}
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ERROR .*internal error")


def event_time(db: sqlite3.Connection, run_id: str, pattern: str) -> datetime:
    for at, line in db.execute("SELECT at, line FROM events WHERE run_id = ? ORDER BY seq", (run_id,)):
        if re.search(pattern, line):
            return datetime.fromisoformat(at)
    raise LookupError(pattern)


def bad_run(env_file: Path) -> dict[str, float]:
    env = load_environment(str(env_file), Path.cwd())
    reports = env_file.parent / "reports"
    _seconds, code, out = timed(
        [
            PYTHON,
            "-m",
            "pytest",
            "gates/",
            f"--env={env_file}",
            "--release=2.0.0-bad-errors",
            f"--reports={reports}",
        ]
    )
    assert code == 11, out[-3000:]
    db = sqlite3.connect(reports / "ledger.sqlite")
    run_id = db.execute("SELECT id FROM runs WHERE kind = 'deploy' ORDER BY started_at DESC").fetchone()[0]
    weighted = event_time(db, run_id, r"canary 2\.0\.0-bad-errors at 5 %")
    decided = event_time(db, run_id, r"canary step 5 % failed")
    gone = event_time(db, run_id, r"canary 2\.0\.0-bad-errors at 0 %")
    logs = Path(env.platform.local.state_dir) / "logs"
    bad = sorted(
        datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=UTC)
        for log in logs.glob("2.0.0-bad-errors-*.log")
        for m in map(LOG_TIME.match, log.read_text(errors="replace").splitlines())
        if m
    )
    bad = [t for t in bad if t >= weighted]  # earlier runs' canaries logged into the same directory
    assert bad, "the canary served no bad request"
    assert run_back(env_file) == 0
    return {
        "first bad -> decision": (decided - bad[0]).total_seconds(),
        "first bad -> canary out": (gone - bad[0]).total_seconds(),
        "bad requests served": float(sum(1 for t in bad if t <= gone)),
    }


def healthy_run(env_file: Path) -> bool:
    _seconds, code, _out = timed(
        [
            PYTHON,
            "-m",
            "pytest",
            "gates/",
            f"--env={env_file}",
            "--release=2.0.0",
            f"--reports={env_file.parent / 'reports'}",
        ]
    )
    assert run_back(env_file) in (0, 4)  # 4: nothing to undo after a run that changed nothing
    return code == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bad-runs", type=int, default=3)
    parser.add_argument("--healthy-runs", type=int, default=20)
    args = parser.parse_args()
    with sandbox(**OVERRIDES) as env_file:
        bad = [bad_run(env_file) for _ in range(args.bad_runs)]
        promoted = [healthy_run(env_file) for _ in range(args.healthy_runs)]
    for key in bad[0]:
        values = [b[key] for b in bad]
        print(f"{key}: median {median(values):.2f} (runs: {', '.join(f'{v:.2f}' for v in values)})")
    print(
        f"false positives: {promoted.count(False)} of {len(promoted)} healthy canaries "
        f"({promoted.count(True)} promoted) at {datetime.now(UTC):%Y-%m-%d}"
    )


if __name__ == "__main__":
    main()
