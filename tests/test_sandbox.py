"""``python -m sandbox up|down|status`` as a person runs it, and the demo service's endpoints.

The module's tests share one sandbox and run in order: status of nothing, up, up again,
endpoints, a component stopped behind the sandbox's back, down.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from sandbox_env import free_port_block, write_sandbox_env

from releasegate.actions.migrate import apply_sql_migrations, revert_sql_migrations
from releasegate.config import Environment, load_environment
from sandbox import stack
from sandbox.releases import RELEASES, migrations_dir
from sandbox.stack import ROOT

pytestmark = pytest.mark.timeout(180)


def cli(command: str, env_file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sandbox", command, "--env", str(env_file), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def env_file(module_sandbox_dir: Path) -> Iterator[Path]:
    path = write_sandbox_env(module_sandbox_dir)
    try:
        yield path
    finally:
        cli("down", path, "--quiet")


@pytest.fixture(scope="module")
def env(env_file: Path) -> Environment:
    return load_environment(str(env_file), root=ROOT)


def test_status_of_a_sandbox_never_started_is_down(env_file: Path) -> None:
    result = cli("status", env_file)

    assert result.returncode == 3, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "sandbox is down"


def test_up_starts_each_component_in_order_and_says_how_long_it_took(
    env_file: Path, env: Environment
) -> None:
    result = cli("up", env_file)

    assert result.returncode == 0, result.stdout + result.stderr
    steps = [line.split()[0] for line in result.stdout.splitlines() if re.search(r"\(\d+\.\d s\)$", line)]
    assert steps == ["postgresql", "schema", "seed", "redis", "nginx", "instances", "prometheus"]
    assert "loaded 200 customers and 1000 orders" in result.stdout
    assert "seed_summit.sql, policy main v1.0.0 from 1.0.0" in result.stdout, "Summit's first bundle"
    assert "serves 1.0.0" in result.stdout.splitlines()[-1]
    assert Path(env.sandbox.dir).is_dir()  # type: ignore[union-attr]


def test_up_again_says_everything_is_already_up(env_file: Path) -> None:
    result = cli("up", env_file)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith("sandbox is already up")
    assert "started" not in result.stdout


def test_status_of_a_running_sandbox_names_each_component(env_file: Path, env: Environment) -> None:
    result = cli("status", env_file)

    assert result.returncode == 0, result.stdout + result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert " up " in lines["postgresql"] and "schema 0001" in lines["postgresql"]
    assert " up " in lines["redis"] and re.search(r"pid \d+", lines["redis"])
    assert f"127.0.0.1:{env.platform.url.rsplit(':', 1)[1]}" in lines["nginx"]
    assert "1.0.0 ×3/3 ready" in lines["instances"]
    assert " up " in lines["prometheus"] and "job demo, scrape every 1s" in lines["prometheus"]


def test_the_demo_service_answers_through_nginx(env: Environment) -> None:
    with httpx.Client(base_url=env.platform.url, timeout=5, trust_env=False) as client:
        health = client.get("/health")
        assert health.status_code == 200
        body = health.json()
        assert body["status"] == "healthy" and body["version"] == "1.0.0"
        assert body["checks"] == {"database": "ok", "cache": "ok", "schema": "ok"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["timestamp"])

        assert client.get("/health/live").json() == {"status": "alive", "version": "1.0.0"}
        db = client.get("/health/db").json()
        assert db["status"] == "connected"
        assert isinstance(db["latency_ms"], float) and 0 < db["latency_ms"] < 1000

        customers = client.get("/api/customers", params={"limit": 5}).json()
        assert customers["count"] == 5
        assert customers["customers"][0]["email"] == "customer001@example.test"
        assert "tier" not in customers["customers"][0]  # 1.0.0 predates tiers
        order = client.post("/api/orders", json={"customer_id": 42, "amount_cents": 1999})
        assert order.status_code == 201 and order.json()["customer_id"] == 42
        assert client.post("/api/orders", json={"customer_id": 4242, "amount_cents": 1}).status_code == 404
        assert client.post("/api/orders", json={"customer_id": 42}).status_code == 422
        first = client.get("/api/customers/42")
        again = client.get("/api/customers/42")
        assert first.json()["order_count"] == 6
        assert again.json() == first.json()
        assert (first.headers["x-cache"], again.headers["x-cache"]) == ("miss", "hit")  # Redis, shared
        assert client.get("/api/customers/999999").status_code == 404

        metrics = client.get("/metrics").text
    for name in (
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "errors_total",
        "db_connections_in_use",
        "db_connections_max",
        "db_query_duration_seconds_bucket",
        "cache_hits_total",
        "cache_misses_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ):
        assert f"\n{name}" in metrics
    assert 'demo_build_info{release="1.0.0",schema="0001"} 1.0' in metrics
    assert re.search(
        r'http_requests_total\{method="GET",route="/api/customers/\{customer_id:int\}",status="200"\}',
        metrics,
    )


def test_a_component_stopped_behind_its_back_is_reported_not_repaired_by_ensure_up(
    env_file: Path, env: Environment
) -> None:
    sandbox = stack.load(env)
    sandbox.postgres.stop()

    status = cli("status", env_file)
    assert status.returncode == 4, status.stdout + status.stderr
    assert "partly up: postgresql down" in status.stdout
    assert stack.ensure_up(env, progress=print) == ["postgresql"]
    assert sandbox.postgres.pid() is None  # left as it is: preflight must see it
    health = httpx.get(env.platform.url + "/health", timeout=10)
    assert health.status_code == 503 and health.json()["checks"]["database"].startswith("fail:")

    repaired = cli("up", env_file)  # `up` starts what is not running

    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert re.search(r"^postgresql +started on", repaired.stdout, re.MULTILINE)
    assert re.search(r"^seed +already seeded", repaired.stdout, re.MULTILINE)
    deadline = time.monotonic() + 10  # the instances' pools reconnect on their own
    while httpx.get(env.platform.url + "/health", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "the service did not reconnect to the restarted database"
        time.sleep(0.2)
    assert stack.ensure_up(env) == []


def test_the_releases_migrations_do_what_the_releases_promise(env: Environment) -> None:
    sandbox = stack.load(env)
    with psycopg.connect(sandbox.postgres.conninfo("postgres"), autocommit=True) as admin:
        for name in ("mig_good", "mig_bad"):
            admin.execute(f"DROP DATABASE IF EXISTS {name}")
            admin.execute(f"CREATE DATABASE {name}")
    good, bad = (env.database.dsn.rsplit("/", 1)[0] + f"/{name}" for name in ("mig_good", "mig_bad"))
    for dsn in (good, bad):
        assert apply_sql_migrations(dsn, migrations_dir("1.0.0")).ok
        with psycopg.connect(dsn) as conn:
            conn.execute(stack.SEED_SQL.read_text())

    upgraded = apply_sql_migrations(good, migrations_dir("2.0.0"))
    assert upgraded.ok and upgraded.version_after == "0002"
    with psycopg.connect(good) as conn:
        tiers = dict(conn.execute("SELECT tier, count(*) FROM customers GROUP BY tier").fetchall())
        nullable = conn.execute(
            "SELECT is_nullable FROM information_schema.columns "
            "WHERE table_name = 'customers' AND column_name = 'tier'"
        ).fetchone()
    assert sum(tiers.values()) == 200 and len(tiers) >= 2  # backfilled from real totals
    assert nullable == ("NO",)
    reverted = revert_sql_migrations(good, migrations_dir("2.0.0"), ["0002"])
    assert reverted.ok and reverted.version_after == "0001"

    failed = apply_sql_migrations(bad, migrations_dir("2.0.0-bad-migration"))
    assert not failed.ok
    assert failed.applied == ["0002"] and failed.failed == "0003_segment_unique"  # half way
    assert "could not create unique index" in failed.error
    assert failed.version_after == "0002"


def test_the_faulty_2_0_0_builds_bring_2_0_0s_migration_without_a_copy_of_it() -> None:
    for build in (
        "2.0.0-bad-errors",
        "2.0.0-bad-latency",
        "2.0.0-slow-leak",
        "2.0.0-bad-policy",
        "2.0.0-errors-5x",
        "2.0.0-slow-endpoint",
    ):
        release = RELEASES[build]
        assert (release.schema, release.customer_tier) == ("0002", True)
        assert migrations_dir(build).resolve() == migrations_dir("2.0.0").resolve()
        assert migrations_dir(build).is_symlink()
        provenance = (ROOT / "sandbox" / "releases" / build / "provenance.intoto.json").read_text()
        assert f'"releasegate/demo:{build}"' in provenance
    provenance = (ROOT / "sandbox" / "releases" / "2.0.0-bad-policy" / "provenance.intoto.json").read_text()
    assert "releasegate/demo:2.0.0-bad-policy" in provenance


def test_down_stops_everything_and_removes_the_directory(env_file: Path, env: Environment) -> None:
    result = cli("down", env_file)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("stopped 1.0.0 on :") == 3
    assert "prometheus  stopped" in result.stdout
    assert not Path(env.sandbox.dir).exists()  # type: ignore[union-attr]
    assert cli("status", env_file).returncode == 3
    with pytest.raises(httpx.HTTPError):
        httpx.get(env.platform.url + "/health/live", timeout=2)
    again = cli("down", env_file)
    assert again.returncode == 0 and again.stdout.splitlines()[-1] == "sandbox is down"


def test_ensure_up_starts_a_sandbox_that_is_completely_down(sandbox_dir: Path) -> None:
    env_file = write_sandbox_env(sandbox_dir)
    lines: list[str] = []
    try:
        assert stack.ensure_up(env_file, progress=lines.append) == []
        assert lines[0].startswith("sandbox at ") and lines[0].endswith("is down: starting it")
        assert stack.status(env_file).exit_code == 0
        assert stack.ensure_up(env_file, progress=lines.append) == []  # up: nothing to do, nothing said
    finally:
        stack.down(env_file, progress=lines.append)
    assert stack.status(env_file).exit_code == 3


def test_an_unknown_release_of_the_service_exits_2_like_a_missing_image() -> None:
    port = free_port_block(1)
    result = subprocess.run(
        [sys.executable, "-m", "sandbox.service", "--release", "9.9.9", "--port", str(port)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 2
    assert "ERROR" in result.stderr
    assert "unknown release 9.9.9 (known: 1.0.0, 2.0.0, 2.0.0-bad-migration" in result.stderr


def test_an_environment_without_a_sandbox_section_is_refused(tmp_path: Path) -> None:
    env_file = write_sandbox_env(tmp_path)
    text = env_file.read_text()
    env_file.write_text(re.sub(r"\[sandbox\]\n(?:[^\[\n].*\n)*", "", text))

    result = cli("status", env_file)

    assert result.returncode == 1
    assert "no [sandbox] section" in result.stderr
