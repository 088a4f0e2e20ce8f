"""How many requests a canary step must see before its error ratio can pass. Pure.

A canary that fails a share ``p`` of its requests shows no error at all in ``n`` requests with
probability ``(1 - p) ** n``. A step that passes on fewer requests than
``n = ceil(ln(1 - c) / ln(1 - p))`` lets such a canary through more often than ``1 - c`` of the
time: whether it is caught then depends on luck (at 5 % of little traffic, 62 requests show a
0.5 % error rate about once in four runs). With p = 2 % and c = 95 %, n = 149.

The judgement itself (is what was seen worse than stable) stays with ``analysis.canary``; this
only says when there is enough to judge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


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

    @property
    def why(self) -> str:
        """``149 requests: enough to see an error ratio of 0.02 with 95 % confidence (metrics.slo.error_ratio max)``"""
        return (
            f"{self.count} requests: enough to see an error ratio of {self.rate:.3g} "
            f"with {self.confidence * 100:g} % confidence ({self.source})"
        )

    @classmethod
    def from_settings(cls, canary: Any, slo: Any) -> RequestsNeeded:
        """From ``config.CanarySettings`` and the ``[metrics.slo]`` checks: ``min_requests`` when set,
        else derived from ``detect_error_ratio`` or the ``max`` of the ``error_check``.

        Raises ValueError, naming the key, when the number cannot be derived.
        """
        confidence = canary.confidence
        if canary.min_requests is not None:
            rate = detectable_rate(canary.min_requests, confidence)
            return cls(canary.min_requests, rate, confidence, "metrics.canary.min_requests, explicit")
        if canary.detect_error_ratio is not None:
            rate, source = canary.detect_error_ratio, "metrics.canary.detect_error_ratio"
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
        return cls(requests_to_detect(rate, confidence), rate, confidence, source)
