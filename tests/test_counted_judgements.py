"""Ratios and latencies judged with their counts (issue 14): what a healthy release with a normal
background error rate shows must pass; what a broken one shows must fail, as soon as the counts
allow. Pure judgements, no I/O; the same judgements on the real sandbox are in test_canary.py."""

from __future__ import annotations

import random

import pytest

from releasegate.analysis.baseline import RelativeLimit
from releasegate.analysis.burn_rate import BurnWindow, evaluate
from releasegate.analysis.canary import CanaryRule, judge_counted
from releasegate.analysis.counts import Counts, bounds, percent, ratio_within, worse_p_value
from releasegate.analysis.detection import RequestsNeeded, requests_to_detect, requests_to_show
from releasegate.analysis.histogram import Histogram, QuantileRule, merged, quantile_against, quantile_within
from releasegate.analysis.slo import Against, SloRule, SloSeries
from releasegate.analysis.thresholds import Verdict
from releasegate.config import CanarySettings, SloCheck

BOUNDS_S = (0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.1, 0.25, float("inf"))


def histogram(latencies_s: list[float]) -> Histogram:
    """The cumulative bucket counts a Prometheus histogram would hold for these observations."""
    return Histogram.of((le, sum(1 for x in latencies_s if x <= le)) for le in BOUNDS_S)


def lognormal(n: int, median_s: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.lognormvariate(0, 0.3) * median_s for _ in range(n)]


# Ratios ---------------------------------------------------------------------------------------


def test_one_error_in_a_hundred_requests_is_not_shown_over_a_tenth_of_a_percent() -> None:
    """The issue's example: 1 % as counted, but what a 0.05 % background shows now and then."""
    verdict = ratio_within(Counts(1, 100), "max", 0.001, 0.99)

    assert verdict.verdict is Verdict.PASS
    assert verdict.detail == (
        "1 of 100 (1 %); with 99 % confidence at least 0.01 %: as counted past 0.1 %, not shown to be"
    )


def test_five_errors_in_twenty_requests_need_no_more_data() -> None:
    verdict = ratio_within(Counts(5, 20), "max", 0.001, 0.99)

    assert verdict.verdict is Verdict.FAIL
    assert verdict.detail == "5 of 20 (25 %); with 99 % confidence at least 6.88 %, > 0.1 %"


def test_no_requests_counted_is_no_data_never_a_pass() -> None:
    assert ratio_within(Counts(0, 0), "max", 0.001, 0.99).verdict is Verdict.NO_DATA
    assert ratio_within(None, "max", 0.001, 0.99).verdict is Verdict.NO_DATA


def test_a_success_ratio_fails_when_its_upper_bound_is_under_the_minimum() -> None:
    assert ratio_within(Counts(800, 1000), "min", 0.85, 0.99).verdict is Verdict.FAIL
    assert (
        ratio_within(Counts(84, 100), "min", 0.85, 0.99).verdict is Verdict.PASS
    )  # 84 % of 100: could be 85


def test_the_bounds_are_clopper_pearsons() -> None:
    lower, upper = bounds(Counts(0, 2995), 0.95)
    assert lower == 0 and upper == pytest.approx(0.001, rel=0.01)  # the "rule of three": 3 / n
    assert bounds(Counts(3, 3), 0.95)[1] == 1.0


def test_counts_from_prometheus_are_whole_events() -> None:
    """increase() extrapolates: 1.04 errors of 99.7 requests are 1 of 100."""
    assert Counts.of(1.04, 99.7) == Counts(1, 100)
    assert Counts.of(None, 100) is None
    assert Counts.of(3.2, 2.9) == Counts(3, 3)


def test_canary_against_stable_fails_only_when_worse_and_significant() -> None:
    rule = CanaryRule("max", 0.001, RelativeLimit(points=0.001), confidence=0.99)

    one = judge_counted("error_ratio", Counts(1, 60), Counts(0, 1140), rule)
    assert one.verdict is Verdict.PASS
    assert one.reason.endswith("but not significant (Fisher p=0.05 >= 0.01)")
    assert (one.canary_requests, one.stable_requests) == (60, 1140)

    many = judge_counted("error_ratio", Counts(3, 60), Counts(0, 1140), rule)
    assert many.verdict is Verdict.FAIL  # the bound alone: at least 0.24 % of requests fail
    assert worse_p_value(Counts(3, 60), Counts(0, 1140), "max") < 0.01


def test_without_canary_requests_a_step_has_no_verdict_yet() -> None:
    rule = CanaryRule("max", 0.001, RelativeLimit(points=0.001))
    verdict = judge_counted("error_ratio", Counts(0, 0), Counts(0, 1140), rule)
    assert verdict.verdict is Verdict.NO_DATA
    assert "canary 0, stable 1140 request(s) counted" in verdict.reason


def test_a_healthy_background_rate_rarely_fails_a_step_and_five_times_it_shows_with_enough_requests() -> None:
    """2000 simulated canary steps of 60 to 600 requests, against stable's 2000: a background of
    0.05 % under a 0.1 % SLO fails well under 1 % of them; a release failing 5 % of its requests
    fails nearly every step of 600 requests."""
    rng = random.Random(14)
    rule = CanaryRule("max", 0.001, RelativeLimit(points=0.001), confidence=0.99)

    def step(rate: float, n: int) -> Verdict:
        c = Counts(sum(rng.random() < rate for _ in range(n)), n)
        s = Counts(sum(rng.random() < 0.0005 for _ in range(2000)), 2000)
        return judge_counted("error_ratio", c, s, rule).verdict

    healthy = [step(0.0005, rng.choice((60, 150, 600))) for _ in range(2000)]
    assert healthy.count(Verdict.FAIL) < 20, healthy.count(Verdict.FAIL)
    broken = [step(0.05, 600) for _ in range(200)]
    assert broken.count(Verdict.FAIL) >= 198


# Latency histograms ---------------------------------------------------------------------------


def test_a_quantile_is_read_from_the_buckets_as_prometheus_does() -> None:
    h = Histogram.of([(0.01, 50), (0.02, 90), (0.05, 100), (float("inf"), 100)])
    assert h.quantile(0.5) == pytest.approx(0.01)
    assert h.quantile(0.95) == pytest.approx(0.02 + 0.03 * 0.5)
    assert h.total == 100
    assert Histogram.of([]).quantile(0.95) is None
    assert merged({"a": h, "b": h}).total == 200


def test_a_quantile_over_its_threshold_fails_only_with_the_requests_to_show_it() -> None:
    rule = QuantileRule(0.95)
    slow = histogram([0.03] * 80 + [0.2] * 20)  # 20 % of 100 requests over 100 ms
    assert quantile_within(slow, rule, 100, 0.99).verdict is Verdict.FAIL
    # 10 of 100 is 10 % as counted, but could be 5 % or less: not shown with 99 % confidence
    assert quantile_within(histogram([0.03] * 90 + [0.2] * 10), rule, 100, 0.99).verdict is Verdict.PASS

    few = histogram([0.03] * 16 + [0.2] * 4)  # 20 % again, on 20 requests
    assert quantile_within(few, rule, 100, 0.99).verdict is Verdict.PASS
    assert quantile_within(histogram([]), rule, 100, 0.99).verdict is Verdict.NO_DATA


def test_a_fresh_canary_one_bucket_slower_is_not_a_regression() -> None:
    """The issue's example: a p95 of 8-9.6 ms against 4.9-6.5 ms under a 200 ms SLO."""
    rule = QuantileRule(0.95, noise_floor=5)
    canary = histogram(lognormal(25, 0.0055, seed=1))  # p95 about 9 ms
    stable = histogram(lognormal(500, 0.0034, seed=2))  # p95 about 5.6 ms
    verdict = quantile_against(canary, stable, rule, RelativeLimit(ratio=0.2), 0.99)

    assert verdict.verdict is Verdict.PASS
    assert "noise floor" in verdict.detail or "one bucket" in verdict.detail


def test_a_release_twice_as_slow_is_caught_on_a_few_dozen_requests() -> None:
    rule = QuantileRule(0.95, noise_floor=5)
    canary = histogram(lognormal(60, 0.036, seed=3))
    stable = histogram(lognormal(1200, 0.018, seed=4))
    verdict = quantile_against(canary, stable, rule, RelativeLimit(ratio=0.2), 0.99)

    assert verdict.verdict is Verdict.FAIL, verdict.detail
    assert "and it is real" in verdict.detail


def test_a_slowdown_of_one_endpoint_is_judged_on_that_endpoint() -> None:
    """One route in eight 1.5 times slower: diluted in all requests together, plain on its own."""
    rule = CanaryRule(
        "max", 200, RelativeLimit(ratio=0.2), confidence=0.99, quantile=QuantileRule(0.95, noise_floor=5)
    )
    stable = {
        "route=/api/customers": histogram(lognormal(300, 0.020, seed=5)),
        "route=/api/customers/{id}": histogram(lognormal(2100, 0.020, seed=6)),
    }
    canary = {
        "route=/api/customers": histogram(lognormal(150, 0.030, seed=7)),
        "route=/api/customers/{id}": histogram(lognormal(1050, 0.020, seed=8)),
    }
    verdict = judge_counted("latency_p95", canary, stable, rule)

    assert verdict.verdict is Verdict.FAIL, verdict.reason
    assert "route=/api/customers: p95" in verdict.reason
    healthy = judge_counted(
        "latency_p95",
        {k: histogram(lognormal(h.total, 0.020, seed=9)) for k, h in canary.items()},
        stable,
        rule,
    )
    assert healthy.verdict is Verdict.PASS, healthy.reason


# Series: counts since the start, windows that do not overlap -----------------------------------


def test_a_counted_series_judges_everything_since_it_began_and_fails_at_once_on_the_evidence() -> None:
    rule = SloRule("max", 0.001, count=5, failure_limit=3, counted=True, confidence=0.99)
    series = SloSeries(rule)
    for n in (600, 1200, 1800):  # one error, seen again in every growing sample
        sample = series.add(None, counted=Counts(1, n))
        assert sample.verdict is Verdict.PASS, sample.detail
    failing = series.add(None, counted=Counts(12, 2400))
    assert failing.conclusive
    result = series.result()
    assert result.verdict is Verdict.FAIL
    assert result.reason.startswith("sample 4: the counts show it: 12 of 2400 (0.5 %)")


def test_against_its_history_a_release_is_compared_route_by_route_as_a_canary_is() -> None:
    """Rolling and blue-green (issue 14, item 4): no stable release beside the new one, so each
    sample is compared with the previous release's counts over the same window a day before."""
    rule = SloRule(
        "max",
        200,
        RelativeLimit(ratio=0.25),
        counted=True,
        confidence=0.99,
        quantile=QuantileRule(0.95, noise_floor=5),
        noise_floor=5,
    )
    day_before = {
        "route=/api/customers": histogram(lognormal(300, 0.020, seed=15)),
        "route=/api/customers/{id}": histogram(lognormal(2100, 0.020, seed=16)),
    }
    against = Against(day_before, ("2.0.0-slow-endpoint", "1.0.0 1d ago"), 21.0)
    slow = {
        "route=/api/customers": histogram(lognormal(150, 0.030, seed=17)),
        "route=/api/customers/{id}": histogram(lognormal(1050, 0.020, seed=18)),
    }
    failing = SloSeries(rule).add(None, counted=slow, against=against)
    assert failing.conclusive, failing.detail
    assert failing.detail.startswith("against 1.0.0 1d ago: 2.0.0-slow-endpoint route=/api/customers: p95")
    assert merged(slow).quantile(0.95) * 1000 < 200, "under the absolute limit: only the history shows it"

    healthy = {k: histogram(lognormal(h.total, 0.020, seed=19)) for k, h in slow.items()}
    passing = SloSeries(rule).add(None, counted=healthy, against=against)
    assert passing.verdict is Verdict.PASS and "against 1.0.0 1d ago" in passing.detail, passing.detail

    nothing = SloSeries(rule).add(None, counted=healthy, against=Against(None, ("2.0.0", "1.0.0 1d ago")))
    assert nothing.verdict is Verdict.PASS, "judged on its threshold alone, and it says so"
    assert "not compared with 1.0.0 1d ago" in nothing.detail


def test_an_error_ratio_against_its_history_fails_only_when_significantly_worse() -> None:
    rule = SloRule("max", 0.01, RelativeLimit(points=0.001), counted=True, confidence=0.99)
    yesterday = Against(Counts(5, 10_000), ("2.0.0", "1.0.0 1d ago"), 0.0005)
    same = SloSeries(rule).add(None, counted=Counts(1, 2_000), against=yesterday)
    assert same.verdict is Verdict.PASS, same.detail
    worse = SloSeries(rule).add(None, counted=Counts(30, 4_000), against=yesterday)  # 0.75 %: under 1 %
    assert worse.conclusive and "2.0.0 30 of 4000 requests, 1.0.0 1d ago 5 of 10000" in worse.detail


def test_a_counted_limit_against_a_baseline_never_tightens_under_the_noise_floor() -> None:
    rule = SloRule("max", 200, RelativeLimit(ratio=0.25), counted=True, noise_floor=5)
    assert rule.limit_against(10)[0] == 15  # 25 % of 10 ms is 2.5 ms: the floor of 5 ms holds
    assert rule.limit_against(100)[0] == 125
    assert rule.limit_against(190)[0] == 200  # never past the absolute threshold
    assert rule.limit_against(None) == (200, "200")


def test_one_bad_window_sampled_five_times_is_one_failure_not_three_in_a_row() -> None:
    """10 s windows sampled every 2 s: the same error shows in five samples."""
    rule = SloRule("max", 0.001, count=10, failure_limit=3, window_s=10)
    series = SloSeries(rule)
    for i in range(5):
        series.add(0.002, elapsed_s=2.0 * i)
    assert not series.decided
    assert [s.counts_as_failure for s in series.samples] == [True, False, False, False, False]
    assert "shares its 10 s window with sample 1" in series.samples[1].detail
    for i in range(5, 10):
        series.add(0.0, elapsed_s=2.0 * i)
    assert series.result().verdict is Verdict.PASS


def test_failures_in_windows_that_do_not_overlap_are_in_a_row() -> None:
    rule = SloRule("max", 0.001, count=12, failure_limit=3, window_s=4)
    series = SloSeries(rule)
    for i in range(5):
        series.add(0.002, elapsed_s=2.0 * i)
    result = series.result()
    assert result.verdict is Verdict.FAIL
    assert result.reason == "3 consecutive failed samples (limit 3): samples 1-5"


# Error budgets -------------------------------------------------------------------------------


def test_two_errors_in_a_quiet_short_window_do_not_page_on_their_own() -> None:
    """2 of 100 requests is a burn of 20 against a 14.4 factor: as counted, not for sure."""
    pair = BurnWindow("60s", "5s", 14.4)
    quiet = evaluate(pair, Counts(30, 1200), Counts(2, 100), 0.999)
    assert quiet.verdict is Verdict.PASS, quiet.detail
    assert "(30 of 1200 and 2 of 100 requests failed; at least" in quiet.detail

    burning = evaluate(pair, Counts(120, 1200), Counts(10, 100), 0.999)
    assert burning.verdict is Verdict.FAIL, burning.detail
    assert evaluate(pair, Counts(0, 0), Counts(0, 0), 0.999).verdict is Verdict.NO_DATA
    assert evaluate(pair, 0.03, 0.02, 0.999).verdict is Verdict.FAIL  # ratios alone, as before


def test_a_quantile_of_too_few_requests_is_not_compared() -> None:
    """19 requests have no p99 but their slowest: a fresh canary's one slow request is not a regression."""
    rule = QuantileRule(0.99, noise_floor=10)
    canary = histogram([0.02] * 16 + [0.04] * 3)
    stable = histogram(lognormal(377, 0.015, seed=10))
    verdict = quantile_against(canary, stable, rule, RelativeLimit(ratio=0.2), 0.99)
    assert verdict.verdict is Verdict.PASS
    assert verdict.detail.endswith("too few to compare (a p99 needs 100 on each side), not compared")


# How many requests a step needs when its error ratio is judged on counts ----------------------


def test_a_step_judged_on_counts_needs_the_requests_that_show_the_rate_over_the_limit() -> None:
    """Seeing one error is not enough when the counts must show the ratio over the max."""
    counted = {
        "error_ratio": SloCheck(query="error_ratio", max=0.001, events="error_count", total="request_count")
    }
    needed = RequestsNeeded.from_settings(CanarySettings(detect_error_ratio=0.05), counted, 0.99)
    assert needed.count == 93  # shown at the last look, which has half of the 1 %: 99.5 %
    assert needed.why == (
        "93 requests: enough to show an error ratio of 0.05 over 0.001 with 95 % probability "
        "(metrics.canary.detect_error_ratio)"
    )
    # Without a bound's confidence (or a check judged on its ratio alone): one error seen, as before
    assert RequestsNeeded.from_settings(CanarySettings(detect_error_ratio=0.05), counted).count == 59
    derived = RequestsNeeded.from_settings(CanarySettings(), counted, 0.99)
    assert (derived.rate, derived.source) == (0.002, "twice metrics.slo.error_ratio max")
    assert derived.count == 25525
    with pytest.raises(ValueError, match=r"0\.001 can never be shown over slo\.error_ratio's max 0\.001"):
        RequestsNeeded.from_settings(CanarySettings(detect_error_ratio=0.001), counted, 0.99)


def test_the_requests_needed_are_enough_for_the_judgement_that_uses_them() -> None:
    """Simulated: a canary failing the detected rate, judged on that many requests, fails 95 % of the time."""
    n = requests_to_show(0.05, 0.02, 0.99, 0.95)
    rng = random.Random(93)
    caught = sum(
        ratio_within(Counts(sum(rng.random() < 0.05 for _ in range(n)), n), "max", 0.02, 0.99).verdict
        is Verdict.FAIL
        for _ in range(2000)
    )
    assert caught / 2000 >= 0.94, (n, caught)
    assert requests_to_show(0.05, 0.0, 0.99, 0.95) == requests_to_detect(
        0.05, 0.95
    )  # a limit of 0: one error


def test_a_confidence_one_short_of_certainty_never_reads_as_a_hundred_percent() -> None:
    assert percent(0.99) == "99 %"
    assert percent(1 - 0.01 / 3000) == "99.9997 %"  # 99 % held over 3000 looks
    assert percent(1.0) == "100 %"
