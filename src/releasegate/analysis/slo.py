"""Judging an SLO sampled N times every S seconds. Pure: the caller measures and waits.

One bad sample is noise; ``failure_limit`` bad samples in a row is a regression (the Summit
optimisation summary's "3 consecutive failures"). So a series fails as soon as that many
consecutive samples fail, and passes once ``count`` samples were taken without that
happening. A sample with no data counts as a failure unless the check says
``on_no_data = "inconclusive"``, in which case it neither fails nor passes: a series with no
passing sample at all is INCONCLUSIVE, never a pass. Every sample keeps its own verdict so the
evidence shows all of them.

Samples whose windows overlap are not independent: one error inside a 10 s window sampled every
2 s shows in five samples. So a failure counts towards "in a row" only when its window does
not overlap the last failure counted (``window_s``); a sample that shares a window with it
neither counts nor breaks the streak.

A check judged on counts (``counted``: a ratio's events and total, a latency's histogram) is
sampled over everything since the series began, and each sample is judged with its confidence
bound (``analysis.counts``, ``analysis.histogram``): a sample whose counts show the limit
broken fails the series at once, since the counts already are all the evidence there is; one
that does not passes that sample.

Where no stable release serves beside the new one (rolling, blue-green), a counted sample may
be compared ``against`` the previous release's own counts over the same window at the same
time of previous days: the canary's comparison (``analysis.canary.judge_counted``: Fisher on
the counts, each route of a histogram on its own), with the sample's confidence, instead of a
limit drawn from one number measured before the rollout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from releasegate.analysis.baseline import Direction, RelativeLimit, compare
from releasegate.analysis.canary import CanaryRule, judge_counted
from releasegate.analysis.counts import Counts, ratio_within
from releasegate.analysis.histogram import Histogram, QuantileRule, merged, quantile_within
from releasegate.analysis.thresholds import Verdict, judge

Counted = Counts | dict[str, Histogram] | None

OnNoData = Literal["fail", "inconclusive"]


@dataclass(frozen=True)
class Against:
    """What a counted sample is compared with: another release's counts over the same window
    (the previous release at the same time of previous days), and how each side is named."""

    counted: Counted
    sides: tuple[str, str]
    """("2.0.0", "1.0.0 1d ago")."""
    value: float | None = None
    """The other side's ratio or quantile, for the evidence."""


@dataclass(frozen=True)
class SloRule:
    """What one sample must satisfy, and how many samples decide the series."""

    direction: Direction
    threshold: float
    relative: RelativeLimit | None = None
    count: int = 1
    failure_limit: int = 1
    on_no_data: OnNoData = "fail"
    window_s: float = 0.0
    """How far back each sample looks: failures closer together than this share a window."""
    counted: bool = False
    """Judged on counts since the series began (``judge_sample``'s ``counted``), with confidence."""
    confidence: float = 0.99
    quantile: QuantileRule | None = None
    noise_floor: float = 0.0

    def __post_init__(self) -> None:
        if self.count < 1 or self.failure_limit < 1:
            raise ValueError("count and failure_limit are at least 1")
        if self.failure_limit > self.count:
            raise ValueError(
                f"failure_limit {self.failure_limit} can never be reached in {self.count} samples"
            )

    @property
    def comparator(self) -> str:
        return "<=" if self.direction == "max" else ">="

    @classmethod
    def from_check(
        cls,
        check: Any,
        *,
        count: int | None = None,
        failure_limit: int | None = None,
        window_s: float = 0.0,
        confidence: float = 0.99,
    ) -> SloRule:
        """From a ``config.SloCheck``; the observe phase overrides count and failure limit.
        ``window_s``: the window its samples look over (0: a gauge, whose samples never overlap)."""
        ratio, points = check.relative_ratio, check.relative_points
        relative = RelativeLimit(ratio=ratio) if ratio is not None else None
        if points is not None:
            relative = RelativeLimit(points=points)
        quantile = None
        if check.histogram is not None:
            quantile = QuantileRule(check.quantile, check.histogram_scale, check.noise_floor)
        return cls(
            direction=check.direction,
            threshold=check.threshold,
            relative=relative,
            count=count if count is not None else check.count,
            failure_limit=failure_limit if failure_limit is not None else check.failure_limit,
            on_no_data=check.on_no_data,
            window_s=0.0 if check.counted else window_s,
            counted=check.counted,
            confidence=confidence,
            quantile=quantile,
            noise_floor=check.noise_floor,
        )

    def limit_against(self, baseline: float | None) -> tuple[float, str]:
        """The effective limit: the threshold, or tighter from the baseline's relative limit
        (never tighter than the noise floor above the baseline), and how it reads."""
        if self.relative is None or baseline is None:
            return self.threshold, f"{self.threshold:g}"
        sign = 1 if self.direction == "max" else -1
        if self.relative.ratio is not None:
            moved = abs(baseline) * self.relative.ratio
            how = f"{self.relative.ratio:.0%}"
        else:
            assert self.relative.points is not None
            moved, how = self.relative.points, f"{self.relative.points:g}"
        if self.noise_floor > moved:
            moved, how = self.noise_floor, f"noise floor {self.noise_floor:g}"
        relative = baseline + sign * moved
        tighter = min if self.direction == "max" else max
        limit = tighter(self.threshold, relative)
        if limit == self.threshold:
            return limit, f"{self.threshold:g}"
        return limit, f"{limit:.4g} (the baseline {baseline:.4g}, {how})"


@dataclass(frozen=True)
class SampleVerdict:
    index: int
    """1-based position in the series."""
    value: float | None
    verdict: Verdict
    """PASS, FAIL or NO_DATA."""
    counts_as_failure: bool
    detail: str
    baseline: float | None = None
    at: str = ""
    conclusive: bool = False
    """A failure the counts show with the confidence: it fails the series at once."""
    elapsed_s: float | None = None
    """Seconds since the series began, when known: which samples share a window."""


@dataclass(frozen=True)
class SeriesVerdict:
    verdict: Verdict | None
    """PASS, FAIL or INCONCLUSIVE once decided; None while more samples are due."""
    samples: tuple[SampleVerdict, ...]
    reason: str

    @property
    def decided(self) -> bool:
        return self.verdict is not None


def judge_sample(
    value: float | None,
    rule: SloRule,
    baseline: float | None = None,
    *,
    index: int = 1,
    at: str = "",
    counted: Counted = None,
    against: Against | None = None,
) -> SampleVerdict:
    """One sample against the absolute threshold and, when a baseline is given, the relative limit.

    Without a baseline (None) only the absolute threshold is judged. A counted rule judges
    ``counted`` (the counts or histograms since the series began) instead of ``value``, and
    compares them ``against`` another release's counts when given (instead of ``baseline``).
    """
    if rule.counted:
        return _judge_counted(value, rule, baseline, index, at, counted, against)
    absolute = judge(value, rule.comparator, rule.threshold)
    if absolute is Verdict.NO_DATA:
        counted = rule.on_no_data == "fail"
        why = "no data: counts as a failure" if counted else "no data: not counted (inconclusive)"
        return SampleVerdict(index, None, Verdict.NO_DATA, counted, why, baseline, at)
    assert value is not None
    if absolute is Verdict.FAIL:
        detail = f"{value:.4g} is not {rule.comparator} {rule.threshold:g}"
        return SampleVerdict(index, value, Verdict.FAIL, True, detail, baseline, at)
    if rule.relative is None or baseline is None:
        unjudged = "" if rule.relative is None else "; no baseline to compare"
        detail = f"{rule.comparator} {rule.threshold:g}{unjudged}"
        return SampleVerdict(index, value, Verdict.PASS, False, detail, baseline, at)
    relative = compare(value, baseline, rule.direction, rule.relative)
    if relative.verdict is Verdict.NO_DATA:
        detail = f"{rule.comparator} {rule.threshold:g}; no baseline to compare"
        return SampleVerdict(index, value, Verdict.PASS, False, detail, baseline, at)
    failed = relative.verdict is Verdict.FAIL
    return SampleVerdict(index, value, relative.verdict, failed, relative.detail, baseline, at)


def _judge_counted(
    value: float | None,
    rule: SloRule,
    baseline: float | None,
    index: int,
    at: str,
    counted: Counted,
    against: Against | None = None,
) -> SampleVerdict:
    if against is not None:
        baseline = against.value
    limit, limit_text = rule.limit_against(None if against is not None else baseline)
    if rule.quantile is not None:
        histogram = merged(counted) if isinstance(counted, dict) and counted else None
        if histogram is None or not histogram.total:
            verdict, detail, value = Verdict.NO_DATA, "no requests in the histogram", None
        else:
            judged = quantile_within(histogram, rule.quantile, limit, rule.confidence)
            verdict, detail, value = judged.verdict, judged.detail, judged.value
    else:
        counts = counted if isinstance(counted, Counts) else None
        judged_ratio = ratio_within(counts, rule.direction, limit, rule.confidence)
        verdict, detail, value = judged_ratio.verdict, judged_ratio.detail, judged_ratio.value
    if verdict is Verdict.NO_DATA:
        counted_as = rule.on_no_data == "fail"
        why = f"{detail}: counts as a failure" if counted_as else f"{detail}: not counted (inconclusive)"
        return SampleVerdict(index, None, Verdict.NO_DATA, counted_as, why, baseline, at)
    detail = f"{detail} (limit {limit_text})"
    if verdict is Verdict.PASS and against is not None and rule.relative is not None:
        verdict, compared = _compared(rule, counted, against)
        detail = f"{compared}" if verdict is Verdict.FAIL else f"{detail}; {compared}"
    failed = verdict is Verdict.FAIL
    return SampleVerdict(index, value, verdict, failed, detail, baseline, at, conclusive=failed)


def _compared(rule: SloRule, counted: Counted, against: Against) -> tuple[Verdict, str]:
    """The sample's counts against the other release's, as a canary against stable: PASS or
    FAIL, and what was seen; without requests on a side, PASS on the threshold alone, saying so."""
    assert rule.relative is not None
    canary_rule = CanaryRule(
        rule.direction, None, rule.relative, confidence=rule.confidence, quantile=rule.quantile
    )
    result = judge_counted("", counted, against.counted, canary_rule, sides=against.sides)
    if result.verdict is Verdict.NO_DATA:
        return Verdict.PASS, f"not compared with {against.sides[1]}: {result.reason}"
    return result.verdict, f"against {against.sides[1]}: {result.reason}"


@dataclass
class SloSeries:
    """A series being sampled: ``add`` each sample until ``decided``."""

    rule: SloRule
    samples: list[SampleVerdict] = field(default_factory=list)
    _streak: list[int] = field(default_factory=list)
    _verdict: Verdict | None = None
    _reason: str = ""

    @property
    def decided(self) -> bool:
        return self._verdict is not None

    def add(
        self,
        value: float | None,
        baseline: float | None = None,
        at: str = "",
        *,
        counted: Counted = None,
        elapsed_s: float | None = None,
        against: Against | None = None,
    ) -> SampleVerdict:
        """Judge the next sample; ``elapsed_s`` (since the series began) tells which samples
        share a window, ``counted`` is what a counted rule judges (``against`` another release's)."""
        if self.decided:
            raise ValueError(f"the series is already decided ({self._verdict}): {self._reason}")
        sample = judge_sample(
            value, self.rule, baseline, index=len(self.samples) + 1, at=at, counted=counted, against=against
        )
        sample = replace(sample, elapsed_s=elapsed_s)
        if sample.conclusive:
            self.samples.append(sample)
            self._decide(Verdict.FAIL, f"sample {sample.index}: the counts show it: {sample.detail}")
            return sample
        if sample.counts_as_failure and self._shares_a_window(sample):
            first = self.samples[self._streak[-1] - 1].index
            sample = replace(
                sample,
                counts_as_failure=False,
                detail=f"{sample.detail}; shares its {self.rule.window_s:g} s window with sample {first}: not counted again",
            )
        self.samples.append(sample)
        if sample.counts_as_failure:
            self._streak.append(sample.index)
        elif sample.verdict is Verdict.PASS:
            self._streak = []
        limit = self.rule.failure_limit
        if len(self._streak) >= limit:
            first, last = self._streak[0], self._streak[-1]
            where = f"sample {first}" if first == last else f"samples {first}-{last}"
            in_a_row = "failed sample" if limit == 1 else "consecutive failed samples"
            self._decide(Verdict.FAIL, f"{len(self._streak)} {in_a_row} (limit {limit}): {where}")
        elif len(self.samples) >= self.rule.count:
            self._decide_at_the_end()
        return sample

    def _shares_a_window(self, sample: SampleVerdict) -> bool:
        """Whether ``sample`` looks over part of the window of the last failure counted."""
        if not self._streak or self.rule.window_s <= 0 or sample.elapsed_s is None:
            return False
        last = self.samples[self._streak[-1] - 1]
        if last.elapsed_s is None:
            return False
        return sample.elapsed_s - last.elapsed_s < self.rule.window_s - 1e-6

    def result(self) -> SeriesVerdict:
        reason = self._reason or f"{len(self.samples)} of {self.rule.count} samples taken"
        return SeriesVerdict(self._verdict, tuple(self.samples), reason)

    def _decide(self, verdict: Verdict, reason: str) -> None:
        self._verdict, self._reason = verdict, reason

    def _decide_at_the_end(self) -> None:
        n = len(self.samples)
        passed = sum(s.verdict is Verdict.PASS for s in self.samples)
        failed = sum(s.counts_as_failure for s in self.samples)
        no_data = sum(s.verdict is Verdict.NO_DATA for s in self.samples)
        if passed == 0:
            self._decide(Verdict.INCONCLUSIVE, f"no data in {n} sample(s)")
            return
        parts = [f"{n} samples"]
        if failed:
            parts.append(f"{failed} failed, never {self.rule.failure_limit} in a row")
        if no_data and not failed:
            parts.append(f"{no_data} without data (not counted)")
        if not failed and not no_data:
            parts.append("none failed")
        self._decide(Verdict.PASS, ": ".join([parts[0], ", ".join(parts[1:])]))


def judge_series(
    values: Sequence[float | None],
    rule: SloRule,
    baselines: Sequence[float | None] | None = None,
    ats: Sequence[str] | None = None,
) -> SeriesVerdict:
    """Feed ``values`` in order until the series is decided (later values are not judged)."""
    series = SloSeries(rule)
    for i, value in enumerate(values):
        if series.decided:
            break
        series.add(value, baselines[i] if baselines else None, ats[i] if ats else "")
    return series.result()


def schedule_offsets(schedule: Sequence[tuple[float, float]]) -> list[float]:
    """When to sample, in seconds since the watch began, from ``[(every_s, until_s), ...]``.

    ``[(300, 1800), (600, 3600)]`` (every 5 min for 30 min, then every 10 min to 1 h) gives
    300, 600, ..., 1800, 2400, 3000, 3600.
    """
    offsets: list[float] = []
    at = 0.0
    for every_s, until_s in schedule:
        if every_s <= 0:
            raise ValueError("every_s must be positive")
        while at + every_s <= until_s + 1e-9:
            at = round(at + every_s, 6)
            offsets.append(at)
    return offsets
