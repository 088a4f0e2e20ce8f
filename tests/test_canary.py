"""The progressive canary on the local platform, judged on a real Prometheus: a healthy canary
goes through every step and is promoted; a build that fails requests and one that is only
slower are each caught at the first step, taken out of the load balancer, and rolled back; one
whose own /health fails is taken out before the first step moves any traffic to it. The same
against the notes service, with the requests each step needs derived: test_canary_notes.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from gate_runs import run_gates, runs, serving
from sandbox_env import sandbox_down, sandbox_up, write_sandbox_env

pytestmark = pytest.mark.integration

STEPS = [5, 25, 100]
"""The canary's instances follow the weight: 1, 1 and 3 of them. 25 %, not 50: the one canary
instance then carries as many requests as each of the three stable ones. At 50 % each of its two
carries 1.5 times as many as a stable one then does, and on a busy machine its p99 is worse for
that alone."""


@pytest.fixture
def canary_sandbox(sandbox_dir: Path):
    env_file = write_sandbox_env(
        sandbox_dir,
        **{
            "platform.local.strategy": "canary",
            "metrics.canary.steps": STEPS,
            "metrics.load.rps": 100,  # 5 % of it is the 5 requests/s the first step's 93 need
            "metrics.observe.schedule": [{"every_s": 4, "until_s": 8}],
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
    served = [e for e in record.evidence if e.check == "requests the canary served in this step"]
    assert [e.threshold for e in served] == [93, 93], "environments/sandbox.toml: 5 % shown over 0.1 %, 95 %"
    assert all(e.value >= e.threshold and e.verdict == "pass" for e in served), served
    asked = [
        e.check for e in record.evidence if e.check.startswith("canary ") and e.check.endswith("version")
    ]
    when = [a.split(" ", 2)[2] for a in asked]
    assert when == [
        "before 5 % /health version",
        "before 25 % /health version",
        "before 100 % /health version",
        *["at 100 %, once its instances run /health version"] * 2,  # the two 100 % started
    ], asked
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
    # The sandbox's steps are sized to see a 5 % error rate (detect_error_ratio); bad-errors fails
    # 2 % of requests, which the first step's requests may not show: a later step must, before
    # anything is promoted. bad-latency shows in every request's time.
    first = ["gates/test_30_deploy.py::test_canary_step[5]"]
    caught_at = (
        first if caught_by == "latency_p95" else [*first, "gates/test_30_deploy.py::test_canary_step[25]"]
    )
    assert record.failed_gate in caught_at, record.failed_gate
    assert not any("promote" in i.about_to for i in record.intents), "never promoted"
    assert f"{caught_by}:" in record.failure
    assert "taking the canary out" in run.output
    judgements = [e for e in record.evidence if e.check == f"{caught_by}: canary against stable"]
    judged = judgements[-1]  # the step that caught it (bad-errors may pass the first one)
    assert judged.verdict == "fail"
    if caught_by == "latency_p95":
        assert judged.value < 200, "under the absolute limit: caught by the comparison with stable"


def test_a_canary_whose_own_health_fails_is_taken_out_before_it_gets_any_traffic(
    canary_sandbox: Path,
) -> None:
    """2.0.0-bad-health is ready (/health/live) and its requests succeed: only its /health says
    that its database check fails. Before: it went through every step and verify caught it."""
    run = run_gates(canary_sandbox, "2.0.0-bad-health")

    assert run.code == 11, run.output
    assert serving(canary_sandbox) == [("1.0.0", "healthy", "1.0.0")] * 3
    record = runs(canary_sandbox)[0]
    assert record.failed_gate == "gates/test_30_deploy.py::test_canary_step[5]"
    assert "every canary instance healthy on 2.0.0-bad-health (1 asked): no: fail" in (record.failure or "")
    assert "database: fail: connection pool exhausted" in (record.failure or "")
    assert not any(e.check == "share of requests sent to 2.0.0-bad-health" for e in record.evidence)
    status = next(e for e in record.evidence if e.check.endswith("before 5 % /health status"))
    assert (status.value, status.verdict) == ("unhealthy", "fail")
