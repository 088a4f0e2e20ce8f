"""Verification throughput: the same 60 read-only checks by releasegate and by a shell script.

    python bench/throughput.py [--runs 3]

The checks (20 health, 20 database, 10 Redis, 10 journeys through the API), each sampled 3
times --interval seconds apart as the runbooks sample (theirs: 10 times, 2 s apart), are done by releasegate with `-n auto` (gates whose
checks wait on the network run four workers per core) and by bench/runbook_checks.sh with curl,
psql and redis-cli one after another, alternating, against one sandbox. Prints the medians
and the ratio; the target is releasegate at least 4x faster on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from common import PYTHON, ROOT, alternate, median, sandbox, timed

from releasegate.config import load_environment

SUITE = '''
import time

import httpx
import pytest

from releasegate.verification import health_repeatedly

pytestmark = pytest.mark.phase("preflight")
SAMPLES, INTERVAL = 3, __INTERVAL__


def sampled(measure):
    for i in range(SAMPLES):
        measure(i)
        if i < SAMPLES - 1:
            time.sleep(INTERVAL)


@pytest.mark.parametrize("n", range(20))
def test_health(n, service, previous_release, check):
    """/health through the load balancer: healthy, on the release that serves."""
    health_repeatedly(check, service, "/health", previous_release, SAMPLES, INTERVAL)


@pytest.mark.parametrize("n", range(20))
def test_database(n, postgres, check):
    """The primary accepts writes and the orders are there."""
    def measure(i):
        in_recovery, orders = postgres.rows("SELECT pg_is_in_recovery(), count(*) FROM orders")[0]
        check.equals(f"in recovery ({i + 1})", in_recovery, False, source=postgres.source("pg_is_in_recovery()"))
        check.at_least(f"orders ({i + 1})", orders, 1, source=postgres.source("SELECT count(*) FROM orders"))
    sampled(measure)


@pytest.mark.parametrize("n", range(10))
def test_cache(n, redis, check):
    """redis-cli ping: PONG."""
    sampled(lambda i: check.equals(f"PING ({i + 1})", redis.ping()[0], "PONG", source=redis.source))


@pytest.mark.parametrize("n", range(10))
def test_journey(n, service, check):
    """List customers, read one, check the database behind it."""
    def measure(i):
        customers = service.get("/api/customers?limit=5")
        check.equals(f"list ({i + 1})", customers.status, 200, source=customers.source)
        one = service.get(f"/api/customers/{customers.body['customers'][0]['id']}")
        check.equals(f"read ({i + 1})", one.status, 200, source=one.source)
        db = service.get("/health/db")
        check.equals(f"db ({i + 1})", (db.body or {}).get("status"), "connected", source=db.source)
    sampled(measure)
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between a check's samples")
    args = parser.parse_args()
    with sandbox(**{"sandbox.autostart": False}) as env_file, tempfile.TemporaryDirectory() as tmp:
        env = load_environment(str(env_file), ROOT)
        suite = Path(tmp) / "readonly"
        suite.mkdir()
        (suite / "test_readonly.py").write_text(SUITE.replace("__INTERVAL__", repr(args.interval)))
        redis_port = env.redis.url.rsplit(":", 1)[1].split("/")[0]

        def releasegate() -> float:
            seconds, code, out = timed(
                [
                    PYTHON,
                    "-m",
                    "pytest",
                    str(suite),
                    f"--env={env_file}",
                    "--release=bench",
                    f"--reports={tmp}/reports",
                    "-n",
                    "auto",
                    "-q",
                    f"--rootdir={ROOT}",
                ]
            )
            assert code == 0, out[-3000:]
            return seconds

        def shell() -> float:
            seconds, code, out = timed(
                [
                    str(ROOT / "bench" / "runbook_checks.sh"),
                    env.platform.url,
                    env.database.dsn,
                    redis_port,
                    "1.0.0",
                ],
                env={**os.environ, "INTERVAL": str(args.interval)},
            )
            assert code == 0, out
            return seconds

        samples = alternate(args.runs, releasegate=releasegate, shell=shell)
    rg, sh = median(samples["releasegate"]), median(samples["shell"])
    print(
        f"60 read-only checks, 3 samples {args.interval:g} s apart: releasegate -n auto {rg:.1f} s, "
        f"runbook shell script {sh:.1f} s: releasegate {sh / rg:.1f}x faster "
        f"(median of {args.runs}, {os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    main()
