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

A check judged on counts (an error ratio's events and total, a latency's histogram) is judged
instead on both sides' counts over the step (``judge_counted``): against its threshold with a
confidence bound, against stable with a Fisher exact test, each group of a histogram (each
route) on its own; see ``analysis.counts`` and ``analysis.histogram``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from releasegate.analysis.baseline import Comparison, Direction, RelativeLimit, compare
from releasegate.analysis.counts import Counts, final_look, per_look, ratio_within, worse_p_value
from releasegate.analysis.histogram import (
    Histogram,
    QuantileRule,
    Sides,
    groups_to_wait_for,
    merged,
    quantile_against,
    quantile_within,
    requests_for,
)
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
    confidence: float = 0.99
    """For checks judged on counts: the bound's confidence, and 1 - the p-value against stable,
    at each look while the step runs."""
    final_confidence: float | None = None
    """The same at the step's last look (the one that would pass it); None: ``confidence``."""
    quantile: QuantileRule | None = None
    """Set for a latency judged on its histogram."""

    def __post_init__(self) -> None:
        if self.min_samples < 2:
            raise ValueError("a comparison needs at least 2 samples on each side")

    @property
    def comparator(self) -> str:
        return "<=" if self.direction == "max" else ">="

    @classmethod
    def from_settings(cls, check: Any, canary: Any, confidence: float = 0.99) -> CanaryRule:
        """From a ``config.SloCheck`` and ``config.CanarySettings``: the check's threshold; its
        limit in points when it has one (error ratios), else the canary's relative degradation.
        ``confidence`` (metrics.confidence) holds over every look a step may take at its counts."""
        points = check.relative_points
        if points is not None:
            relative = RelativeLimit(points=points)
        else:
            relative = RelativeLimit(ratio=canary.max_relative_degradation)
        quantile = None
        if check.histogram is not None:
            quantile = QuantileRule(check.quantile, check.histogram_scale, check.noise_floor)
        return cls(
            direction=check.direction,
            threshold=check.threshold,
            relative=relative,
            min_samples=canary.min_samples,
            alpha=canary.mann_whitney.alpha,
            min_effect_size=canary.mann_whitney.min_effect_size,
            confidence=per_look(final_look(confidence), canary.looks()),  # half over every look
            final_confidence=final_look(confidence),  # the other half on the last
            quantile=quantile,
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
    canary_requests: int | None = None
    """For a check judged on counts: the requests behind the canary's value (and stable's)."""
    stable_requests: int | None = None


Counted = Counts | Mapping[str, Histogram] | None
"""What a side counted over the step: a ratio's counts, or a histogram per group (route)."""


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


def judge_counted(
    name: str,
    canary: Counted,
    stable: Counted,
    rule: CanaryRule,
    *,
    final: bool = False,
    sides: Sides = ("canary", "stable"),
) -> MetricVerdict:
    """A check judged on what each side counted over the step: an error ratio's counts, or a
    latency's histograms (each group on its own against stable, all together against the
    threshold). A failure needs the confidence (``final``: the last look's); without canary
    requests it is no data yet. ``sides`` names the two sides in the reasons."""
    if final and rule.final_confidence is not None:
        rule = replace(rule, confidence=rule.final_confidence)
    if rule.quantile is not None:
        return _judge_histograms(name, _groups(canary), _groups(stable), rule, sides)
    new, old = sides
    c = canary if isinstance(canary, Counts) else None
    s = stable if isinstance(stable, Counts) else None
    c_n, s_n = (c.total if c else 0), (s.total if s else 0)
    if c is None or s is None or not c.total or not s.total:
        why = f"{NOT_ENOUGH_DATA}: {new} {c_n}, {old} {s_n} request(s) counted"
        return MetricVerdict(name, Verdict.NO_DATA, why, 0, 0, canary_requests=c_n, stable_requests=s_n)
    absolute = (
        ratio_within(c, rule.direction, rule.threshold, rule.confidence)
        if rule.threshold is not None
        else None
    )
    comparison = compare(c.ratio, s.ratio, rule.direction, rule.relative)

    def verdict(v: Verdict, reason: str, p: float | None = None) -> MetricVerdict:
        return MetricVerdict(name, v, reason, 1, 1, c.ratio, s.ratio, p, None, comparison, c.total, s.total)

    if absolute is not None and absolute.verdict is Verdict.FAIL:
        return verdict(Verdict.FAIL, f"{new} {absolute.detail}")
    seen = f"{new} {c} requests, {old} {s}: {comparison.detail}"
    if comparison.verdict is Verdict.PASS:
        return verdict(Verdict.PASS, seen)
    p = worse_p_value(c, s, rule.direction)
    alpha = 1 - rule.confidence
    if p < alpha:
        return verdict(Verdict.FAIL, f"{seen}, and it is real (Fisher p={p:.3g} < {alpha:.3g})", p)
    return verdict(Verdict.PASS, f"{seen}, but not significant (Fisher p={p:.3g} >= {alpha:.3g})", p)


def groups_still_to_compare(
    canary: Counted, stable: Counted, rule: CanaryRule, judged_s: float, left_s: float
) -> list[str]:
    """A latency check's groups (routes) a step should wait for before it passes: too few requests
    to compare yet, enough within ``left_s`` at the pace so far (see ``groups_to_wait_for``)."""
    if rule.quantile is None:
        return []
    return groups_to_wait_for(_groups(canary), _groups(stable), rule.quantile.quantile, judged_s, left_s)


def _groups(side: Counted) -> dict[str, Histogram]:
    return dict(side) if isinstance(side, Mapping) else {}


def _judge_histograms(
    name: str,
    canary: dict[str, Histogram],
    stable: dict[str, Histogram],
    rule: CanaryRule,
    sides: Sides,
) -> MetricVerdict:
    quantile = rule.quantile
    assert quantile is not None
    new, old = sides
    c_all, s_all = merged(canary), merged(stable)
    if not c_all.total or not s_all.total:
        why = f"{NOT_ENOUGH_DATA}: {new} {c_all.total}, {old} {s_all.total} request(s) in the histogram"
        return MetricVerdict(
            name, Verdict.NO_DATA, why, 0, 0, canary_requests=c_all.total, stable_requests=s_all.total
        )
    c_value, s_value = c_all.quantile(quantile.quantile), s_all.quantile(quantile.quantile)
    scale = quantile.scale

    def verdict(v: Verdict, reason: str) -> MetricVerdict:
        return MetricVerdict(
            name,
            v,
            reason,
            1,
            1,
            None if c_value is None else c_value * scale,
            None if s_value is None else s_value * scale,
            canary_requests=c_all.total,
            stable_requests=s_all.total,
        )

    if rule.threshold is not None:
        absolute = quantile_within(c_all, quantile, rule.threshold, rule.confidence)
        if absolute.verdict is Verdict.FAIL:
            return verdict(Verdict.FAIL, f"{new} {absolute.detail}")
    # Every group and all of them together: Bonferroni keeps the chance of a false alarm at 1 - confidence.
    pairs = {"all": (c_all, s_all)} | {g: (canary[g], stable[g]) for g in canary if g and g in stable}
    confidence = 1 - (1 - rule.confidence) / len(pairs)
    results = {
        group: quantile_against(c, s, quantile, rule.relative, confidence, rule.direction, sides)
        for group, (c, s) in pairs.items()
        if c.total and s.total
    }
    failed = [f"{group}: {r.detail}" for group, r in results.items() if r.verdict is Verdict.FAIL]
    if failed:
        return verdict(Verdict.FAIL, f"{new} " + "; ".join(failed))
    overall = results["all"].detail
    needed = requests_for(quantile.quantile)
    few = sorted(g for g, (c, s) in pairs.items() if g != "all" and min(c.total, s.total) < needed)
    compared = len(pairs) - 1 - len(few)
    more = f" ({compared} group(s) compared on their own, none worse)" if compared else ""
    if few:
        more += f" (too few requests to compare on their own: {', '.join(few)})"
    return verdict(Verdict.PASS, f"{new} {overall}{more}")


def judge_canary(
    metrics: Mapping[str, tuple[Sequence[float | None], Sequence[float | None], CanaryRule]],
    totals: Mapping[str, tuple[float | None, float | None]] | None = None,
    counted: Mapping[str, tuple[Counted, Counted]] | None = None,
    *,
    final: bool = False,
) -> CanaryVerdict:
    """Every metric: ``{name: (canary samples, stable samples, rule)}``, with totals over the step;
    a check in ``counted`` (canary's and stable's counts over the step) is judged on those, at
    the last look's confidence when ``final``."""
    counted = counted or {}
    results = tuple(
        judge_counted(name, *counted[name], rule, final=final)
        if name in counted
        else judge_metric(name, c, s, rule, (totals or {}).get(name))
        for name, (c, s, rule) in metrics.items()
    )
    verdicts = {m.verdict for m in results}
    if not results:
        return CanaryVerdict(Verdict.NO_DATA, results)
    if Verdict.FAIL in verdicts:
        return CanaryVerdict(Verdict.FAIL, results)
    if Verdict.NO_DATA in verdicts:
        return CanaryVerdict(Verdict.NO_DATA, results)
    return CanaryVerdict(Verdict.PASS, results)
