"""Canary and blue-green on the local platform, against a real sandbox (nginx, real instances).

One sandbox serves the module; each test first brings it back to 1.0.0 alone on three instances
with a rolling platform on the same state directory. Shares of traffic are counted from what
real requests through nginx answer (``/health/live`` says its ``version``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from releasegate.actions.migrate import apply_sql_migrations
from releasegate.config import Environment, LocalPlatformSettings, load_environment
from releasegate.errors import ActionError
from releasegate.platforms.local import LocalPlatform, read_upstream_weights
from releasegate.platforms.local_canary import canary_count, effective_percent, nginx_weights
from sandbox.releases import migrations_dir
from sandbox.stack import ROOT

pytestmark = pytest.mark.timeout(180)

FAST = {"min_ready_s": 0.3, "drain_s": 0.2, "stop_timeout_s": 5}


@pytest.fixture(scope="module")
def env(module_sandbox_env: Path) -> Environment:
    env = load_environment(str(module_sandbox_env), root=ROOT)
    assert apply_sql_migrations(env.database.dsn, migrations_dir("2.0.0")).ok  # 1.0.0 runs on it too
    return env


def platform_for(env: Environment, **settings: object) -> LocalPlatform:
    """A platform on the sandbox's state directory, as another process with this config would be."""
    assert env.platform.local is not None
    return LocalPlatform(env.platform.local.model_copy(update={**FAST, **settings}), env.platform.url)


@pytest.fixture
def canary(env: Environment) -> LocalPlatform:
    platform_for(env).deploy("1.0.0")  # 1.0.0 alone on three instances, whatever came before
    return platform_for(env, strategy="canary")


@pytest.fixture
def blue_green(env: Environment) -> LocalPlatform:
    platform_for(env).deploy("1.0.0")
    return platform_for(env, strategy="blue-green", keep_warm_s=60)


def answers(env: Environment, count: int) -> Counter[str]:
    """The versions ``count`` requests through nginx were answered by."""
    with httpx.Client(base_url=env.platform.url, timeout=5, trust_env=False) as client:
        return Counter(client.get("/health/live").json()["version"] for _ in range(count))


def alive(url: str) -> bool:
    try:
        return httpx.get(url + "/health/live", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_nginx_weights_give_the_canary_its_share() -> None:
    assert nginx_weights(10, 1, 3) == (1, 3)  # 1 / (1 + 3·3) = 10 %
    assert nginx_weights(50, 1, 3) == (3, 1)
    assert nginx_weights(5, 2, 3) == (3, 38)
    assert nginx_weights(0, 1, 3) == (0, 1)  # not in the upstream
    assert nginx_weights(100, 1, 3) == (1, 0)  # the canary alone
    for percent in (5, 10, 25, 33.3, 50, 75):
        for canaries, stables in ((1, 3), (2, 3), (3, 3), (1, 5)):
            canary_w, stable_w = nginx_weights(percent, canaries, stables)
            assert effective_percent(canary_w, canaries, stable_w, stables) == pytest.approx(percent)
    with pytest.raises(ActionError, match="expected 0 to 100"):
        nginx_weights(120, 1, 3)


def test_the_canary_instances_follow_the_weight_as_argo_rollouts_scales_replicas() -> None:
    """ceil(p × N / 100), at least 1, N at 100 %: each canary instance carries at most what one of
    the N stable ones carries alone."""
    assert [canary_count(p, 3) for p in (0.1, 5, 25, 33.3, 33.4, 50, 66.7, 100)] == [1, 1, 1, 1, 2, 2, 3, 3]
    assert [canary_count(p, 10) for p in (10, 20, 30, 70, 100)] == [1, 2, 3, 7, 10]  # no float dust


def test_the_ports_must_hold_both_colors_and_the_canary() -> None:
    base = {
        "instances": 3,
        "ports": (30000, 30005),
        "command": ["demo", "--port", "{port}"],
        "state_dir": "state",
        "nginx_upstream_file": "upstream.conf",
        "nginx_pid_file": "nginx.pid",
    }
    LocalPlatformSettings(**base | {"strategy": "blue-green"})  # 6 ports: both colors
    LocalPlatformSettings(**base | {"strategy": "canary"})  # 6 ports: at 100 % 3 canary instances
    with pytest.raises(
        ValueError,
        match=r"4 instances with a canary that follows the weight \(up to 4 instances\) need 8",
    ):
        LocalPlatformSettings(**base | {"strategy": "canary", "instances": 4, "rollback_max_surge": 1})
    with pytest.raises(
        ValueError, match=r"hold 6 instances; 4 instances with blue-green \(two colors\) need 8"
    ):
        LocalPlatformSettings(**base | {"strategy": "blue-green", "instances": 4, "rollback_max_surge": 1})
    with pytest.raises(ValueError, match=r"3 instances with 2 canary instance\(s\) and max_surge 2 need 7"):
        LocalPlatformSettings(**base | {"strategy": "canary", "canary_instances": 2, "max_surge": 2})
    with pytest.raises(ValueError, match="canary_instances 4: at most the 3 instances"):
        LocalPlatformSettings(**base | {"strategy": "canary", "canary_instances": 4})


def test_a_canary_starts_unrouted_then_gets_its_share_of_real_requests(
    env: Environment, canary: LocalPlatform
) -> None:
    lines: list[str] = []

    started = canary.start_canary("2.0.0", lines.append)

    assert started.ok, started.reason
    assert (started.release, started.previous_release) == ("2.0.0", "1.0.0")
    assert lines[-1] == "canary 2.0.0×1 ready beside 1.0.0×3, weight 0"
    [instance] = canary.canary_instances()
    assert instance.release == "2.0.0" and instance.ready
    assert instance.detail.startswith("canary, not routed;")
    status = canary.status()
    assert (status.release, len(status.instances)) == ("1.0.0", 4)
    assert instance.name not in status.in_service
    assert answers(env, 60) == {"1.0.0": 60}
    targets = json.loads(Path(canary.settings.targets_file or "").read_text())
    assert {
        "targets": [instance.url.removeprefix("http://")],
        "labels": {
            "release": "2.0.0",
            "instance": instance.name,
        },
    } in targets
    assert sorted(t["labels"]["release"] for t in targets) == ["1.0.0", "1.0.0", "1.0.0", "2.0.0"]

    assert canary.set_canary_weight(10, lines.append) == 10.0
    assert lines[-1] == (
        "canary 2.0.0 at 10 % (weight 10/90: nginx weight=1 on 2.0.0×1, weight=3 on 1.0.0×3); "
        "1 canary instance(s) (following the weight: ceil(10 × 3 / 100) = 1), each carrying 0.30 times "
        "what a stable one carries alone"
    )
    ten = answers(env, 400)
    assert 28 <= ten["2.0.0"] <= 52, ten  # 40 expected
    assert read_upstream_weights(canary.upstream_file)[int(instance.url.rsplit(":", 1)[1])] == 1
    status = canary.status()
    assert set(status.in_service) == {i.name for i in status.instances}
    assert status.releases_serving == {"1.0.0", "2.0.0"}
    details = sorted(i.detail.split(";")[0] for i in status.instances)
    assert details == ["canary, nginx weight 1"] + ["stable, nginx weight 3"] * 3

    assert canary.set_canary_weight(50, lines.append) == 50.0
    assert "canary 2.0.0 at 50 % needs 2 instance(s): starting 1 more" in lines
    assert lines[-1] == (
        "canary 2.0.0 at 50 % (weight 50/50: nginx weight=3 on 2.0.0×2, weight=2 on 1.0.0×3); "
        "2 canary instance(s) (following the weight: ceil(50 × 3 / 100) = 2), each carrying 0.75 times "
        "what a stable one carries alone"
    )
    half = answers(env, 400)
    assert 170 <= half["2.0.0"] <= 230, half

    assert canary.set_canary_weight(100, lines.append) == 100.0
    assert lines[-1] == (
        "canary 2.0.0 at 100 % (weight 100/0: nginx -> 2.0.0×3 only; 1.0.0×3 not routed); "
        "3 canary instance(s) (following the weight: ceil(100 × 3 / 100) = 3), each carrying 1.00 times "
        "what a stable one carries alone"
    )
    assert answers(env, 60) == {"2.0.0": 60}
    assert canary.status().releases_serving == {"2.0.0"}
    assert len(canary.status().instances) == 6  # the stable ones stay up: back is a reload

    assert canary.set_canary_weight(0) == 0.0
    assert answers(env, 60) == {"1.0.0": 60}
    assert canary.current_release() == "1.0.0"


def test_abort_leaves_only_stable_and_a_rollback_after_it_is_a_no_op(
    env: Environment, canary: LocalPlatform
) -> None:
    assert canary.start_canary("2.0.0").ok
    canary.set_canary_weight(50)
    instances = canary.canary_instances()
    assert len(instances) == 2, "set_weight started the second one"
    stable = sorted(i.name for i in canary.status().instances if i.release == "1.0.0")

    aborted = canary.abort()

    assert aborted.ok, aborted.reason
    assert aborted.release == "1.0.0"
    assert aborted.events[-1] == "canary 2.0.0 aborted: 1.0.0×3 serves alone"
    assert not any(alive(i.url) for i in instances), "every canary instance stopped"
    assert canary.canary_instances() == []
    status = canary.status()
    assert sorted(i.name for i in status.instances) == stable
    assert set(status.in_service) == set(stable)
    assert (status.release, canary.current_release()) == ("1.0.0", "1.0.0")
    assert answers(env, 100) == {"1.0.0": 100}
    assert set(read_upstream_weights(canary.upstream_file).values()) == {1}
    with pytest.raises(ActionError, match="no canary is running"):
        canary.set_canary_weight(10)

    undo = canary.rollback()

    assert undo.ok, undo.reason
    assert undo.release == "1.0.0"
    assert undo.events == ["1.0.0 already serves on all 3 instances: nothing to do"]
    assert sorted(i.name for i in canary.status().instances) == stable


def test_promote_leaves_every_instance_on_the_new_release(env: Environment, canary: LocalPlatform) -> None:
    assert canary.start_canary("2.0.0").ok
    canary.set_canary_weight(25)
    [instance] = canary.canary_instances()

    promoted = canary.promote()

    assert promoted.ok, promoted.reason
    assert (promoted.release, promoted.previous_release) == ("2.0.0", "1.0.0")
    status = canary.status()
    assert (status.release, status.previous_release) == ("2.0.0", "1.0.0")
    assert [i.release for i in status.instances] == ["2.0.0"] * 3
    assert instance.name in status.in_service  # the canary instance is one of the three
    assert set(status.in_service) == {i.name for i in status.instances}
    assert all(i.ready for i in status.instances)
    assert answers(env, 60) == {"2.0.0": 60}
    assert set(read_upstream_weights(canary.upstream_file).values()) == {1}
    state = json.loads(canary.state_file.read_text())
    assert (state["canary"], state["pending"]) == (None, None)
    assert canary.canary_instances() == []


def canary_share(platform: LocalPlatform) -> float:
    """The canary's share of requests by the weights nginx has in its upstream file."""
    weights = read_upstream_weights(platform.upstream_file)
    canaries = {int(i.url.rsplit(":", 1)[1]) for i in platform.canary_instances()}
    total = sum(weights.values())
    return 100 * sum(w for port, w in weights.items() if port in canaries) / total


def test_the_canary_scales_with_the_weight_and_at_100_percent_has_as_many_instances_as_stable(
    env: Environment, canary: LocalPlatform
) -> None:
    assert canary.start_canary("2.0.0").ok
    assert len(canary.canary_instances()) == 1

    seen = {}
    for percent in (5, 25, 50, 100):
        assert canary.set_canary_weight(percent) == percent
        instances = canary.canary_instances()
        seen[percent] = len(instances)
        assert all(i.ready and i.release == "2.0.0" for i in instances), instances
        assert canary_share(canary) == pytest.approx(percent), "the weights give the canary p % in all"

    assert seen == {5: 1, 25: 1, 50: 2, 100: 3}
    stable = [i for i in canary.status().instances if i.release == "1.0.0"]
    assert len(stable) == 3 and seen[100] == len(stable), "all traffic on as many instances as stable had"
    assert answers(env, 60) == {"2.0.0": 60}
    canaries = {i.name for i in canary.canary_instances()}

    promoted = canary.promote()

    assert promoted.ok, promoted.reason
    status = canary.status()
    assert [i.release for i in status.instances] == ["2.0.0"] * 3
    assert {i.name for i in status.instances} == canaries, "the canary instances are the three"
    assert set(status.in_service) == canaries
    assert answers(env, 60) == {"2.0.0": 60}


def test_a_pinned_count_a_step_would_overload_is_refused_before_nginx_changes(
    env: Environment, canary: LocalPlatform
) -> None:
    pinned = platform_for(env, strategy="canary", canary_instances=1)
    assert pinned.start_canary("2.0.0").ok
    upstream = pinned.upstream_file.read_text()

    with pytest.raises(ActionError) as refused:
        pinned.set_canary_weight(50)

    assert str(refused.value) == (
        "canary step 50 %: platform.local.canary_instances = 1 makes each canary instance carry 1.50 "
        "times the requests of one of the 3 stable instances serving alone (refused from 1.5): unset "
        "platform.local.canary_instances to let the canary follow the weight, or pin at least 2"
    )
    assert pinned.upstream_file.read_text() == upstream, "nginx untouched"
    assert answers(env, 60) == {"1.0.0": 60}, "stable still serves alone"
    assert len(pinned.canary_instances()) == 1
    assert pinned.set_canary_weight(25) == 25.0  # 0.75 times: allowed

    two = platform_for(env, strategy="canary", canary_instances=2)
    assert two.set_canary_weight(50) == 50.0  # the second pinned instance started first
    assert len(two.canary_instances()) == 2
    upstream = two.upstream_file.read_text()

    with pytest.raises(ActionError) as refused:
        two.set_canary_weight(100)

    assert str(refused.value) == (
        "canary step 100 %: platform.local.canary_instances = 2 puts every request on fewer instances "
        "than the 3 stable ones had (each carrying 1.50 times the requests of a stable one serving alone): "
        "unset platform.local.canary_instances to let the canary follow the weight, or pin at least 3"
    )
    assert two.upstream_file.read_text() == upstream, "still at 50 %"
    assert canary_share(two) == pytest.approx(50)
    assert 0 < answers(env, 60)["1.0.0"] < 60
    assert two.abort().ok


def test_rollback_from_another_process_after_a_killed_canary_routes_only_to_stable(
    env: Environment, canary: LocalPlatform
) -> None:
    stable = sorted(i.name for i in canary.status().instances)
    running = subprocess.Popen(
        [sys.executable, "-c", KILLED_CANARY, str(env.source), str(ROOT)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert running.stdout is not None
    for line in running.stdout:
        if line.startswith("canary at 50.0"):
            running.kill()  # SIGKILL: the canary keeps running, nobody aborts it
            break
    running.wait(timeout=10)
    instances = canary.canary_instances()
    assert len(instances) == 2 and all(alive(i.url) for i in instances)
    assert 0 < answers(env, 40)["1.0.0"] < 40

    result = platform_for(env).rollback()  # a fresh object: all it knows is on disk

    assert result.ok, result.reason
    assert result.release == "1.0.0"
    assert "canary 2.0.0 aborted: 1.0.0×3 serves alone" in result.events
    assert not any(alive(i.url) for i in instances)
    status = canary.status()
    assert sorted(i.name for i in status.instances) == stable
    assert status.releases_serving == {"1.0.0"}
    assert answers(env, 100) == {"1.0.0": 100}
    assert json.loads(canary.state_file.read_text())["canary"] is None


KILLED_CANARY = """
import sys, time
from pathlib import Path
from releasegate.config import load_environment
from releasegate.platforms.local import LocalPlatform
env = load_environment(sys.argv[1], Path(sys.argv[2]))
settings = env.platform.local.model_copy(update={"strategy": "canary", "min_ready_s": 0.3})
platform = LocalPlatform(settings, env.platform.url)
assert platform.start_canary("2.0.0").ok
print("canary at", platform.set_canary_weight(50), flush=True)
time.sleep(60)
"""


def test_a_canary_that_does_not_start_changes_nothing(env: Environment, canary: LocalPlatform) -> None:
    before = sorted(i.name for i in canary.status().instances)

    result = canary.start_canary("9.9.9")

    assert not result.ok
    assert "unknown release 9.9.9" in result.reason
    assert sorted(i.name for i in canary.status().instances) == before
    assert canary.canary_instances() == []
    assert canary.rollback().events == ["1.0.0 already serves on all 3 instances: nothing to do"]


def test_deploy_does_not_skip_the_strategys_steps(canary: LocalPlatform) -> None:
    with pytest.raises(ActionError, match=r"strategy is 'canary'.*: start_canary, set_canary_weight"):
        canary.deploy("2.0.0")
    assert canary.deploy("1.0.0").ok  # what serves: the usual no-op
    assert canary.start_canary("2.0.0").ok
    with pytest.raises(ActionError, match=r"a canary of 2\.0\.0 is running: promote, abort or roll back"):
        canary.deploy("1.0.0")
    assert canary.abort().ok
    with pytest.raises(ActionError, match="start_green needs 'blue-green'"):
        canary.start_green("2.0.0")


def test_blue_green_green_is_smoke_tested_directly_then_takes_all_traffic_and_switching_back_is_instant(
    env: Environment, blue_green: LocalPlatform
) -> None:
    lines: list[str] = []
    blue = {i.name: i.url for i in blue_green.status().instances}

    started = blue_green.start_green("2.0.0", lines.append)

    assert started.ok, started.reason
    green = blue_green.green_instances()
    assert [i.release for i in green] == ["2.0.0"] * 3
    for instance in green:  # the smoke test's view: each green instance at its own URL
        assert instance.detail.startswith("green, not routed;")
        assert httpx.get(instance.url + "/health/live", timeout=3).json()["version"] == "2.0.0"
    status = blue_green.status()
    assert len(status.instances) == 6
    assert set(status.in_service) == set(blue)
    assert answers(env, 60) == {"1.0.0": 60}

    switched = blue_green.switch_traffic("green", lines.append)

    assert switched.ok, switched.reason
    assert lines[-1] == "nginx -> green 2.0.0×3 (blue 1.0.0×3 warm)"
    assert answers(env, 100) == {"2.0.0": 100}
    status = blue_green.status()
    assert (status.release, status.previous_release) == ("2.0.0", "1.0.0")
    assert len(status.instances) == 6 and all(alive(url) for url in blue.values())
    assert all(i.detail.startswith("blue, warm until ") for i in status.instances if i.name in blue)
    assert 55 < blue_green.warm_remaining_s() <= 60

    t0 = time.monotonic()
    back = platform_for(env, strategy="blue-green").rollback()  # e.g. pytest rollback/, state from disk
    took = time.monotonic() - t0

    assert back.ok, back.reason
    assert took < 1.5, back.events
    assert back.release == "1.0.0"
    assert not any(line.startswith("started ") for line in back.events)  # no process started
    assert "1.0.0 still runs warm on 3 instance(s): switching back, no process starts" in back.events
    assert answers(env, 100) == {"1.0.0": 100}
    status = blue_green.status()
    assert sorted(i.name for i in status.instances) == sorted(blue) + sorted(i.name for i in green)
    assert set(status.in_service) == set(blue)
    assert (status.release, status.previous_release) == ("1.0.0", "2.0.0")

    retired = blue_green.retire()

    assert retired.ok, retired.reason
    assert not any(alive(i.url) for i in green)
    assert sorted(i.name for i in blue_green.status().instances) == sorted(blue)
    assert blue_green.green_instances() == []
    assert answers(env, 30) == {"1.0.0": 30}


def test_blue_green_retire_stops_the_warm_set_then_a_rollback_starts_processes(
    env: Environment, blue_green: LocalPlatform
) -> None:
    blue = [i.url for i in blue_green.status().instances]
    assert blue_green.start_green("2.0.0").ok
    assert blue_green.switch_to("2.0.0").ok

    retired = blue_green.retire()

    assert retired.ok, retired.reason
    assert retired.events[0].startswith("retiring blue 1.0.0×3 (warm for ")
    assert not any(alive(url) for url in blue)
    status = blue_green.status()
    assert [i.release for i in status.instances] == ["2.0.0"] * 3
    assert (status.release, status.previous_release) == ("2.0.0", "1.0.0")
    assert blue_green.warm_remaining_s() == 0
    assert answers(env, 30) == {"2.0.0": 30}

    back = blue_green.rollback()  # nothing warm any more: the rolling routine

    assert back.ok, back.reason
    assert sum(line.startswith("started 1.0.0 on :") for line in back.events) == 3
    assert blue_green.status().releases_serving == {"1.0.0"}


def test_a_green_that_never_switched_is_stopped_by_a_rollback(
    env: Environment, blue_green: LocalPlatform
) -> None:
    blue = sorted(i.name for i in blue_green.status().instances)
    assert blue_green.start_green("2.0.0-bad-health").ok  # smoke tests would fail it here

    back = blue_green.rollback()

    assert back.ok, back.reason
    assert back.release == "1.0.0"
    assert "stopping 3 instance(s) that never went into service" in back.events
    assert sorted(i.name for i in blue_green.status().instances) == blue
    assert blue_green.green_instances() == []
    assert answers(env, 30) == {"1.0.0": 30}
