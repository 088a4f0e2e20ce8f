"""How many requests a canary step must see before its error ratio can pass. Pure.

A canary that fails a share ``p`` of its requests shows no error at all in ``n`` requests with
probability ``(1 - p) ** n``. A step that passes on fewer requests than
``n = ceil(ln(1 - c) / ln(1 - p))`` lets such a canary through more often than ``1 - c`` of the
time: whether it is caught then depends on luck (at 5 % of little traffic, 62 requests show a
0.5 % error rate about once in four runs). With p = 2 % and c = 95 %, n = 149.

When the error check is judged on its counts (``analysis.counts``), seeing one error is not
enough: the counts must show the ratio over the check's ``max`` with the bound's confidence. Then
``requests_to_show`` is the requests after which a canary failing ``p`` is failed by that bound
with probability ``c``: 93 for p = 5 % against a 0.1 % limit with 99 % bounds and c = 95 %. A
canary failing at the limit itself can never be shown over it, so the rate derived from the
check is twice its ``max``.

The judgement itself (is what was seen worse than stable) stays with ``analysis.canary``; this
only says when there is enough to judge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from releasegate.analysis.counts import final_look


def requests_to_detect(rate: float, confidence: float) -> int:
    """Requests after which a canary failing ``rate`` of them has shown at least one error with
    probability ``confidence``: ``ceil(ln(1 - confidence) / ln(1 - rate))``."""
    if not 0 < rate < 1:
        raise ValueError(f"an error ratio to detect must be between 0 and 1 (exclusive), not {rate:g}")
    if not 0 < confidence < 1:
        raise ValueError(f"a confidence must be between 0 and 1 (exclusive), not {confidence:g}")
    exact = math.log1p(-confidence) / math.log1p(-rate)
    # 1e-9: a float a hair above a whole number (148.0000000001) is that number, not the next
    return max(1, math.ceil(exact - 1e-9))


def detectable_rate(requests: float, confidence: float) -> float:
    """The smallest error ratio that ``requests`` requests show at least once with probability
    ``confidence``: what an explicit minimum of requests can see (1.0 with no requests)."""
    if not 0 < confidence < 1:
        raise ValueError(f"a confidence must be between 0 and 1 (exclusive), not {confidence:g}")
    if requests <= 0:
        return 1.0
    return 1 - (1 - confidence) ** (1 / requests)


@lru_cache(maxsize=64)
def requests_to_show(rate: float, threshold: float, bound_confidence: float, power: float) -> int:
    """Requests after which a canary failing ``rate`` of them has its one-sided Clopper-Pearson
    lower bound (at ``bound_confidence``) over ``threshold`` with probability ``power``.

    Raises ValueError when ``rate`` is not over ``threshold`` (it could never be shown), or when
    more than a million requests would be needed."""
    from scipy.stats import beta, binom

    if not threshold < rate < 1:
        raise ValueError(f"an error ratio of {rate:g} can never be shown over {threshold:g}")
    for value in (bound_confidence, power):
        if not 0 < value < 1:
            raise ValueError(f"a confidence must be between 0 and 1 (exclusive), not {value:g}")
    n, k = 1, 1
    while n <= 1_000_000:
        # the fewest errors in n requests whose lower bound is over the threshold: it only grows with n
        while k <= n and beta.ppf(1 - bound_confidence, k, n - k + 1) <= threshold:
            k += 1
        if k <= n and binom.sf(k - 1, n, rate) >= power:
            return n
        n += max(1, n // 200)
    raise ValueError(f"showing {rate:g} over {threshold:g} would take more than a million requests")


@dataclass(frozen=True)
class RequestsNeeded:
    """The requests a canary step must have served before it may pass, and why that many."""

    count: int
    rate: float
    """The error ratio ``count`` requests detect with ``confidence`` (the threshold it came from,
    or, for an explicit count, what that count can see)."""
    confidence: float
    source: str
    """Where the number comes from: ``metrics.slo.error_ratio max``, ``min_requests``, ..."""
    over: float | None = None
    """The limit the counts must show ``rate`` over (a check judged on counts), or None: seen once."""

    @property
    def why(self) -> str:
        """``149 requests: enough to see an error ratio of 0.02 with 95 % confidence (metrics.slo.error_ratio max)``"""
        if self.over is not None:
            return (
                f"{self.count} requests: enough to show an error ratio of {self.rate:.3g} over "
                f"{self.over:g} with {self.confidence * 100:g} % probability ({self.source})"
            )
        return (
            f"{self.count} requests: enough to see an error ratio of {self.rate:.3g} "
            f"with {self.confidence * 100:g} % confidence ({self.source})"
        )

    @classmethod
    def from_settings(cls, canary: Any, slo: Any, bound_confidence: float | None = None) -> RequestsNeeded:
        """From ``config.CanarySettings`` and the ``[metrics.slo]`` checks: ``min_requests`` when set,
        else derived from ``detect_error_ratio`` or the ``max`` of the ``error_check``. When the
        error check is judged on its counts (and ``bound_confidence``, metrics.confidence, is
        given), enough to show that rate over its ``max``; else enough to see one error.

        Raises ValueError, naming the key, when the number cannot be derived.
        """
        confidence = canary.confidence
        if canary.min_requests is not None:
            rate = detectable_rate(canary.min_requests, confidence)
            return cls(canary.min_requests, rate, confidence, "metrics.canary.min_requests, explicit")
        check = slo.get(canary.error_check)
        counted = (
            bound_confidence is not None
            and check is not None
            and check.events is not None
            and check.max is not None
            and 0 < check.max < 1
        )
        if canary.detect_error_ratio is not None:
            rate, source = canary.detect_error_ratio, "metrics.canary.detect_error_ratio"
            if counted and rate <= check.max:
                raise ValueError(
                    f"detect_error_ratio: {rate:g} can never be shown over slo.{canary.error_check}'s max "
                    f"{check.max:g}, which its counts are judged against: detect a larger ratio"
                )
        elif counted:
            rate, source = min(0.5, 2 * check.max), f"twice metrics.slo.{canary.error_check} max"
        else:
            check = slo.get(canary.error_check)
            if check is None:
                raise ValueError(
                    f"error_check: {canary.error_check!r} is not a [metrics.slo] check: name the check whose "
                    "max sets the requests each step needs, or set detect_error_ratio or min_requests"
                )
            if check.max is None or not 0 < check.max < 1:
                raise ValueError(
                    f"error_check: slo.{canary.error_check} needs a max between 0 and 1 (an error ratio) "
                    f"to derive the requests each step needs, not {check.max if check.max is not None else 'a min'}"
                    ": set detect_error_ratio or min_requests"
                )
            rate, source = check.max, f"metrics.slo.{canary.error_check} max"
        if counted:
            assert bound_confidence is not None
            # the bound of the look that would pass the step
            count = requests_to_show(rate, check.max, final_look(bound_confidence), confidence)
            return cls(count, rate, confidence, source, over=check.max)
        return cls(requests_to_detect(rate, confidence), rate, confidence, source)
