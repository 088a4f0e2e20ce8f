"""Sampling SLO checks over time: when samples are taken, when the series stops, what is recorded.

Prometheus is a stand-in with scripted answers and time is a fake clock, so the schedule can be
checked to the second without waiting; the same loop against the real sandbox Prometheus is in
test_metrics_sandbox.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from releasegate.analysis.baseline import RelativeLimit
from releasegate.analysis.canary import CanaryRule, CanaryVerdict
from releasegate.analysis.histogram import Histogram, QuantileRule
from releasegate.analysis.slo import SampleVerdict
from releasegate.analysis.thresholds import Verdict
from releasegate.config import MetricQueries, SloCheck, duration_seconds
from releasegate.probes.prometheus import Sample
from releasegate.sampling import Clock, StepSamples, sample_canary_step, sample_check, watch


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.t += seconds

    @property
    def clock(self) -> Clock:
        return Clock(now=self.now, sleep=self.sleep)


class Scripted:
    """Answers each query with the next scripted value; remembers when it was asked."""

    queries = MetricQueries()
    window = "30s"

    def __init__(self, clock: FakeClock, answers: dict[str, list[float | None]]) -> None:
        self.clock = clock
        self.answers = {k: iter(v) for k, v in answers.items()}
        self.asked: list[tuple[float, str, str, str | None]] = []

    def query(self, name: str, *, release: str, window: str | None = None, at=None) -> Sample:
        self.asked.append((self.clock.t - 1000.0, name, release, window))
        return Sample(
            f"{name}{{release={release}}}", "http://prom", next(self.answers[name]), datetime.now(UTC), name
        )


@pytest.fixture
def fake() -> Iterator[FakeClock]:
    yield FakeClock()


P95 = SloCheck(query="latency_p95", max=200, max_increase_ratio=0.1, interval_s=30, count=5, failure_limit=3)


def test_a_check_is_sampled_count_times_interval_apart_when_nothing_fails(fake: FakeClock) -> None:
    prometheus = Scripted(fake, {"latency_p95": [100, 110, 120, 130, 140]})
    seen: list[tuple[str, float | None, Verdict]] = []

    def record(name: str, sample: Sample, verdict: SampleVerdict) -> None:
        seen.append((name, sample.value, verdict.verdict))

    result = sample_check(prometheus, "p95", P95, release="2.0.0", on_sample=record, clock=fake.clock)  # type: ignore[arg-type]

    assert result.verdict is Verdict.PASS
    assert [t for t, *_ in prometheus.asked] == [0, 30, 60, 90, 120]
    assert prometheus.asked[0][1:] == ("latency_p95", "2.0.0", None)
    assert seen == [("p95", v, Verdict.PASS) for v in (100, 110, 120, 130, 140)]


def test_sampling_stops_at_the_third_failure_in_a_row(fake: FakeClock) -> None:
    prometheus = Scripted(fake, {"latency_p95": [100, 250, 260, 270, 100]})

    result = sample_check(prometheus, "p95", P95, release="2.0.0", clock=fake.clock)  # type: ignore[arg-type]

    assert result.verdict is Verdict.FAIL
    assert [t for t, *_ in prometheus.asked] == [0, 30, 60, 90]  # the fifth is never asked


def test_a_baseline_turns_on_the_relative_limit(fake: FakeClock) -> None:
    prometheus = Scripted(fake, {"latency_p95": [120, 125, 130]})

    result = sample_check(prometheus, "p95", P95, release="2.0.0", baseline=100, clock=fake.clock)  # type: ignore[arg-type]

    assert result.verdict is Verdict.FAIL  # within 200 ms, but 20-30 % slower than before
    assert result.samples[0].detail == "20.0% worse than the baseline 100 (limit 10%)"


def test_a_slow_query_does_not_push_the_schedule_back(fake: FakeClock) -> None:
    class Slow(Scripted):
        def query(self, name: str, *, release: str, window: str | None = None, at=None) -> Sample:
            sample = super().query(name, release=release, window=window)
            fake.t += 4  # each query takes 4 s
            return sample

    prometheus = Slow(fake, {"latency_p95": [100] * 5})

    sample_check(prometheus, "p95", P95, release="2.0.0", clock=fake.clock)  # type: ignore[arg-type]

    assert [t for t, *_ in prometheus.asked] == [0, 30, 60, 90, 120]
    assert fake.sleeps == [26, 26, 26, 26]


def test_the_watch_samples_every_check_on_the_schedule_and_stops_at_the_first_failure(
    fake: FakeClock,
) -> None:
    checks = {
        "errors": SloCheck(query="error_ratio", max=0.001, window="30s"),
        "memory": SloCheck(query="memory", max=0.7),
    }
    prometheus = Scripted(
        fake, {"error_ratio": [0, 0, 0, 0, 0, 0], "memory": [0.5, 0.75, None, 0.8, 0.5, 0.5]}
    )
    recorded: list[tuple[str, Verdict]] = []

    results = watch(
        prometheus,  # type: ignore[arg-type]
        checks,
        [5, 10, 15, 20, 25, 30],
        release="2.0.0",
        consecutive_failures=3,
        on_sample=lambda name, _sample, verdict: recorded.append((name, verdict.verdict)),
        clock=fake.clock,
    )

    assert results["memory"].verdict is Verdict.FAIL  # 0.75, no data, 0.8: three in a row
    assert results["memory"].reason == "3 consecutive failed samples (limit 3): samples 2-4"
    assert results["errors"].verdict is None  # not decided: the watch stopped at 20 s
    assert sorted({t for t, *_ in prometheus.asked}) == [5, 10, 15, 20]
    assert ("error_ratio", "30s") in {(name, window) for _, name, _, window in prometheus.asked}
    assert recorded[:4] == [
        ("errors", Verdict.PASS),
        ("memory", Verdict.PASS),
        ("errors", Verdict.PASS),
        ("memory", Verdict.FAIL),
    ]


def test_a_watch_that_sees_nothing_wrong_passes_every_check(fake: FakeClock) -> None:
    checks = {"errors": SloCheck(query="error_ratio", max=0.001)}
    prometheus = Scripted(fake, {"error_ratio": [0, 0]})

    results = watch(prometheus, checks, [2, 4], release="2.0.0", consecutive_failures=3, clock=fake.clock)  # type: ignore[arg-type]

    assert results["errors"].verdict is Verdict.PASS
    assert fake.t - 1000 == 4


ERRORS = SloCheck(query="error_ratio", max=0.001, interval_s=2, count=5, failure_limit=3)
ERRORS_RULE = CanaryRule(
    direction="max", threshold=0.001, relative=RelativeLimit(points=0.001), min_samples=2
)


def canary_step(
    fake: FakeClock,
    requests_per_s: float,
    steps: int,
    *,
    min_requests: int = 60,
    max_step_s: float | None = None,
    said: list[str] | None = None,
) -> tuple[CanaryVerdict, StepSamples, Scripted]:
    """A 10 s step sampled every 2 s with no errors anywhere; the canary gets ``requests_per_s``."""
    prometheus = Scripted(fake, {"error_ratio": [0.0] * 4 * steps, "request_rate": [requests_per_s] * steps})
    verdict, samples = five_percent_step(
        fake, prometheus, {"error_ratio": (ERRORS, ERRORS_RULE)}, min_requests, max_step_s, said
    )
    return verdict, samples, prometheus


def five_percent_step(
    fake: FakeClock,
    prometheus: object,
    rules: dict[str, tuple[SloCheck, CanaryRule]],
    min_requests: int,
    max_step_s: float | None,
    said: list[str] | None,
) -> tuple[CanaryVerdict, StepSamples]:
    """A 10 s step of 2.0.0 against 1.0.0, sampled every 2 s over 4 s, Prometheus scraping every 1 s."""
    return sample_canary_step(
        prometheus,  # type: ignore[arg-type]
        rules,
        canary="2.0.0",
        stable="1.0.0",
        pause_s=10,
        interval_s=2,
        window="4s",
        min_requests=min_requests,
        max_step_s=max_step_s,
        scrape_interval_s=1,
        label="5 % step",
        progress=(said if said is not None else []).append,
        clock=fake.clock,
    )


def test_a_canary_step_passes_only_once_the_canary_served_its_minimum_of_requests(fake: FakeClock) -> None:
    verdict, samples, prometheus = canary_step(fake, requests_per_s=5, steps=10)

    assert verdict.verdict is Verdict.PASS
    # 60 requests at 5 rps take 12 s; the last scrape's second does not count: 14 s, not 12 or the pause's 10
    assert prometheus.asked[-1][0] == 14
    assert samples.canary_requests == pytest.approx(65)


def test_a_canary_step_without_enough_requests_is_no_data_never_a_pass(fake: FakeClock) -> None:
    verdict, _, _ = canary_step(fake, requests_per_s=1, steps=20)

    assert verdict.verdict is Verdict.NO_DATA  # three pauses (30 s) and still under 60 requests
    assert "the canary served 29 of 60 requests needed in 30 s" in verdict.note


def test_a_step_waits_for_the_derived_requests_up_to_its_bound_saying_so(fake: FakeClock) -> None:
    """149 requests (a 2 % error rate with 95 % confidence) at 5 rps: 31 s, past the pause and
    three pauses; a bound of 40 s lets the step pass at 32 s, saying while it waits."""
    said: list[str] = []
    verdict, samples, prometheus = canary_step(
        fake, requests_per_s=5, steps=20, min_requests=149, max_step_s=40, said=said
    )

    assert verdict.verdict is Verdict.PASS
    assert prometheus.asked[-1][0] == 32
    assert samples.canary_requests == pytest.approx(155)
    assert said == [
        "5 % step: 45 of 149 requests, waiting up to 30 s more",
        "5 % step: 95 of 149 requests, waiting up to 20 s more",
        "5 % step: 145 of 149 requests, waiting up to 10 s more",
    ]


def test_a_step_that_cannot_reach_its_requests_within_its_bound_is_no_data(fake: FakeClock) -> None:
    verdict, _, prometheus = canary_step(fake, requests_per_s=5, steps=20, min_requests=149, max_step_s=20)

    assert verdict.verdict is Verdict.NO_DATA
    assert prometheus.asked[-1][0] == 20  # the bound, not three pauses
    assert verdict.note == (
        "not enough to judge: the canary served 95 of 149 requests needed in 20 s (the step may run 20 s)"
    )


# A latency judged route by route: the step waits for the route it can still compare ---------------

P95_BY_ROUTE = SloCheck(query="latency_p95", max=200, histogram="latency_histogram", quantile=0.95)
P95_RULE = CanaryRule(
    "max",
    200,
    RelativeLimit(ratio=0.2),
    min_samples=2,
    confidence=0.99,
    quantile=QuantileRule(0.95, noise_floor=5),
)
LIST, ONE = "route=/api/customers", "route=/api/customers/{id}"


class Paced:
    """Prometheus at a steady pace: each route's requests grow with the window asked. The list
    route answers under 10 ms, or 20 to 40 ms on a ``slow`` canary; one request in ten of the
    other route takes 20 to 40 ms everywhere, so all of them together have the same p95 bucket."""

    queries = MetricQueries()
    window = "30s"

    def __init__(self, rps: dict[str, dict[str, float]], slow: bool) -> None:
        self.rps, self.slow = rps, slow

    def query(self, name: str, *, release: str, window: str | None = None, at=None) -> Sample:
        value = sum(self.rps[release].values()) if name == "request_rate" else 9.0
        return Sample(f"{name}{{release={release}}}", "http://prom", value, datetime.now(UTC), name)

    def histograms(
        self, name: str, *, release: str, window: str | None = None, at=None
    ) -> tuple[dict, Sample]:
        seconds = duration_seconds(window or self.window)
        groups = {}
        for route, rate in self.rps[release].items():
            n = math.floor(rate * seconds)
            slow = self.slow and release == "2.0.0" and route == LIST
            fast = 0 if slow else n if route == LIST else math.floor(0.9 * n)
            groups[route] = Histogram.of([(0.01, fast), (0.02, fast), (0.04, n), (math.inf, n)])
        return groups, Sample(name, "http://prom", float(seconds), datetime.now(UTC), name)


def route_step(
    fake: FakeClock, *, slow: bool, max_step_s: float, said: list[str]
) -> tuple[CanaryVerdict, float]:
    """The 5 % step of 100 requests/s: the list route (one request in eight) gets 0.625/s."""
    prometheus = Paced({"2.0.0": {LIST: 0.625, ONE: 4.375}, "1.0.0": {LIST: 11.875, ONE: 83.125}}, slow)
    started = fake.t
    verdict, _ = five_percent_step(
        fake, prometheus, {"latency_p95": (P95_BY_ROUTE, P95_RULE)}, 60, max_step_s, said
    )
    return verdict, fake.t - started


def test_a_step_waits_for_the_route_it_can_compare_before_its_limit_and_catches_it_slow(
    fake: FakeClock,
) -> None:
    said: list[str] = []
    verdict, took_s = route_step(fake, slow=True, max_step_s=60, said=said)

    # 60 requests in 13 s; the list route's 20 (a p95's minimum) only at 32 s
    assert verdict.verdict is Verdict.FAIL, verdict.reason
    assert took_s == 32
    assert f"{LIST}: p95" in verdict.reason
    assert said == [
        "5 % step: 45 of 60 requests, waiting up to 50 s more",
        f"5 % step: waiting for latency_p95 {LIST}: 12 of 20 canary requests, waiting up to 40 s more",
        f"5 % step: waiting for latency_p95 {LIST}: 18 of 20 canary requests, waiting up to 30 s more",
    ]


def test_a_healthy_step_waits_for_the_route_then_passes_having_compared_it(fake: FakeClock) -> None:
    verdict, took_s = route_step(fake, slow=False, max_step_s=60, said=[])

    assert verdict.verdict is Verdict.PASS, verdict.reason
    assert took_s == 32
    assert "2 group(s) compared on their own, none worse" in verdict.reason


def test_a_route_too_rare_to_compare_within_the_limit_is_not_waited_for_and_says_so(fake: FakeClock) -> None:
    verdict, took_s = route_step(fake, slow=True, max_step_s=20, said=[])

    # 0.625/s cannot give 20 requests in 20 s: the step passes on the others, naming the route
    assert verdict.verdict is Verdict.PASS, verdict.reason
    assert took_s == 14
    assert f"too few requests to compare on their own: {LIST}" in verdict.reason
