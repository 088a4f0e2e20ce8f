"""Ratios judged with their counts. Pure.

A ratio alone does not say how sure it is: one error in 100 requests is 1 %, ten times a 0.1 %
SLO, and it is also what a healthy service failing 0.05 % of its requests shows now and then.
So a ratio check is judged on (events, total):

- against its threshold, it fails only when the one-sided Clopper-Pearson bound at the
  confidence is past it ("at least 0.4 % of requests fail, with 99 % confidence"). Five errors
  in 20 requests fail at once; one in 100 does not;
- canary against stable, it fails only when the canary is significantly worse (a one-sided
  Fisher exact test on the two 2x2 counts, p below 1 - confidence) AND worse by more than the
  allowed margin.

How many requests a step needs before it may pass stays with ``analysis.detection``: these
judgements only say when the counts show a failure. No requests at all is NO_DATA, never a pass.

Counts judged again and again as they grow (a canary step every interval, a verify series every
sample) would fail on a chance excess at some look far more often than one look's 1 % does: one
error among a canary's first five requests is "at least 0.2 %" with 99 % confidence. So a
judgement looked at up to L times uses the confidence 1 - (1 - c) / L at each look
(``per_look``, Bonferroni over the looks): the chance of a false failure over all of them stays
under 1 - c. A canary step spends half of 1 - c on its looks while it runs (a big failure is
caught at once) and half on its last look, the one that would pass it (``final_look``): what
only the whole step's counts show is still caught, and the two halves together stay under 1 - c.
"""

from __future__ import annotations

from dataclasses import dataclass

from releasegate.analysis.baseline import Direction
from releasegate.analysis.thresholds import Verdict


@dataclass(frozen=True)
class Counts:
    """``events`` of ``total`` (errors of requests, hits of lookups). Prometheus's ``increase()``
    extrapolates, so both are rounded to whole events."""

    events: int
    total: int

    @classmethod
    def of(cls, events: float | None, total: float | None) -> Counts | None:
        """From two query answers; None when either is missing (no data)."""
        if events is None or total is None:
            return None
        n = max(0, round(total))
        return cls(min(max(0, round(events)), n), n)

    @property
    def ratio(self) -> float | None:
        return self.events / self.total if self.total else None

    def __add__(self, other: Counts) -> Counts:
        """Both together: the same ratio counted over two windows (yesterday's and last week's)."""
        return Counts(self.events + other.events, self.total + other.total)

    def __str__(self) -> str:
        return f"{self.events} of {self.total}"


def per_look(confidence: float, looks: int) -> float:
    """The confidence each of ``looks`` judgements needs for all of them to hold ``confidence``."""
    return 1 - (1 - confidence) / max(1, looks)


def final_look(confidence: float) -> float:
    """A canary step's last look: half of ``1 - confidence``; its looks while it runs share the other half."""
    return 1 - (1 - confidence) / 2


def bounds(counts: Counts, confidence: float) -> tuple[float, float]:
    """One-sided Clopper-Pearson bounds on the true ratio: it is at least the first, and at
    most the second, each with probability ``confidence``. (0, 1) without any events counted."""
    from scipy.stats import beta  # scipy is slow to import: only ratio checks need it

    k, n = counts.events, counts.total
    if not 0 < confidence < 1:
        raise ValueError(f"a confidence is between 0 and 1 (exclusive), not {confidence:g}")
    if n == 0:
        return 0.0, 1.0
    lower = 0.0 if k == 0 else float(beta.ppf(1 - confidence, k, n - k + 1))
    upper = 1.0 if k == n else float(beta.ppf(confidence, k + 1, n - k))
    return lower, upper


@dataclass(frozen=True)
class RatioVerdict:
    verdict: Verdict
    """FAIL when the counts show the limit broken with the confidence; PASS when they do not;
    NO_DATA without any count."""
    value: float | None
    counts: Counts | None
    detail: str
    bound: float | None = None
    """The one-sided bound that was compared (lower for ``max``, upper for ``min``)."""


def ratio_within(
    counts: Counts | None, direction: Direction, threshold: float, confidence: float
) -> RatioVerdict:
    """Is the true ratio past ``threshold``? FAIL only when the bound at ``confidence`` is."""
    if counts is None or counts.total == 0:
        return RatioVerdict(Verdict.NO_DATA, None, counts, "no requests counted")
    value = counts.ratio
    assert value is not None
    lower, upper = bounds(counts, confidence)
    bound = lower if direction == "max" else upper
    word, comparator = ("at least", ">") if direction == "max" else ("at most", "<")
    broken = bound > threshold if direction == "max" else bound < threshold
    seen = f"{counts} ({_pct(value)}); with {percent(confidence)} confidence {word} {_pct(bound)}"
    if broken:
        return RatioVerdict(Verdict.FAIL, value, counts, f"{seen}, {comparator} {_pct(threshold)}", bound)
    past = value > threshold if direction == "max" else value < threshold
    why = f"{seen}: as counted past {_pct(threshold)}, not shown to be" if past else seen
    return RatioVerdict(Verdict.PASS, value, counts, why, bound)


def worse_p_value(canary: Counts, stable: Counts, direction: Direction) -> float:
    """One-sided Fisher exact p-value of "the canary's ratio is worse than stable's" (1.0 when
    either side has no requests: nothing can be told)."""
    from scipy.stats import fisher_exact

    if canary.total == 0 or stable.total == 0:
        return 1.0
    table = [
        [canary.events, canary.total - canary.events],
        [stable.events, stable.total - stable.events],
    ]
    alternative = "greater" if direction == "max" else "less"
    return float(fisher_exact(table, alternative=alternative).pvalue)


def percent(confidence: float) -> str:
    """0.99 -> ``99 %``, 0.9995 -> ``99.95 %``: a confidence per look keeps its digits, and one
    short of certainty never reads as 100 % (0.9999967 -> ``99.99967 %``)."""
    for digits in range(4, 12):
        shown = f"{confidence * 100:.{digits}g}"
        if confidence >= 1 or float(shown) < 100:
            return f"{shown} %"
    return f"{confidence * 100} %"


def _pct(ratio: float) -> str:
    """0.00163 -> ``0.163 %``: ratios read as percentages in every line."""
    return f"{ratio * 100:.3g} %"
