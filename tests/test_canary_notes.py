"""The canary against the notes service (not the demo): each step asks every canary instance for
its own health and version first, and passes only after enough requests to show an error rate
over the environment's threshold (issue 10, items 3 and 8; issue 14: judged on counts).

- 1.5.0-stale-version reports 1.4.0 on /internal/status while it serves fine: the metrics, which
  know only the release label the platform gave it, cannot tell; its own answer can, before the
  first step moves any traffic to it.
- 1.5.0-flaky fails 5 % of user requests: the first step waits for the requests that show 5 %
  over the 2 % limit (624 at the last look's 99.5 % bounds, 95 % of the time), and catches it.
- With too little traffic to reach the requests needed within max_step_s, a step is no data,
  never a pass, and the canary is rolled back.
- 1.5.0 passes every step, each on at least the derived number of requests.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from gate_runs import environment, run_gates, runs, serving
from notes_service.stack import running_notes, write_notes_env

from releasegate.analysis.detection import RequestsNeeded

pytestmark = pytest.mark.integration

FIRST_STEP = "gates/test_30_deploy.py::test_canary_step[50]"


def canary_env(dir: Path, **overrides: object) -> Path:
    """The notes service's environment with the canary strategy and the requests derived (no
    explicit min_requests): 5 % shown over error_ratio's max 0.02, 624 requests a step, 60
    requests/s of load (30 to the canary at 50 %: about 20 s)."""
    return write_notes_env(
        dir,
        **{
            "platform.local.strategy": "canary",
            "metrics.canary.min_requests": None,
            "metrics.canary.detect_error_ratio": 0.05,
            "metrics.load.rps": 60,
            "metrics.canary.max_step_s": 45,  # 624 requests at 30/s: 30 s
            # Errors only: these tests are about the canary's own health and the requests a step
            # needs; a new process's first sub-millisecond latencies are noise they need not judge.
            "metrics.canary.checks": ["error_ratio"],
            **overrides,
        },
    )


@pytest.fixture
def notes_canary(sandbox_dir: Path) -> Iterator[Path]:
    with running_notes(canary_env(sandbox_dir)) as env_file:
        yield env_file


def test_the_derived_number_of_requests_is_the_threshold_s(sandbox_dir: Path) -> None:
    env = environment(canary_env(sandbox_dir))
    assert env.metrics is not None
    needed = RequestsNeeded.from_settings(env.metrics.canary, env.metrics.slo, env.metrics.confidence)
    assert (needed.count, needed.source, needed.over) == (624, "metrics.canary.detect_error_ratio", 0.02)


def test_a_release_reporting_the_previous_version_is_caught_before_the_first_step(notes_canary: Path) -> None:
    run = run_gates(notes_canary, "1.5.0-stale-version")

    assert run.code == 11, run.output
    assert serving(notes_canary) == [("1.4.0", "healthy", "1.4.0")] * 2
    record = runs(notes_canary)[0]
    assert record.failed_gate == FIRST_STEP
    assert not any(e.check.startswith("share of requests sent to") for e in record.evidence), (
        "no traffic moved"
    )
    assert not any("promote" in i.about_to for i in record.intents)
    wrong = [
        e for e in record.evidence if e.check.endswith("/internal/status version") and e.verdict == "fail"
    ]
    assert len(wrong) == 1
    assert (wrong[0].value, wrong[0].threshold) == ("1.4.0", "1.5.0-stale-version")
    assert re.fullmatch(
        r"canary 1\.5\.0-stale-version-\d+ before 50 % /internal/status version", wrong[0].check
    )
    row = next(line for line in run.report.splitlines() if wrong[0].check in line)
    assert "1.4.0" in row and "== 1.5.0-stale-version" in row and "fail" in row, row
    assert "taking the canary out" in run.output


def test_a_release_failing_five_percent_of_requests_is_caught_at_the_first_step(notes_canary: Path) -> None:
    run = run_gates(notes_canary, "1.5.0-flaky")

    assert run.code == 11, run.output
    assert serving(notes_canary) == [("1.4.0", "healthy", "1.4.0")] * 2
    record = runs(notes_canary)[0]
    assert record.failed_gate == FIRST_STEP
    assert "error_ratio:" in (record.failure or "")


def test_a_step_that_cannot_see_enough_requests_is_no_data_and_rolls_back(sandbox_dir: Path) -> None:
    # 4 requests/s, 2 to the canary at 50 %: 624 requests take 312 s, the step may run 10
    env_file = canary_env(sandbox_dir, **{"metrics.load.rps": 4, "metrics.canary.max_step_s": 10})
    with running_notes(env_file):
        run = run_gates(env_file, "1.5.0")

        assert run.code == 11, run.output
        assert serving(env_file) == [("1.4.0", "healthy", "1.4.0")] * 2
    record = runs(env_file)[0]
    assert record.failed_gate == FIRST_STEP
    assert "of 624 requests needed in 10 s" in (record.failure or "")
    assert "waiting up to" in run.output
    served = next(e for e in record.evidence if e.check == "requests the canary served in this step")
    assert (served.verdict, served.comparator, served.threshold) == ("no data", ">=", 624)
    assert served.value < 624
    assert f"served {served.value} of 624 requests" in run.report


def test_a_healthy_release_passes_every_step_on_enough_requests(notes_canary: Path) -> None:
    run = run_gates(notes_canary, "1.5.0")

    assert run.code == 0, run.output
    assert serving(notes_canary) == [("1.5.0", "healthy", "1.5.0")] * 2
    record = runs(notes_canary)[0]
    served = [e for e in record.evidence if e.check == "requests the canary served in this step"]
    assert len(served) == 1, "the 50 % step; at 100 % the verify phase judges the release alone"
    assert served[0].value >= 624 and served[0].threshold == 624
    asked = [
        e
        for e in record.evidence
        if e.check.startswith("canary ") and e.check.endswith("/internal/status version")
    ]
    assert [(e.value, e.verdict) for e in asked] == [("1.5.0", "pass")] * 3, (
        "before 50 %, before 100 %, and the second instance the 100 % step started"
    )
    assert asked[2].check.endswith(" at 100 %, once its instances run /internal/status version")
