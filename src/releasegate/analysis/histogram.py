"""Latency judged on its histogram: the bucket counts, not an interpolated quantile alone. Pure.

A quantile read from a histogram is only as fine as its buckets (Prometheus interpolates inside
one) and only as sure as the requests behind it. So:

- against a threshold, a quantile ``q`` fails only when the share of requests above the first
  bucket bound at or past the threshold is, with the confidence, more than ``1 - q``: "at least
  6.1 % of 1200 requests took longer than 250 ms: the p95 is over 200 ms";
- canary against stable (the same window), with at least ``requests_for(q)`` requests on each
  side (a p99 of 19 requests is their slowest one: not compared), a difference is a regression only when it is past
  the relative limit AND past the environment's noise floor AND the two quantiles sit in
  different buckets AND the canary has significantly more requests above the top of stable's
  quantile bucket than stable has (one-sided Fisher exact test). A p95 of 9 ms against 5 ms
  under a 200 ms SLO is one bucket on a freshly started process, not a regression.

The buckets may come in groups (one histogram per endpoint, say): each group is compared on its
own, so a slowdown on one endpoint only is not diluted by the others, and the threshold is
judged on all of them together.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from releasegate.analysis.baseline import Direction, RelativeLimit, compare
from releasegate.analysis.counts import Counts, bounds, percent, worse_p_value
from releasegate.analysis.thresholds import Verdict


@dataclass(frozen=True)
class Histogram:
    """Cumulative counts by upper bound (Prometheus's ``le``), ascending, ending at +Inf."""

    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]

    @classmethod
    def of(cls, buckets: Iterable[tuple[float, float]]) -> Histogram:
        """From (le, cumulative count) pairs in any order; a missing +Inf bucket is the largest count."""
        pairs = sorted((float(le), max(0.0, float(c))) for le, c in buckets)
        if not pairs:
            return cls((math.inf,), (0.0,))
        if not math.isinf(pairs[-1][0]):
            pairs.append((math.inf, pairs[-1][1]))
        running, monotone = 0.0, []
        for le, count in pairs:  # increase() can make a bucket dip a hair below the one before
            running = max(running, count)
            monotone.append((le, running))
        return cls(tuple(le for le, _ in monotone), tuple(c for _, c in monotone))

    @property
    def total(self) -> int:
        return round(self.cumulative[-1])

    def quantile(self, q: float) -> float | None:
        """Prometheus's ``histogram_quantile``: linear inside the bucket, the largest finite bound
        when the quantile falls in +Inf; None without observations."""
        total = self.cumulative[-1]
        if total <= 0:
            return None
        rank = q * total
        index = next(i for i, c in enumerate(self.cumulative) if c >= rank)
        if math.isinf(self.bounds[index]):
            finite = [b for b in self.bounds if not math.isinf(b)]
            return finite[-1] if finite else None
        low = self.bounds[index - 1] if index else 0.0
        below = self.cumulative[index - 1] if index else 0.0
        inside = self.cumulative[index] - below
        if inside <= 0:
            return self.bounds[index]
        return low + (self.bounds[index] - low) * (rank - below) / inside

    def bucket(self, value: float) -> int:
        """The index of the bucket ``value`` falls in (its upper bound is at or above it)."""
        return next(i for i, b in enumerate(self.bounds) if value <= b + 1e-12)

    def above(self, bound: float) -> Counts:
        """Observations above the bucket bound ``bound``, of all."""
        index = self.bucket(bound)
        return Counts.of(self.cumulative[-1] - self.cumulative[index], self.cumulative[-1]) or Counts(0, 0)


def merged(groups: Mapping[str, Histogram]) -> Histogram:
    """Every group's observations together (the same buckets: one histogram metric)."""
    counts: dict[float, float] = {}
    for histogram in groups.values():
        for le, c in zip(histogram.bounds, histogram.cumulative, strict=True):
            counts[le] = counts.get(le, 0.0) + c
    return Histogram.of(counts.items())


Sides = tuple[str, str]
"""How a comparison names its two sides in what it says: ("canary", "stable")."""


@dataclass(frozen=True)
class QuantileRule:
    quantile: float
    scale: float = 1000.0
    """From the buckets' unit to the check's (seconds to milliseconds)."""
    noise_floor: float = 0.0
    """In the check's unit: a difference smaller than this is never a regression."""


@dataclass(frozen=True)
class QuantileVerdict:
    verdict: Verdict
    value: float | None
    """The quantile in the check's unit (None without observations)."""
    requests: int
    detail: str


def quantile_within(
    histogram: Histogram, rule: QuantileRule, threshold: float, confidence: float
) -> QuantileVerdict:
    """Is the true quantile over ``threshold``? FAIL only when the requests above the first
    bucket bound at or past it are, with ``confidence``, more than ``1 - q`` of all."""
    n = histogram.total
    value = histogram.quantile(rule.quantile)
    if value is None or n == 0:
        return QuantileVerdict(Verdict.NO_DATA, None, 0, "no requests in the histogram")
    value *= rule.scale
    name = _name(rule.quantile)
    seen = f"{name} {value:.4g} over {n} requests"
    finite = [b for b in histogram.bounds if not math.isinf(b) and b * rule.scale >= threshold - 1e-9]
    if not finite:
        return QuantileVerdict(
            Verdict.PASS, value, n, f"{seen}; no bucket bound at or past {threshold:g} to tell more"
        )
    bound = finite[0]
    above = histogram.above(bound)
    lower, _upper = bounds(above, confidence)
    share = f"{above} requests ({above.events / n:.1%}) took longer than {bound * rule.scale:g}"
    if lower > 1 - rule.quantile:
        return QuantileVerdict(
            Verdict.FAIL,
            value,
            n,
            f"{seen}: {share}, at least {lower:.1%} with {percent(confidence)} confidence: the {name} is over {threshold:g}",
        )
    return QuantileVerdict(Verdict.PASS, value, n, f"{seen}; {share}")


def quantile_against(
    canary: Histogram,
    stable: Histogram,
    rule: QuantileRule,
    relative: RelativeLimit,
    confidence: float,
    direction: Direction = "max",
    sides: Sides = ("canary", "stable"),
) -> QuantileVerdict:
    """The canary's quantile against stable's over the same window (see the module docstring);
    ``sides`` names the two in the detail (the new release against its history, say)."""
    name = _name(rule.quantile)
    new, old = sides
    c, s = canary.quantile(rule.quantile), stable.quantile(rule.quantile)
    if c is None or s is None:
        which = new if c is None else old
        return QuantileVerdict(Verdict.NO_DATA, None, canary.total, f"no {which} requests in the histogram")
    cv, sv = c * rule.scale, s * rule.scale
    needed = requests_for(rule.quantile)
    if canary.total < needed or stable.total < needed:
        return QuantileVerdict(
            Verdict.PASS,
            cv,
            canary.total,
            f"{name} {cv:.4g} on {canary.total} {new} and {stable.total} {old} requests: too few to "
            f"compare (a {name} needs {needed} on each side), not compared",
        )
    comparison = compare(cv, sv, direction, relative)
    seen = f"{name} {cv:.4g} ({canary.total} requests) {comparison.detail}"

    def ok(why: str) -> QuantileVerdict:
        return QuantileVerdict(Verdict.PASS, cv, canary.total, f"{seen}{why}")

    if comparison.verdict is Verdict.PASS:
        return ok("")
    points = comparison.worse_by_points or 0.0
    if points <= rule.noise_floor:
        return ok(f", within the noise floor of {rule.noise_floor:g}")
    if canary.bucket(c) == stable.bucket(s):
        top = stable.bounds[stable.bucket(s)] * rule.scale
        return ok(f", within one bucket (up to {top:g})")
    top = stable.bounds[stable.bucket(s)]
    c_above, s_above = canary.above(top), stable.above(top)
    p = worse_p_value(c_above, s_above, "max")
    alpha = 1 - confidence
    counts = f"{c_above} {new} and {s_above} {old} requests took longer than {top * rule.scale:g}; p={p:.3g}"
    if p < alpha:
        return QuantileVerdict(Verdict.FAIL, cv, canary.total, f"{seen}, and it is real ({counts})")
    return ok(f", but not significant ({counts} >= {alpha:.3g})")


def groups_to_wait_for(
    canary: Mapping[str, Histogram],
    stable: Mapping[str, Histogram],
    q: float,
    judged_s: float,
    left_s: float,
) -> list[str]:
    """The groups (routes) with too few requests on a side to compare a quantile ``q`` yet, that
    will have them within ``left_s`` at the pace of the ``judged_s`` so far: worth waiting for,
    so that a step does not pass before the one slow endpoint was ever compared. A group too
    rare to reach it in time is not waited for (it is "not compared" in the verdict)."""
    needed = requests_for(q)
    if judged_s <= 0:
        return []
    waiting = []
    for group in sorted(set(canary) | set(stable)):
        if not group:
            continue
        sides = {"canary": canary.get(group), "stable": stable.get(group)}
        counts = {side: (h.total if h else 0) for side, h in sides.items()}
        short = {side: n for side, n in counts.items() if n < needed}
        if not short:
            continue
        if all(n * (judged_s + left_s) / judged_s >= needed for n in short.values()):
            have = ", ".join(f"{n} of {needed} {side}" for side, n in short.items())
            waiting.append(f"{group}: {have} requests")
    return waiting


def requests_for(q: float) -> int:
    """The requests below which a quantile ``q`` is only the slowest of them (a p99 of 19
    requests is their maximum): ceil(1 / (1 - q)), 20 for a p95, 100 for a p99."""
    return math.ceil(1 / (1 - q) - 1e-9)


def _name(q: float) -> str:
    """0.95 -> ``p95``, 0.999 -> ``p99.9``."""
    return f"p{q * 100:g}"
