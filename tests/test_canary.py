"""The progressive canary on the local platform, judged on a real Prometheus: a healthy canary
goes through every step and is promoted; a build that fails requests and one that is only
slower are each caught at the first step, taken out of the load balancer, and rolled back."""

from __future__ import annotations

from pathlib import Path

import pytest
from gate_runs import run_gates, runs, serving
from sandbox_env import sandbox_down, sandbox_up, write_sandbox_env

pytestmark = pytest.mark.integration

STEPS = [5, 25, 100]
"""25 %, not 50: the one canary instance then carries as many requests as each of the three stable
ones. At 50 % it carries three times as many, and on a busy machine its p99 is worse for that alone."""


@pytest.fixture
def canary_sandbox(sandbox_dir: Path):
    env_file = write_sandbox_env(
        sandbox_dir,
        **{
            "platform.local.strategy": "canary",
            "metrics.canary.steps": STEPS,
            "metrics.load.rps": 100,  # 5 % of it is the 5 requests/s the first step's 60 need
            "metrics.observe.schedule": [{"every_s": 2, "until_s": 4}],
            # The watch compares with a baseline taken minutes before, which a busy test machine
            # moves: these tests are about the canary, judged against stable at the same moment.
            "metrics.observe.checks": ["error_ratio", "restarts"],
        },
    )
    sandbox_up(env_file)
    try:
        yield env_file
    finally:
        sandbox_down(env_file)


def test_a_healthy_canary_goes_through_every_step_and_is_promoted(canary_sandbox: Path) -> None:
    run = run_gates(canary_sandbox, "2.0.0")

    assert run.code == 0, run.output
    assert serving(canary_sandbox) == [("2.0.0", "healthy", "2.0.0")] * 3
    record = runs(canary_sandbox)[0]
    steps = {g["gate"]: g["outcome"] for g in record.gates if "test_canary_step" in g["gate"]}
    assert steps == {f"gates/test_30_deploy.py::test_canary_step[{s}]": "passed" for s in STEPS}
    moved = [e.value for e in record.evidence if e.check == "share of requests sent to 2.0.0"]
    assert moved == [5.0, 25.0, 100.0], "the weights, in order"
    assert [i.action for i in record.intents][-1] == "deploy" and "promote" in record.intents[-1].about_to


@pytest.mark.parametrize(
    ("release", "caught_by"),
    [("2.0.0-bad-errors", "error_ratio"), ("2.0.0-bad-latency", "latency_p95")],
)
def test_a_bad_canary_is_caught_at_the_first_step(canary_sandbox: Path, release: str, caught_by: str) -> None:
    run = run_gates(canary_sandbox, release)

    assert run.code == 11, run.output
    assert serving(canary_sandbox) == [("1.0.0", "healthy", "1.0.0")] * 3
    record = runs(canary_sandbox)[0]
    assert record.failed_gate == "gates/test_30_deploy.py::test_canary_step[5]"
    assert f"{caught_by}:" in record.failure
    assert "taking the canary out" in run.output
    judged = next(e for e in record.evidence if e.check == f"{caught_by}: canary against stable")
    assert judged.verdict == "fail"
    if caught_by == "latency_p95":
        assert judged.value < 200, "under the absolute limit: caught by the comparison with stable"
