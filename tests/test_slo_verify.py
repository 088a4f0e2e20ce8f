"""SLO gates in the verify phase, on a real Prometheus scraping the sandbox under synthetic load:
a build that fails requests, and one that is slower than the release it replaces without
crossing any absolute threshold."""

from __future__ import annotations

from pathlib import Path

import pytest
from gate_runs import ledger, run_gates, runs, serving
from sandbox_env import sandbox_down, sandbox_up, write_sandbox_env

pytestmark = pytest.mark.integration

ONE_ZERO = [("1.0.0", "healthy", "1.0.0")] * 3


@pytest.fixture
def metrics_sandbox(sandbox_dir: Path):
    """A sandbox with Prometheus; the watch after release is cut short: these tests are about verify."""
    env_file = write_sandbox_env(sandbox_dir, **{"metrics.observe.schedule": [{"every_s": 4, "until_s": 8}]})
    sandbox_up(env_file)
    try:
        yield env_file
    finally:
        sandbox_down(env_file)


def test_a_release_that_fails_two_percent_of_requests_is_rolled_back(metrics_sandbox: Path) -> None:
    run = run_gates(metrics_sandbox, "2.0.0-bad-errors")

    assert run.code == 11, run.output
    assert serving(metrics_sandbox) == ONE_ZERO
    record = runs(metrics_sandbox)[0]
    assert record.failed_gate == "gates/test_40_verify.py::test_slo_holds_on_the_new_release[error_ratio]"
    samples = [e for e in record.evidence if e.check.startswith("error_ratio sample")]
    assert samples and all(e.source.startswith("PromQL") for e in samples)
    assert any(e.value is not None and e.value > 0.001 for e in samples), "measured, not assumed"
    # judged on its counts: the requests since the rollout show it with 99 % confidence at once
    assert "the counts show it" in run.report and "% confidence at least" in run.report


def test_a_slower_release_is_caught_by_the_baseline_though_under_the_absolute_limit(
    metrics_sandbox: Path,
) -> None:
    run = run_gates(metrics_sandbox, "2.0.0-bad-latency")

    record = ledger(metrics_sandbox).run(runs(metrics_sandbox)[0].id)
    latencies = [
        f"{e.check}: {e.value} {e.verdict}" for e in record.evidence if e.check.startswith("latency_p95")
    ]
    assert run.code == 11, "\n".join(latencies)
    assert serving(metrics_sandbox) == ONE_ZERO
    assert record.failed_gate.endswith("test_slo_holds_on_the_new_release[latency_p95]")
    baseline = next(e for e in record.evidence if e.check == "latency_p95 of 1.0.0")
    failed = [e for e in record.evidence if e.check.startswith("latency_p95 sample") and e.verdict == "fail"]
    assert failed, "the comparison failed samples"
    for sample in failed:
        assert sample.value < 200, "every failing sample is under the absolute p95 limit"
        assert sample.value > baseline.value * 1.25, "and worse than the baseline by more than the limit"
