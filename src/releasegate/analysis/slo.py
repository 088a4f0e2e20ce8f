"""Judging an SLO sampled N times every S seconds. Pure: the caller measures and waits.

One bad sample is noise; ``failure_limit`` bad samples in a row is a regression (the Summit
optimisation summary's "3 consecutive failures"). So a series fails as soon as that many
consecutive samples fail, and passes once ``count`` samples were taken without that
happening. A sample with no data counts as a failure unless the check says
``on_no_data = "inconclusive"``, in which case it neither fails nor passes: a series with no
passing sample at all is INCONCLUSIVE, never a pass. Every sample keeps its own verdict so the
evidence shows all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from releasegate.analysis.baseline import Direction, RelativeLimit, compare
from releasegate.analysis.thresholds import Verdict, judge

OnNoData = Literal["fail", "inconclusive"]


@dataclass(frozen=True)
class SloRule:
    """What one sample must satisfy, and how many samples decide the series."""

    direction: Direction
    threshold: float
    relative: RelativeLimit | None = None
    count: int = 1
    failure_limit: int = 1
    on_no_data: OnNoData = "fail"

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
    def from_check(cls, check: Any, *, count: int | None = None, failure_limit: int | None = None) -> SloRule:
        """From a ``config.SloCheck``; the observe phase overrides count and failure limit."""
        ratio, points = check.relative_ratio, check.relative_points
        relative = RelativeLimit(ratio=ratio) if ratio is not None else None
        if points is not None:
            relative = RelativeLimit(points=points)
        return cls(
            direction=check.direction,
            threshold=check.threshold,
            relative=relative,
            count=count if count is not None else check.count,
            failure_limit=failure_limit if failure_limit is not None else check.failure_limit,
            on_no_data=check.on_no_data,
        )


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
    value: float | None, rule: SloRule, baseline: float | None = None, *, index: int = 1, at: str = ""
) -> SampleVerdict:
    """One sample against the absolute threshold and, when a baseline is given, the relative limit.

    Without a baseline (None) only the absolute threshold is judged.
    """
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
        return SampleVerdict(
            index, value, Verdict.PASS, False, f"{rule.comparator} {rule.threshold:g}", baseline, at
        )
    relative = compare(value, baseline, rule.direction, rule.relative)
    if relative.verdict is Verdict.NO_DATA:
        detail = f"{rule.comparator} {rule.threshold:g}; no baseline to compare"
        return SampleVerdict(index, value, Verdict.PASS, False, detail, baseline, at)
    failed = relative.verdict is Verdict.FAIL
    return SampleVerdict(index, value, relative.verdict, failed, relative.detail, baseline, at)


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

    def add(self, value: float | None, baseline: float | None = None, at: str = "") -> SampleVerdict:
        if self.decided:
            raise ValueError(f"the series is already decided ({self._verdict}): {self._reason}")
        sample = judge_sample(value, self.rule, baseline, index=len(self.samples) + 1, at=at)
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
