"""Blue-green on the local platform: green is tested directly before it takes traffic, the
switch moves every request, and rolling back during the warm period is a switch back."""

from __future__ import annotations

from pathlib import Path

import pytest
from gate_runs import run_gates, runs, serving
from sandbox_env import sandbox_down, sandbox_up, write_sandbox_env

pytestmark = pytest.mark.integration


@pytest.fixture
def blue_green(sandbox_dir: Path, request: pytest.FixtureRequest):
    overrides = {"platform.local.strategy": "blue-green", "platform.local.keep_warm_s": 2, "metrics": None}
    overrides.update(getattr(request, "param", {}))
    env_file = write_sandbox_env(sandbox_dir, **overrides)
    sandbox_up(env_file)
    try:
        yield env_file
    finally:
        sandbox_down(env_file)


def test_green_switches_in_and_blue_is_retired_after_the_warm_period(blue_green: Path) -> None:
    run = run_gates(blue_green, "2.0.0")

    assert run.code == 0, run.output
    assert serving(blue_green) == [("2.0.0", "healthy", "2.0.0")] * 3
    record = runs(blue_green)[0]
    assert [i.action for i in record.intents] == ["migrate", "policy", "deploy", "deploy", "retire"]
    assert "requests failed during the rollout | 0 | <= 0 | pass" in run.report
    assert "retiring blue 1.0.0" in run.output


@pytest.mark.parametrize("blue_green", [{"verify.max_db_latency_ms": 0.001}], indirect=True)
def test_a_failure_after_the_switch_switches_back_without_starting_anything(blue_green: Path) -> None:
    run = run_gates(blue_green, "2.0.0")

    assert run.code == 11, run.output
    assert serving(blue_green) == [("1.0.0", "healthy", "1.0.0")] * 3
    assert "switching back, no process starts" in run.output
    record = runs(blue_green)[0]
    assert record.failed_gate == "gates/test_40_verify.py::test_database_answers_in_time"
    assert "started 1.0.0" not in run.output, "blue was kept warm: the rollback started no process"


def test_an_unhealthy_green_never_takes_traffic(blue_green: Path) -> None:
    run = run_gates(blue_green, "2.0.0-bad-health")

    assert run.code == 11, run.output
    assert serving(blue_green) == [("1.0.0", "healthy", "1.0.0")] * 3
    record = runs(blue_green)[0]
    assert record.failed_gate == "gates/test_30_deploy.py::test_green_answers_before_it_takes_traffic"
    assert "nginx -> green" not in run.output, "the switch never happened"
