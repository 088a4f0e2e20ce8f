"""[metrics.canary]: how many requests a step needs, and how long it may wait for them, as an
environment file says it; what is refused, in one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from releasegate.analysis.detection import RequestsNeeded
from releasegate.config import load_environment
from releasegate.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SANDBOX = (ROOT / "environments" / "sandbox.toml").read_text()
DETECT = "detect_error_ratio = 0.05\n"


def load_with(tmp_path: Path, old: str, new: str):
    assert old in SANDBOX
    path = tmp_path / "env.toml"
    path.write_text(SANDBOX.replace(old, new, 1))
    return load_environment(str(path), ROOT)


def needed(env) -> RequestsNeeded:
    return RequestsNeeded.from_settings(env.metrics.canary, env.metrics.slo, env.metrics.confidence)


def test_each_example_environment_says_how_many_requests_a_step_needs_and_why() -> None:
    found = {}
    for name in ("sandbox", "staging.example", "production.example"):
        metrics = load_environment(name, ROOT).metrics
        assert metrics is not None
        found[name] = (needed(load_environment(name, ROOT)).count, metrics.canary.max_step_for(0))
    assert found == {
        # error_ratio is judged on its counts, at 99.5 % bounds at the look that would pass a step:
        # each number shows the detected ratio over its max of 0.001 (0.1 %) 95 % of the time
        "sandbox": (93, 60),  # detects 5 %: 0.2 % would take 25525 requests, 85 min at 5 % of 100/s
        "staging.example": (913, 1800),  # detects 1 %: staging's traffic is thin
        "production.example": (25525, 1800),  # derived: twice the error_ratio SLO
    }


def test_without_an_explicit_ratio_the_error_checks_max_sets_the_number(tmp_path: Path) -> None:
    env = load_with(tmp_path, DETECT, "")
    assert (needed(env).count, needed(env).source) == (25525, "twice metrics.slo.error_ratio max")

    env = load_with(tmp_path, DETECT, "min_requests = 200\n")
    assert (needed(env).count, needed(env).source) == (200, "metrics.canary.min_requests, explicit")


def test_an_error_check_that_is_no_error_ratio_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"canary.error_check: 'errors' is not a \[metrics.slo\] check"):
        load_with(tmp_path, DETECT, 'error_check = "errors"\n')
    with pytest.raises(ConfigError, match=r"slo.latency_p95 needs a max between 0 and 1"):
        load_with(tmp_path, DETECT, 'error_check = "latency_p95"\n')
    with pytest.raises(ConfigError, match="'cpu' is not among the checks the canary compares"):
        load_with(tmp_path, DETECT, 'error_check = "cpu"\n')


def test_a_confidence_or_ratio_outside_zero_to_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="confidence"):
        load_with(tmp_path, "confidence = 0.95", "confidence = 1.0")
    with pytest.raises(ConfigError, match="detect_error_ratio"):
        load_with(tmp_path, DETECT, "detect_error_ratio = 0\n")


def test_a_step_bound_shorter_than_a_pause_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"max_step_s 8 is shorter than a pause \(10 s\)"):
        load_with(tmp_path, "max_step_s = 60", "max_step_s = 8")
    env = load_with(tmp_path, "max_step_s = 60", "max_step_s = 10")
    assert env.metrics is not None and env.metrics.canary.max_step_for(0) == 10
