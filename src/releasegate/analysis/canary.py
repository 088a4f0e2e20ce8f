"""Canary against stable, Kayenta-style: is the new release worse, and is that real? Pure.

Each metric is sampled on both sides every interval. The canary fails a metric when

- its median breaks the metric's absolute threshold, or
- its median is worse than stable's by more than the relative limit (20 %, or points for
  ratios that are often zero) AND the difference is significant: a one-sided Mann-Whitney U
  test ("canary worse") below ``alpha`` AND an effect size (Cliff's delta) of at least
  ``min_effect_size``. A difference that is large but not significant, or significant but
  tiny, is noise on a few samples or a change nobody would notice: it passes, saying so.

Before ``min_samples`` samples on each side there is no verdict at all: "not enough data
yet", which is never a pass (NO_DATA).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from releasegate.analysis.baseline import Comparison, Direction, RelativeLimit, compare
from releasegate.analysis.thresholds import Verdict, is_missing, judge

NOT_ENOUGH_DATA = "not enough data yet"


@dataclass(frozen=True)
class CanaryRule:
    direction: Direction
    threshold: float | None
    """The absolute limit (``max`` or ``min`` per direction); None: compare only."""
    relative: RelativeLimit
    min_samples: int = 5
    alpha: float = 0.05
    min_effect_size: float = 0.3

    def __post_init__(self) -> None:
        if self.min_samples < 2:
            raise ValueError("a comparison needs at least 2 samples on each side")

    @property
    def comparator(self) -> str:
        return "<=" if self.direction == "max" else ">="

    @classmethod
    def from_settings(cls, check: Any, canary: Any) -> CanaryRule:
        """From a ``config.SloCheck`` and ``config.CanarySettings``: the check's threshold; its
        limit in points when it has one (error ratios), else the canary's relative degradation."""
        points = check.relative_points
        if points is not None:
            relative = RelativeLimit(points=points)
        else:
            relative = RelativeLimit(ratio=canary.max_relative_degradation)
        return cls(
            direction=check.direction,
            threshold=check.threshold,
            relative=relative,
            min_samples=canary.min_samples,
            alpha=canary.mann_whitney.alpha,
            min_effect_size=canary.mann_whitney.min_effect_size,
        )


@dataclass(frozen=True)
class MetricVerdict:
    name: str
    verdict: Verdict
    """PASS, FAIL, or NO_DATA ("not enough data yet")."""
    reason: str
    canary_samples: int
    stable_samples: int
    canary_median: float | None = None
    stable_median: float | None = None
    p_value: float | None = None
    effect_size: float | None = None
    """Cliff's delta oriented so that positive means the canary is worse (-1 .. 1)."""
    comparison: Comparison | None = None


@dataclass(frozen=True)
class CanaryVerdict:
    verdict: Verdict
    """FAIL if any metric failed; else NO_DATA if any lacked samples; else PASS."""
    metrics: tuple[MetricVerdict, ...]
    note: str = ""
    """Why the verdict differs from the metrics' own (too few requests to judge)."""

    @property
    def reason(self) -> str:
        if self.note:
            return self.note
        interesting = [m for m in self.metrics if m.verdict is self.verdict] or list(self.metrics)
        return "; ".join(f"{m.name}: {m.reason}" for m in interesting)


def cliffs_delta(a: Sequence[float], b: Sequence[float]) -> float:
    """P(a > b) - P(a < b) over all pairs: 1 when every a exceeds every b, 0 when alike."""
    if not a or not b:
        raise ValueError("Cliff's delta needs samples on both sides")
    greater = sum(1 for x in a for y in b if x > y)
    less = sum(1 for x in a for y in b if x < y)
    return (greater - less) / (len(a) * len(b))


def mann_whitney_worse(canary: Sequence[float], stable: Sequence[float], direction: Direction) -> float:
    """One-sided p-value of "the canary is worse than stable" (1.0 when it cannot be told)."""
    from scipy.stats import mannwhitneyu  # scipy is slow to import; only canary analysis needs it

    alternative = "greater" if direction == "max" else "less"
    p = float(mannwhitneyu(canary, stable, alternative=alternative).pvalue)
    return 1.0 if math.isnan(p) else p


def judge_metric(
    name: str,
    canary: Sequence[float | None],
    stable: Sequence[float | None],
    rule: CanaryRule,
    totals: tuple[float | None, float | None] | None = None,
) -> MetricVerdict:
    """One metric's per-interval samples, canary against stable (missing samples are dropped).

    ``totals`` (canary, stable) measured over the whole step, when given, replace the medians for
    the absolute and relative limits: a canary at 5 % may see ten requests per interval, so a 2 %
    error rate shows in the step's total long before it shows in a typical interval. The
    Mann-Whitney test always uses the per-interval samples.
    """
    c = [float(v) for v in canary if not is_missing(v)]
    s = [float(v) for v in stable if not is_missing(v)]
    if len(c) < rule.min_samples or len(s) < rule.min_samples:
        reason = (
            f"{NOT_ENOUGH_DATA}: canary {len(c)}, stable {len(s)} sample(s) with data, "
            f"{rule.min_samples} needed on each side"
        )
        return MetricVerdict(name, Verdict.NO_DATA, reason, len(c), len(s))
    c_med, s_med = statistics.median(c), statistics.median(s)
    if totals is not None and not is_missing(totals[0]) and not is_missing(totals[1]):
        c_med, s_med = float(totals[0]), float(totals[1])  # type: ignore[arg-type]
    what = "over the step" if totals is not None and not is_missing(totals[0]) else "median"
    p_value = mann_whitney_worse(c, s, rule.direction)
    delta = cliffs_delta(c, s) * (1 if rule.direction == "max" else -1)
    comparison = compare(c_med, s_med, rule.direction, rule.relative)
    stats = f"p={p_value:.3g}, effect {delta:+.2f}"

    def verdict(v: Verdict, reason: str) -> MetricVerdict:
        return MetricVerdict(name, v, reason, len(c), len(s), c_med, s_med, p_value, delta, comparison)

    if rule.threshold is not None and judge(c_med, rule.comparator, rule.threshold) is Verdict.FAIL:
        return verdict(Verdict.FAIL, f"canary {what} {c_med:.4g} is not {rule.comparator} {rule.threshold:g}")
    if comparison.verdict is Verdict.PASS:
        return verdict(Verdict.PASS, f"canary {what} {c_med:.4g} {comparison.detail}")
    significant = p_value < rule.alpha
    large = delta >= rule.min_effect_size
    if significant and large:
        return verdict(
            Verdict.FAIL, f"canary {what} {c_med:.4g} {comparison.detail}, and it is real ({stats})"
        )
    why = (
        f"not significant (p {p_value:.3g} >= {rule.alpha:g})"
        if not significant
        else f"effect {delta:+.2f} below {rule.min_effect_size:g}"
    )
    return verdict(Verdict.PASS, f"canary {what} {c_med:.4g} {comparison.detail}, but {why}")


def judge_canary(
    metrics: Mapping[str, tuple[Sequence[float | None], Sequence[float | None], CanaryRule]],
    totals: Mapping[str, tuple[float | None, float | None]] | None = None,
) -> CanaryVerdict:
    """Every metric: ``{name: (canary samples, stable samples, rule)}``, with totals over the step."""
    results = tuple(
        judge_metric(name, c, s, rule, (totals or {}).get(name)) for name, (c, s, rule) in metrics.items()
    )
    verdicts = {m.verdict for m in results}
    if not results:
        return CanaryVerdict(Verdict.NO_DATA, results)
    if Verdict.FAIL in verdicts:
        return CanaryVerdict(Verdict.FAIL, results)
    if Verdict.NO_DATA in verdicts:
        return CanaryVerdict(Verdict.NO_DATA, results)
    return CanaryVerdict(Verdict.PASS, results)
