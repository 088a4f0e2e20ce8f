"""Judging a measured value against a threshold. Pure: no I/O, no clock.

A value that is missing or not a number where a number is needed is NO_DATA, never a pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import StrEnum
from typing import Any


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NO_DATA = "no data"
    INCONCLUSIVE = "inconclusive"
    INFO = "info"


_NUMERIC: dict[str, Callable[[float, float], bool]] = {
    "<": lambda v, t: v < t,
    "<=": lambda v, t: v <= t,
    ">": lambda v, t: v > t,
    ">=": lambda v, t: v >= t,
}

COMPARATORS = frozenset({*_NUMERIC, "==", "!=", "in", "present"})


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def judge(value: Any, comparator: str, threshold: Any) -> Verdict:
    """PASS or FAIL for ``value <comparator> threshold``; NO_DATA when there is nothing to judge."""
    if comparator not in COMPARATORS:
        raise ValueError(f"unknown comparator {comparator!r}")
    if is_missing(value) or (comparator == "present" and value == ""):
        return Verdict.NO_DATA
    if comparator == "present":
        return Verdict.PASS
    if comparator in _NUMERIC:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return Verdict.NO_DATA
        return Verdict.PASS if _NUMERIC[comparator](float(value), float(threshold)) else Verdict.FAIL
    if comparator == "==":
        ok = value == threshold
    elif comparator == "!=":
        ok = value != threshold
    else:
        ok = value in threshold
    return Verdict.PASS if ok else Verdict.FAIL
