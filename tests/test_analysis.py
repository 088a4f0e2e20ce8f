"""The pure analysis behind the SLO, canary and observe gates, on numbers checked by hand."""

from __future__ import annotations

import math

import pytest

from releasegate.analysis.baseline import RelativeLimit, compare, worsening
from releasegate.analysis.burn_rate import BurnWindow, burn_rate, evaluate, evaluate_all, windows_from
from releasegate.analysis.canary import (
    NOT_ENOUGH_DATA,
    CanaryRule,
    cliffs_delta,
    judge_canary,
    judge_metric,
    mann_whitney_worse,
)
from releasegate.analysis.detection import RequestsNeeded, detectable_rate, requests_to_detect
from releasegate.analysis.slo import SloRule, SloSeries, judge_sample, judge_series, schedule_offsets
from releasegate.analysis.thresholds import Verdict
from releasegate.config import CanarySettings, SloCheck

NAN = float("nan")

# -- baseline: how much worse than before ---------------------------------------------------


def test_latency_within_ten_percent_of_its_baseline_passes_and_eleven_fails() -> None:
    ten = compare(110.0, 100.0, "max", RelativeLimit(ratio=0.10))
    eleven = compare(111.0, 100.0, "max", RelativeLimit(ratio=0.10))

    assert ten.verdict is Verdict.PASS and ten.worse_by_ratio == pytest.approx(0.10)
    assert eleven.verdict is Verdict.FAIL and eleven.worse_by_ratio == pytest.approx(0.11)
    assert eleven.detail == "11.0% worse than the baseline 100 (limit 10%)"


def test_faster_than_the_baseline_is_better_not_worse() -> None:
    result = compare(90.0, 100.0, "max", RelativeLimit(ratio=0.10))

    assert result.verdict is Verdict.PASS
    assert result.worse_by_ratio == pytest.approx(-0.10)
    assert result.detail.startswith("10.0% better than")


def test_error_ratios_compare_in_points() -> None:
    limit = RelativeLimit(points=0.001)

    assert compare(0.0012, 0.0004, "max", limit).verdict is Verdict.PASS  # +0.0008
    failed = compare(0.0015, 0.0004, "max", limit)  # +0.0011
    assert failed.verdict is Verdict.FAIL
    assert failed.worse_by_points == pytest.approx(0.0011)


def test_a_lower_cache_hit_ratio_is_worse() -> None:
    limit = RelativeLimit(points=0.05)

    assert compare(0.87, 0.90, "min", limit).verdict is Verdict.PASS  # 0.03 worse
    assert compare(0.80, 0.90, "min", limit).verdict is Verdict.FAIL  # 0.10 worse
    assert worsening(0.80, 0.90, "min") == pytest.approx((0.1111, 0.10), rel=1e-3)


def test_a_zero_baseline_is_the_same_at_zero_and_infinitely_worse_above() -> None:
    limit = RelativeLimit(ratio=0.10)

    same = compare(0.0, 0.0, "max", limit)
    worse = compare(0.01, 0.0, "max", limit)

    assert same.verdict is Verdict.PASS and same.detail.startswith("same as")
    assert worse.verdict is Verdict.FAIL and math.isinf(worse.worse_by_ratio or 0)


@pytest.mark.parametrize(("value", "baseline"), [(None, 100.0), (NAN, 100.0), (100.0, None), (100.0, NAN)])
def test_nothing_to_compare_is_no_data(value: float | None, baseline: float | None) -> None:
    assert compare(value, baseline, "max", RelativeLimit(ratio=0.1)).verdict is Verdict.NO_DATA


def test_a_relative_limit_is_a_ratio_or_points() -> None:
    with pytest.raises(ValueError):
        RelativeLimit()
    with pytest.raises(ValueError):
        RelativeLimit(ratio=0.1, points=0.1)


# -- SLO series: N samples every S seconds, a limit of consecutive failures --------------------

P95 = SloRule("max", 200.0, count=5, failure_limit=3)


def test_three_failures_in_a_row_fail_the_series_at_once() -> None:
    result = judge_series([150, 250, 260, 270, 100], P95)

    assert result.verdict is Verdict.FAIL
    assert result.reason == "3 consecutive failed samples (limit 3): samples 2-4"
    assert [s.verdict for s in result.samples] == [Verdict.PASS, Verdict.FAIL, Verdict.FAIL, Verdict.FAIL]
    assert result.samples[1].detail == "250 is not <= 200"


def test_failures_that_never_reach_the_limit_in_a_row_pass_and_every_sample_is_kept() -> None:
    result = judge_series([150, 250, 260, 150, 270], P95)

    assert result.verdict is Verdict.PASS
    assert result.reason == "5 samples: 3 failed, never 3 in a row"
    assert [s.value for s in result.samples] == [150, 250, 260, 150, 270]
    assert [s.index for s in result.samples] == [1, 2, 3, 4, 5]


def test_no_data_counts_as_a_failure_unless_the_check_says_inconclusive() -> None:
    failing = judge_series([None, NAN, None], P95)
    assert failing.verdict is Verdict.FAIL
    assert failing.samples[0].verdict is Verdict.NO_DATA
    assert failing.samples[0].detail == "no data: counts as a failure"

    lenient = SloRule("max", 200.0, count=5, failure_limit=3, on_no_data="inconclusive")
    assert judge_series([None] * 5, lenient).verdict is Verdict.INCONCLUSIVE
    assert judge_series([None] * 5, lenient).reason == "no data in 5 sample(s)"
    mostly_empty = judge_series([None, 150, None, None, None], lenient)
    assert mostly_empty.verdict is Verdict.PASS
    assert mostly_empty.reason == "5 samples: 4 without data (not counted)"


def test_a_sample_without_data_does_not_break_a_run_of_failures_when_inconclusive() -> None:
    lenient = SloRule("max", 200.0, count=5, failure_limit=3, on_no_data="inconclusive")

    result = judge_series([250, None, 250, 250], lenient)

    assert result.verdict is Verdict.FAIL
    assert result.reason == "3 consecutive failed samples (limit 3): samples 1-4"


def test_an_undecided_series_says_how_far_it_got() -> None:
    result = judge_series([150, 150], P95)

    assert result.verdict is None and not result.decided
    assert result.reason == "2 of 5 samples taken"


def test_a_decided_series_takes_no_more_samples() -> None:
    series = SloSeries(SloRule("max", 200.0, count=1, failure_limit=1))
    series.add(300)

    assert series.result().verdict is Verdict.FAIL
    assert series.result().reason == "1 failed sample (limit 1): sample 1"
    with pytest.raises(ValueError, match="already decided"):
        series.add(100)


def test_a_sample_within_the_threshold_can_still_be_too_much_worse_than_its_baseline() -> None:
    rule = SloRule("max", 200.0, relative=RelativeLimit(ratio=0.10))

    worse = judge_sample(120.0, rule, baseline=100.0)
    alone = judge_sample(120.0, rule)

    assert worse.verdict is Verdict.FAIL and worse.counts_as_failure
    assert worse.detail == "20.0% worse than the baseline 100 (limit 10%)"
    assert alone.verdict is Verdict.PASS  # no baseline given: only the absolute threshold


def test_a_minimum_threshold_is_at_least() -> None:
    hits = SloRule("min", 0.85, count=2, failure_limit=1)

    assert judge_series([0.9, 0.86], hits).verdict is Verdict.PASS
    assert judge_series([0.9, 0.84], hits).verdict is Verdict.FAIL


def test_a_rule_from_the_environment_keeps_its_threshold_limit_and_counts() -> None:
    check = SloCheck(query="error_ratio", max=0.001, max_increase_points=0.001, count=6, failure_limit=3)

    rule = SloRule.from_check(check)
    watched = SloRule.from_check(check, count=9, failure_limit=2)

    assert rule == SloRule("max", 0.001, RelativeLimit(points=0.001), count=6, failure_limit=3)
    assert (watched.count, watched.failure_limit) == (9, 2)


def test_the_observe_schedule_samples_often_first_then_less() -> None:
    granter = [(300, 1800), (600, 3600), (1800, 14400)]

    offsets = schedule_offsets(granter)

    assert offsets[:6] == [300, 600, 900, 1200, 1500, 1800]
    assert offsets[6:9] == [2400, 3000, 3600]
    assert offsets[9:] == [5400, 7200, 9000, 10800, 12600, 14400]
    assert schedule_offsets([(2, 10), (5, 30)]) == [2, 4, 6, 8, 10, 15, 20, 25, 30]


# -- burn rate: the SRE workbook's multi-window alert ----------------------------------------

FAST = BurnWindow("1h", "5m", 14.4)


def test_burn_rate_is_the_error_ratio_over_the_budget() -> None:
    assert burn_rate(0.0144, 0.999) == pytest.approx(14.4)
    assert burn_rate(0.0, 0.999) == 0.0
    assert burn_rate(None, 0.999) is None
    assert burn_rate(NAN, 0.999) is None
    with pytest.raises(ValueError):
        burn_rate(0.01, 1.0)


def test_both_windows_above_the_factor_page() -> None:
    result = evaluate(FAST, 0.02, 0.02, 0.999)

    assert result.verdict is Verdict.FAIL
    assert result.long_burn == pytest.approx(20.0) and result.short_burn == pytest.approx(20.0)
    assert result.detail == "1h/5m: burn 20 and 20 > 14.4"


def test_a_burn_that_stopped_or_has_only_just_started_does_not_page() -> None:
    assert evaluate(FAST, 0.02, 0.001, 0.999).verdict is Verdict.PASS  # over: short window is calm
    assert evaluate(FAST, 0.005, 0.05, 0.999).verdict is Verdict.PASS  # a blip: long window is calm


def test_a_window_without_data_is_no_data() -> None:
    result = evaluate(FAST, None, 0.02, 0.999)

    assert result.verdict is Verdict.NO_DATA
    assert result.detail == "1h/5m: no error ratio over 1h"


def test_any_paging_pair_pages() -> None:
    windows = windows_from([("1h", "5m", 14.4), ("6h", "30m", 6.0)])
    ratios = {"1h": 0.02, "5m": 0.03, "6h": 0.004, "30m": 0.01}

    verdict, results = evaluate_all(windows, ratios, 0.999)

    assert verdict is Verdict.FAIL
    assert [r.verdict for r in results] == [Verdict.FAIL, Verdict.PASS]
    assert evaluate_all(windows, {**ratios, "1h": 0.001}, 0.999)[0] is Verdict.PASS
    assert evaluate_all(windows, {"1h": 0.001, "5m": 0.001}, 0.999)[0] is Verdict.NO_DATA


# -- canary: Kayenta-style comparison --------------------------------------------------------

LATENCY = CanaryRule("max", 200.0, RelativeLimit(ratio=0.2), min_samples=5, alpha=0.05, min_effect_size=0.3)


def test_cliffs_delta_by_hand() -> None:
    assert cliffs_delta([4, 5, 6], [1, 2, 3]) == 1.0
    assert cliffs_delta([1, 2, 3], [4, 5, 6]) == -1.0
    assert cliffs_delta([1, 2, 3], [1, 2, 3]) == 0.0
    # 2>1, 2<3, 4>1, 4>3: three greater, one less, four pairs
    assert cliffs_delta([2, 4], [1, 3]) == 0.5


def test_mann_whitney_one_sided_by_hand() -> None:
    # every canary sample above every stable one: 1 arrangement of C(10, 5) = 252
    assert mann_whitney_worse([6, 7, 8, 9, 10], [1, 2, 3, 4, 5], "max") == pytest.approx(1 / 252)
    assert mann_whitney_worse([1, 2, 3, 4, 5], [6, 7, 8, 9, 10], "max") == pytest.approx(1.0)
    assert mann_whitney_worse([1, 2, 3, 4, 5], [6, 7, 8, 9, 10], "min") == pytest.approx(1 / 252)
    assert mann_whitney_worse([0, 0, 0, 0, 0], [0, 0, 0, 0, 0], "max") == 1.0


def test_a_canary_60_percent_slower_without_doubt_fails() -> None:
    result = judge_metric("latency_p95", [40, 42, 44, 46, 48], [25, 26, 27, 28, 29], LATENCY)

    assert result.verdict is Verdict.FAIL
    assert (result.canary_median, result.stable_median) == (44, 27)
    assert result.p_value == pytest.approx(1 / 252)
    assert result.effect_size == 1.0
    assert result.reason.startswith(
        "canary median 44 63.0% worse than the baseline 27 (limit 20%), and it is real"
    )


def test_a_canary_within_the_relative_limit_passes() -> None:
    result = judge_metric("latency_p95", [30, 31, 32, 33, 34], [25, 26, 27, 28, 29], LATENCY)

    assert result.verdict is Verdict.PASS  # 32 vs 27: 18.5 % worse, within 20 %
    assert result.reason == "canary median 32 18.5% worse than the baseline 27 (limit 20%)"


def test_a_large_but_not_significant_difference_passes_saying_so() -> None:
    # medians 40 vs 30 (33 % worse), but the samples interleave: 13 of 25 pairs greater
    result = judge_metric("latency_p95", [10, 50, 12, 48, 40], [11, 49, 13, 47, 30], LATENCY)

    assert result.verdict is Verdict.PASS
    assert result.effect_size == pytest.approx(1 / 25)
    assert "but not significant" in result.reason


def test_a_significant_but_small_effect_passes_saying_so() -> None:
    rule = CanaryRule("max", None, RelativeLimit(ratio=0.2), min_samples=5, min_effect_size=0.99)
    # all of canary above stable except one tie: significant, delta (24 - 0)/25 = 0.96 < 0.99
    result = judge_metric("x", [30, 40, 41, 42, 43], [10, 11, 12, 13, 30], rule)

    assert result.verdict is Verdict.PASS
    assert result.effect_size == pytest.approx(24 / 25)
    assert "effect +0.96 below 0.99" in result.reason


def test_breaking_the_absolute_threshold_fails_whatever_stable_does() -> None:
    result = judge_metric("latency_p95", [250] * 5, [260] * 5, LATENCY)

    assert result.verdict is Verdict.FAIL
    assert result.reason == "canary median 250 is not <= 200"


def test_fewer_samples_than_the_minimum_give_no_verdict_not_even_a_failure() -> None:
    result = judge_metric("latency_p95", [900, 950, None, NAN], [25, 26, 27, 28, 29], LATENCY)

    assert result.verdict is Verdict.NO_DATA
    assert (
        result.reason == f"{NOT_ENOUGH_DATA}: canary 2, stable 5 sample(s) with data, 5 needed on each side"
    )
    assert judge_metric("x", [], [], LATENCY).verdict is Verdict.NO_DATA


def test_a_cache_hit_ratio_that_drops_is_worse() -> None:
    rule = CanaryRule("min", None, RelativeLimit(ratio=0.2), min_samples=5)

    result = judge_metric(
        "cache_hit_ratio", [0.70, 0.71, 0.72, 0.73, 0.74], [0.95, 0.96, 0.97, 0.98, 0.99], rule
    )

    assert result.verdict is Verdict.FAIL  # 0.72 vs 0.97: 25.8 % worse
    assert result.effect_size == 1.0


def test_error_ratios_compare_in_points_against_a_zero_stable() -> None:
    rule = CanaryRule("max", None, RelativeLimit(points=0.001), min_samples=5)

    assert judge_metric("error_ratio", [0.02] * 5, [0.0] * 5, rule).verdict is Verdict.FAIL
    clean = judge_metric("error_ratio", [0.0] * 5, [0.0] * 5, rule)
    assert clean.verdict is Verdict.PASS and "same as" in clean.reason


def test_the_canary_fails_if_any_metric_fails_and_waits_if_any_lacks_data() -> None:
    good = ([25, 26, 27, 28, 29], [25, 26, 27, 28, 29], LATENCY)
    bad = ([40, 42, 44, 46, 48], [25, 26, 27, 28, 29], LATENCY)
    short = ([25, 26], [25, 26, 27, 28, 29], LATENCY)

    assert judge_canary({"p95": good, "p99": good}).verdict is Verdict.PASS
    assert judge_canary({"p95": good, "p99": bad, "errors": short}).verdict is Verdict.FAIL
    waiting = judge_canary({"p95": good, "errors": short})
    assert waiting.verdict is Verdict.NO_DATA
    assert waiting.reason.startswith(f"errors: {NOT_ENOUGH_DATA}")
    assert judge_canary({}).verdict is Verdict.NO_DATA


def test_a_canary_rule_from_the_environment() -> None:
    canary = CanarySettings(min_samples=6, max_relative_degradation=0.2)
    latency = SloCheck(query="latency_p95", max=200, max_increase_ratio=0.1)
    errors = SloCheck(query="error_ratio", max=0.001, max_increase_points=0.001)

    # half of 1 - 0.99 spread over the step's 30 looks (900 s, every 30 s), half on the look
    # that would pass the step
    assert CanaryRule.from_settings(latency, canary) == CanaryRule(
        "max",
        200,
        RelativeLimit(ratio=0.2),
        min_samples=6,
        alpha=0.05,
        min_effect_size=0.3,
        confidence=1 - 0.005 / 30,
        final_confidence=0.995,
    )
    assert CanaryRule.from_settings(errors, canary).relative == RelativeLimit(points=0.001)


# -- canary: requests a step needs before it can pass ------------------------------------------


@pytest.mark.parametrize(
    ("rate", "confidence", "requests"),
    [(0.02, 0.95, 149), (0.001, 0.95, 2995), (0.05, 0.95, 59), (0.01, 0.95, 299), (0.02, 0.99, 228)],
)
def test_requests_to_detect_a_rate_by_hand(rate: float, confidence: float, requests: int) -> None:
    # ceil(ln(1 - c) / ln(1 - p)); 0.02 and 0.95: ln 0.05 / ln 0.98 = 148.3
    assert requests_to_detect(rate, confidence) == requests
    assert (1 - rate) ** requests <= 1 - confidence < (1 - rate) ** (requests - 1)


def test_what_a_number_of_requests_can_see() -> None:
    # the 5 % step: 62 requests see a 0.5 % error rate only about once in four runs
    missed = 0.995**62
    assert missed == pytest.approx(0.733, abs=0.001)
    assert detectable_rate(62, 0.95) == pytest.approx(0.0472, abs=0.0001)
    assert detectable_rate(149, 0.95) <= 0.02
    assert detectable_rate(0, 0.95) == 1.0


@pytest.mark.parametrize(("rate", "confidence"), [(0, 0.95), (1, 0.95), (0.02, 1), (0.02, 0)])
def test_a_rate_or_confidence_outside_zero_to_one_is_refused(rate: float, confidence: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        requests_to_detect(rate, confidence)


def test_the_requests_a_step_needs_come_from_the_error_check_a_detect_ratio_or_an_explicit_number() -> None:
    slo = {
        "error_ratio": SloCheck(query="error_ratio", max=0.02),
        "errors_any": SloCheck(query="error_ratio", max=0),
        "latency_p95": SloCheck(query="latency_p95", max=200),
    }

    derived = RequestsNeeded.from_settings(CanarySettings(), slo)
    assert (derived.count, derived.source) == (149, "metrics.slo.error_ratio max")
    assert derived.why == (
        "149 requests: enough to see an error ratio of 0.02 with 95 % confidence (metrics.slo.error_ratio max)"
    )
    assert RequestsNeeded.from_settings(CanarySettings(confidence=0.99), slo).count == 228
    assert RequestsNeeded.from_settings(CanarySettings(detect_error_ratio=0.05), slo).count == 59
    explicit = RequestsNeeded.from_settings(CanarySettings(min_requests=60), slo)
    assert (explicit.count, round(explicit.rate, 3)) == (60, 0.049)
    with pytest.raises(ValueError, match="error_check: 'errors' is not a"):
        RequestsNeeded.from_settings(CanarySettings(error_check="errors"), slo)
    with pytest.raises(ValueError, match="needs a max between 0 and 1"):
        RequestsNeeded.from_settings(CanarySettings(error_check="latency_p95"), slo)
    with pytest.raises(ValueError, match="needs a max between 0 and 1"):
        RequestsNeeded.from_settings(CanarySettings(error_check="errors_any"), slo)
