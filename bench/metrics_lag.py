"""How long after a rollout Prometheus has data about the new release (sandbox, 1 s scrapes).

    python bench/metrics_lag.py [--rollouts 4]

Starts a sandbox on free ports with synthetic traffic, rolls 2.0.0 and 1.0.0 out in turn, and
prints, for each rollout, the seconds from the rollout's end (and from its first new instance's
start) until Prometheus shows the first series, all instances, a request rate, and N samples per
instance. The canary and observe gates wait at least this long before their first sample.

Measured on a 2-core machine (6 rollouts of 3 instances, min_ready 0.5 s, 40 requests/s), in
seconds after the rollout completed: first series of the new release 0.2 median (0.8 max), all
3 instances scraped 1.2 (1.7), a request rate 0.7 (1.9), 5 samples per instance 5.3 (5.8),
10 samples per instance 10.2 (10.8). A new instance's first scrape comes 1-5 s after it starts
(Prometheus applies discovered targets at most every 5 s).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from sandbox_env import running_sandbox, write_sandbox_env  # noqa: E402

from releasegate.actions.load import LoadGenerator  # noqa: E402
from releasegate.actions.migrate import apply_sql_migrations  # noqa: E402
from releasegate.config import load_environment  # noqa: E402
from releasegate.platforms.local import LocalPlatform  # noqa: E402
from releasegate.probes.prometheus import Prometheus  # noqa: E402
from sandbox.releases import migrations_dir  # noqa: E402

SAMPLES = (1, 5, 10)


def measure(
    prometheus: Prometheus, release: str, instances: int, since: float, timeout_s: float = 30
) -> dict[str, float]:
    """Seconds from now until each milestone is visible in Prometheus, counting only samples
    taken since ``since`` (monotonic: the first new instance's start), since an instance name
    (release and port) can come back from an earlier rollout."""
    started = time.monotonic()
    selector = f'{{job="demo",release="{release}"}}'
    seen: dict[str, float] = {}
    while len(seen) < 3 + len(SAMPLES) and time.monotonic() - started < timeout_s:
        now = time.monotonic() - started
        fresh = f"{math.ceil(time.monotonic() - since)}s"
        series = prometheus.instant(f"count(max_over_time(up{selector}[{fresh}]) == 1)").value or 0
        if series >= 1:
            seen.setdefault("first series", now)
        if series >= instances:
            seen.setdefault("all instances", now)
        if prometheus.query("request_rate", release=release, window="5s").value:
            seen.setdefault("request rate", now)
        fewest = prometheus.instant(f"min(count_over_time(up{selector}[{fresh}]))").value or 0
        for n in SAMPLES:
            if series >= instances and fewest >= n:
                seen.setdefault(f"{n} samples each", now)
        time.sleep(0.1)
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp).chmod(0o755)  # PostgreSQL runs as postgres and must traverse it
        env_file = write_sandbox_env(
            Path(tmp), **{"platform.local.min_ready_s": 0.5, "platform.local.drain_s": 0.2}
        )
        with running_sandbox(env_file, progress=lambda _line: None):
            env = load_environment(str(env_file), ROOT)
            assert env.metrics is not None and env.metrics.load is not None and env.platform.local is not None
            platform = LocalPlatform(env.platform.local, env.platform.url)
            prometheus = Prometheus.from_environment(env)
            results: list[tuple[str, float, dict[str, float]]] = []
            with LoadGenerator.from_settings(env.platform.url, env.metrics.load):
                for i in range(args.rollouts):
                    release = "2.0.0" if i % 2 == 0 else "1.0.0"
                    apply_sql_migrations(env.database.dsn, migrations_dir(release))
                    first_start: list[float] = []

                    def progress(
                        line: str, release: str = release, first_start: list[float] = first_start
                    ) -> None:
                        if line.startswith(f"started {release} on") and not first_start:
                            first_start.append(time.monotonic())

                    result = platform.deploy(release, progress=progress)
                    assert result.ok, result.reason
                    lead = time.monotonic() - first_start[0]
                    seen = measure(prometheus, release, env.platform.local.instances, first_start[0])
                    results.append((release, lead, seen))
            for release, lead, seen in results:
                shown = ", ".join(f"{k} {v:.1f} s" for k, v in seen.items())
                print(f"{release}: rollout took {lead:.1f} s from its first new instance; after it: {shown}")
            keys = sorted(
                {k for _, _, seen in results for k in seen},
                key=lambda k: max(s.get(k, 0) for _, _, s in results),
            )
            for key in keys:
                values = [seen[key] for _, _, seen in results if key in seen]
                print(
                    f"{key:>16}: median {statistics.median(values):.1f} s, max {max(values):.1f} s after the rollout"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
