"""How much worse a value is than its baseline, and whether that is within the limit. Pure.

Latencies compare as a ratio ("at most 10 % slower"); ratios that are often zero, such as an
error ratio, compare in points ("at most 0.1 points more errors"), since any increase over a
zero baseline is an infinite ratio. Missing values are NO_DATA, never a pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from releasegate.analysis.thresholds import Verdict, is_missing

Direction = Literal["max", "min"]
"""``max``: higher is worse (latency, errors); ``min``: lower is worse (cache hit ratio)."""


@dataclass(frozen=True)
class RelativeLimit:
    """How much worse than the baseline is allowed: a fraction of it, or in the value's units."""

    ratio: float | None = None
    points: float | None = None

    def __post_init__(self) -> None:
        if (self.ratio is None) == (self.points is None):
            raise ValueError("a relative limit is a ratio or points: exactly one of them")

    def describe(self, unit: str = "") -> str:
        if self.ratio is not None:
            return f"at most {self.ratio:.0%} worse than the baseline"
        return f"at most {self.points:g}{' ' + unit if unit else ''} worse than the baseline"


@dataclass(frozen=True)
class Comparison:
    verdict: Verdict
    value: float | None
    baseline: float | None
    worse_by_ratio: float | None
    """How much worse as a fraction of the baseline (0.25 = 25 % worse; negative = better)."""
    worse_by_points: float | None
    """How much worse in the value's own units (negative = better)."""
    detail: str


def worsening(value: float, baseline: float, direction: Direction) -> tuple[float, float]:
    """(by ratio, by points): how much worse ``value`` is than ``baseline``.

    A zero baseline gives a ratio of 0 when the value is also 0, and infinity when it is worse.
    """
    points = value - baseline if direction == "max" else baseline - value
    if baseline == 0:
        ratio = 0.0 if points == 0 else math.copysign(math.inf, points)
    else:
        ratio = points / abs(baseline)
    return ratio, points


def compare(
    value: float | None, baseline: float | None, direction: Direction, limit: RelativeLimit
) -> Comparison:
    """PASS when ``value`` is no worse than ``baseline`` by more than ``limit``."""
    if is_missing(value) or is_missing(baseline):
        which = "value" if is_missing(value) else "baseline"
        return Comparison(Verdict.NO_DATA, _num(value), _num(baseline), None, None, f"no {which} to compare")
    assert value is not None and baseline is not None
    ratio, points = worsening(float(value), float(baseline), direction)
    if limit.ratio is not None:
        ok = ratio <= limit.ratio
        limit_text = f"limit {limit.ratio:.0%}"
    else:
        assert limit.points is not None
        ok = points <= limit.points + 1e-12  # 0.1 + 0.2 - 0.2 is not quite 0.1
        limit_text = f"limit {limit.points:g}"
    detail = (
        f"{_change_text(ratio, points, limit.ratio is not None)} the baseline {baseline:.4g} ({limit_text})"
    )
    return Comparison(
        Verdict.PASS if ok else Verdict.FAIL, float(value), float(baseline), ratio, points, detail
    )


def _change_text(ratio: float, points: float, as_ratio: bool) -> str:
    """``12.5% worse than``, ``0.002 better than``, ``same as``."""
    if points == 0 or (as_ratio and abs(ratio) < 0.0005):  # what would show as 0.0 %
        return "same as"
    word = "worse" if points > 0 else "better"
    if not as_ratio:
        return f"{abs(points):.4g} {word} than"
    if math.isinf(ratio):
        return f"{word} than (from 0)"
    return f"{abs(ratio):.1%} {word} than"


def _num(value: float | None) -> float | None:
    return None if is_missing(value) else value
