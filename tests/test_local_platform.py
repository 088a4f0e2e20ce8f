"""The local platform against a real sandbox: rolling updates, rollback, and the faulty builds.

One sandbox serves the whole module; each test first brings it to the release it starts from
(the order of the tests keeps those rollouts few).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sandbox_env import running_sandbox, write_sandbox_env

from releasegate.actions.migrate import apply_sql_migrations
from releasegate.config import Environment, load_environment
from releasegate.errors import ActionError
from releasegate.platforms.local import LocalPlatform, read_upstream_ports
from sandbox.releases import migrations_dir
from sandbox.stack import ROOT

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def module_sandbox_env(module_sandbox_dir: Path) -> Iterator[Path]:
    """The module's sandbox, rolling one instance at a time: the order is what these tests check."""
    env_file = write_sandbox_env(module_sandbox_dir, metrics=None, **{"platform.local.max_surge": 1})
    with running_sandbox(env_file):
        yield env_file


@pytest.fixture(scope="module")
def env(module_sandbox_env: Path) -> Environment:
    return load_environment(str(module_sandbox_env), root=ROOT)


@pytest.fixture(scope="module")
def platform(env: Environment) -> LocalPlatform:
    assert env.platform.local is not None
    return LocalPlatform(env.platform.local, env.platform.url)


def serving(platform: LocalPlatform, release: str, env: Environment) -> None:
    """Bring the sandbox to ``release`` (with its migration), however the previous test left it."""
    migrated = apply_sql_migrations(env.database.dsn, migrations_dir(release))
    assert migrated.ok, migrated.error
    result = platform.deploy(release)
    assert result.ok, result.reason


def versions(platform: LocalPlatform, path: str = "/health/live") -> list[tuple[int, str]]:
    """What each instance answers when asked directly (not through nginx)."""
    answers = []
    for instance in platform.status().instances:
        response = httpx.get(instance.url + path, timeout=3)
        answers.append((response.status_code, response.json()["version"]))
    return answers


class Traffic:
    """Requests through nginx from a background thread while a rollout runs (at most 3000)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent = 0
        self.failures: list[str] = []
        self.versions: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=5, trust_env=False) as client:
            while not self._stop.is_set() and self.sent < 3000:
                path = "/health/live" if self.sent % 2 else f"/api/customers/{self.sent % 200 + 1}"
                self.sent += 1
                try:
                    response = client.get(path)
                except httpx.HTTPError as exc:
                    self.failures.append(f"GET {path}: {exc!r}")
                    continue
                if response.status_code != 200:
                    self.failures.append(f"GET {path}: {response.status_code} {response.text[:100]}")
                elif path == "/health/live":
                    self.versions.add(response.json()["version"])
                self._stop.wait(0.02)


def test_rolling_update_replaces_every_instance_while_every_request_is_answered(
    env: Environment, platform: LocalPlatform
) -> None:
    serving(platform, "1.0.0", env)
    assert apply_sql_migrations(env.database.dsn, migrations_dir("2.0.0")).ok
    lines: list[str] = []

    with Traffic(env.platform.url) as traffic:
        result = platform.deploy("2.0.0", progress=lines.append)

    assert result.ok, result.reason
    assert (result.release, result.previous_release) == ("2.0.0", "1.0.0")
    assert result.events == lines
    # one at a time: a new instance joins nginx before an old one leaves
    assert "nginx -> 1.0.0×3 2.0.0×1" in lines
    assert "nginx -> 1.0.0×2 2.0.0×1" in lines
    assert sum(line.startswith("stopped 1.0.0 on :") for line in lines) == 3
    assert traffic.failures == []
    assert traffic.sent >= 50
    assert traffic.versions == {"1.0.0", "2.0.0"}

    status = platform.status()
    assert (status.release, status.previous_release) == ("2.0.0", "1.0.0")
    assert len(status.instances) == 3
    assert all(i.ready for i in status.instances)
    assert set(status.in_service) == {i.name for i in status.instances}
    assert status.releases_serving == {"2.0.0"}
    assert sorted(read_upstream_ports(platform.upstream_file)) == sorted(
        int(i.url.rsplit(":", 1)[1]) for i in status.instances
    )
    for instance in status.instances:
        health = httpx.get(instance.url + "/health", timeout=3)
        assert health.status_code == 200
        assert health.json()["version"] == "2.0.0"
        assert health.json()["checks"] == {"database": "ok", "cache": "ok", "schema": "ok"}
        assert httpx.get(instance.url + "/api/customers/1", timeout=3).json()["tier"] in {
            "bronze",
            "silver",
            "gold",
        }
    assert platform.current_release() == "2.0.0"


def test_rollback_returns_every_instance_to_the_previous_release(
    env: Environment, platform: LocalPlatform
) -> None:
    if (platform.current_release(), platform.status().previous_release) != ("2.0.0", "1.0.0"):
        serving(platform, "1.0.0", env)
        serving(platform, "2.0.0", env)

    result = platform.rollback()

    assert result.ok, result.reason
    assert result.release == "1.0.0"
    assert versions(platform) == [(200, "1.0.0")] * 3
    # 1.0.0 runs on the schema 2.0.0 left (0002 only adds a column)
    assert versions(platform, "/health") == [(200, "1.0.0")] * 3
    status = platform.status()
    assert (status.release, status.previous_release) == ("1.0.0", "2.0.0")
    assert status.releases_serving == {"1.0.0"}


def test_deploying_what_already_serves_changes_nothing(env: Environment, platform: LocalPlatform) -> None:
    serving(platform, "1.0.0", env)
    before = platform.status().instances

    result = platform.deploy("1.0.0")

    assert result.ok
    assert result.events == ["1.0.0 already serves on all 3 instances: nothing to do"]
    assert [i.name for i in platform.status().instances] == [i.name for i in before]


def test_a_crash_looping_build_is_caught_during_the_rollout(
    env: Environment, platform: LocalPlatform
) -> None:
    serving(platform, "1.0.0", env)
    before = [i.name for i in platform.status().instances]

    result = platform.deploy("2.0.0-crashloop")

    assert not result.ok
    assert result.reason.startswith("2.0.0-crashloop on :")
    assert "exited with code 1" in result.reason
    assert "then crashed" in result.reason  # it was ready first: min_ready_s caught it
    assert "ERROR" in result.reason  # the last line of its log
    status = platform.status()
    assert [i.name for i in status.instances] == before
    assert all(i.ready for i in status.instances)
    assert status.releases_serving == {"1.0.0"}
    assert platform.current_release() == "1.0.0"
    assert httpx.get(env.platform.url + "/health/live", timeout=3).json()["version"] == "1.0.0"

    undo = platform.rollback()  # undoes the failed attempt: what serves is what it returns to

    assert undo.ok and undo.release == "1.0.0"
    assert "nothing to do" in undo.events[-1]


def test_a_second_rollout_while_one_runs_is_refused_at_once(
    env: Environment, platform: LocalPlatform
) -> None:
    serving(platform, "1.0.0", env)
    rolling = threading.Event()
    results = []

    def first() -> None:
        results.append(platform.deploy("2.0.0-crashloop", progress=lambda _line: rolling.set()))

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert rolling.wait(10)
        other = LocalPlatform(platform.settings, platform.url)  # as another process would see it
        with pytest.raises(ActionError, match=f"another rollout is in progress: pid {os.getpid()} holds"):
            other.deploy("2.0.0")
        with pytest.raises(ActionError, match="another rollout is in progress"):
            other.rollback(to_release="1.0.0")
    finally:
        thread.join(timeout=60)
    assert results and not results[0].ok
    assert platform.current_release() == "1.0.0"


def test_an_unknown_release_fails_fast_with_the_services_message(
    env: Environment, platform: LocalPlatform
) -> None:
    serving(platform, "1.0.0", env)

    result = platform.deploy("9.9.9")

    assert not result.ok
    assert "9.9.9 on :" in result.reason
    assert "exited with code 2" in result.reason
    assert "unknown release 9.9.9 (known: 1.0.0, 2.0.0" in result.reason
    assert result.duration_s < 10
    assert platform.status().releases_serving == {"1.0.0"}


def test_state_file_records_instances_and_history(env: Environment, platform: LocalPlatform) -> None:
    serving(platform, "1.0.0", env)

    state = json.loads(platform.state_file.read_text())

    assert state["release"] == "1.0.0"
    assert len(state["instances"]) == 3
    for entry in state["instances"]:
        assert entry["release"] == "1.0.0"
        assert isinstance(entry["pid"], int) and isinstance(entry["port"], int)
        assert entry["started_at"]
    assert state["history"][-1]["ok"] in (True, False)
    assert {"at", "action", "from", "to", "ok", "reason", "duration_s"} <= set(state["history"][-1])
    assert platform.logs(state["instances"][0]["name"])[-1]


def test_a_rollout_killed_half_way_is_undone_by_rollback(env: Environment, platform: LocalPlatform) -> None:
    serving(platform, "1.0.0", env)
    assert apply_sql_migrations(env.database.dsn, migrations_dir("2.0.0")).ok
    before = sorted(i.name for i in platform.status().instances)
    deploying = subprocess.Popen(
        [sys.executable, "-c", KILLED_DEPLOY, str(env.source), str(ROOT)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert deploying.stdout is not None
    for line in deploying.stdout:
        if line.startswith("started 2.0.0 on :"):
            deploying.kill()  # SIGKILL: no cleanup of any kind
            break
    deploying.wait(timeout=10)
    assert platform.status().release == "1.0.0"
    assert len(platform.status().instances) == 4  # the new one is recorded, never routed

    result = platform.rollback()  # the rollout did not complete: back to what it was replacing

    assert result.ok, result.reason
    assert result.release == "1.0.0"
    assert "stopping 1 instance(s) that never went into service" in result.events
    status = platform.status()
    assert sorted(i.name for i in status.instances) == before
    assert status.releases_serving == {"1.0.0"}
    assert status.previous_release != "1.0.0"


KILLED_DEPLOY = """
import sys
from pathlib import Path
from releasegate.config import load_environment
from releasegate.platforms.local import LocalPlatform
env = load_environment(sys.argv[1], Path(sys.argv[2]))
LocalPlatform(env.platform.local, env.platform.url).deploy("2.0.0", progress=lambda line: print(line, flush=True))
"""


def test_a_rollout_without_nginx_is_refused_before_anything_starts(
    env: Environment, platform: LocalPlatform, tmp_path: Path
) -> None:
    serving(platform, "1.0.0", env)
    before = [i.name for i in platform.status().instances]
    settings = platform.settings.model_copy(update={"nginx_pid_file": str(tmp_path / "nginx.pid")})

    with pytest.raises(ActionError, match=r"nginx \(pid file .*nginx\.pid\) is not running: no pid file"):
        LocalPlatform(settings, platform.url).deploy("2.0.0")

    assert [i.name for i in platform.status().instances] == before


def test_rollback_with_no_previous_release_says_so(platform: LocalPlatform, tmp_path: Path) -> None:
    settings = platform.settings.model_copy(update={"state_dir": str(tmp_path / "state")})

    with pytest.raises(ActionError, match="nothing to roll back to"):
        LocalPlatform(settings, platform.url).rollback()


def test_a_build_whose_health_fails_still_rolls_out_the_gates_catch_it(
    env: Environment, platform: LocalPlatform
) -> None:
    serving(platform, "1.0.0", env)

    result = platform.deploy("2.0.0-bad-health")

    assert result.ok, result.reason  # readiness is /health/live, which it passes
    assert versions(platform) == [(200, "2.0.0-bad-health")] * 3
    for instance in platform.status().instances:
        health = httpx.get(instance.url + "/health", timeout=3)
        assert health.status_code == 503
        assert health.json()["status"] == "unhealthy"
        assert health.json()["checks"]["database"] == "fail: connection pool exhausted"
