"""Error-budget burn rates, the SRE workbook's multi-window, multi-burn-rate alert. Pure.

With an objective of 99.9 % the error budget is 0.1 % of requests; an error ratio of 1.44 %
burns it 14.4 times faster than allowed, which spends a 30-day budget's 2 % in one hour.
Each window pair pages only when both its long window (is it significant?) and its short
window (is it still happening?) burn faster than the pair's factor.

Given the counts behind each window (errors and requests), a window burns too fast only when
its one-sided confidence bound does (``analysis.counts``): two errors in a quiet 5-minute
window are a high ratio on little evidence, not a page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from releasegate.analysis.counts import Counts, bounds, percent
from releasegate.analysis.thresholds import Verdict, is_missing

Measured = float | Counts | None
"""A window's error ratio, or the counts behind it."""


@dataclass(frozen=True)
class BurnWindow:
    long: str
    short: str
    factor: float
    """Page when both windows burn faster than this."""


@dataclass(frozen=True)
class BurnResult:
    window: BurnWindow
    long_burn: float | None
    short_burn: float | None
    verdict: Verdict
    """FAIL: page; PASS: within budget; NO_DATA: a window had no error ratio."""
    detail: str


def burn_rate(error_ratio: float | None, objective: float) -> float | None:
    """How many times faster than allowed the error budget burns; None without data."""
    if not 0 < objective < 1:
        raise ValueError(f"objective {objective} must be between 0 and 1 (e.g. 0.999)")
    if is_missing(error_ratio):
        return None
    assert error_ratio is not None
    return error_ratio / (1 - objective)


def _ratio(measured: Measured) -> float | None:
    if isinstance(measured, Counts):
        return measured.ratio
    return measured


def _lowest_burn(measured: Measured, objective: float, confidence: float) -> float | None:
    """The burn rate the window shows for sure: its ratio's lower bound's, given counts."""
    if isinstance(measured, Counts):
        if not measured.total:
            return None
        return bounds(measured, confidence)[0] / (1 - objective)
    return burn_rate(measured, objective)


def evaluate(
    window: BurnWindow, long: Measured, short: Measured, objective: float, confidence: float = 0.99
) -> BurnResult:
    """One window pair: FAIL (page) when both the long and the short window exceed the factor
    (given counts: when both windows' lower bounds at ``confidence`` do)."""
    long_burn, short_burn = burn_rate(_ratio(long), objective), burn_rate(_ratio(short), objective)
    name = f"{window.long}/{window.short}"
    if long_burn is None or short_burn is None:
        missing = " and ".join(
            w for w, b in ((window.long, long_burn), (window.short, short_burn)) if b is None
        )
        return BurnResult(
            window, long_burn, short_burn, Verdict.NO_DATA, f"{name}: no error ratio over {missing}"
        )
    sure = [_lowest_burn(m, objective, confidence) for m in (long, short)]
    paging = all(b is not None and b > window.factor for b in sure)
    relation = ">" if paging else "not both >"
    detail = f"{name}: burn {long_burn:.3g} and {short_burn:.3g}"
    if isinstance(long, Counts) and isinstance(short, Counts):
        detail += (
            f" ({long} and {short} requests failed; at least {sure[0]:.3g} and {sure[1]:.3g} "
            f"with {percent(confidence)} confidence)"
        )
    detail += f" {relation} {window.factor:g}"
    return BurnResult(window, long_burn, short_burn, Verdict.FAIL if paging else Verdict.PASS, detail)


def evaluate_all(
    windows: Sequence[BurnWindow], ratios: Mapping[str, Measured], objective: float, confidence: float = 0.99
) -> tuple[Verdict, list[BurnResult]]:
    """Every window pair, given the error ratio (or its counts) over each window (keyed ``"1h"``...).

    FAIL when any pair pages; otherwise NO_DATA when any pair lacked data; otherwise PASS.
    """
    results = [evaluate(w, ratios.get(w.long), ratios.get(w.short), objective, confidence) for w in windows]
    verdicts = {r.verdict for r in results}
    if Verdict.FAIL in verdicts:
        return Verdict.FAIL, results
    if Verdict.NO_DATA in verdicts:
        return Verdict.NO_DATA, results
    return Verdict.PASS, results


def windows_from(pairs: Sequence[tuple[str, str, float]]) -> list[BurnWindow]:
    """``[["1h", "5m", 14.4], ...]`` as configured, as BurnWindows."""
    return [BurnWindow(long, short, float(factor)) for long, short, factor in pairs]
