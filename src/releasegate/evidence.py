"""One record per measurement: what was measured, against what, from where, and the verdict.

A check measures, records evidence, then asserts. The records go to every sink that asked for
them (the ledger, the HTML and JUnit reports), always through redaction.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from releasegate.analysis.thresholds import Verdict, judge
from releasegate.redaction import redact


class GateFailure(AssertionError):
    """A check's verdict was not a pass. The message is the evidence line a person reads."""


@dataclass(frozen=True)
class Evidence:
    check: str
    value: Any
    verdict: Verdict
    unit: str = ""
    comparator: str = ""
    threshold: Any = None
    source: str = ""
    detail: str = ""
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))
    gate: str = ""
    phase: str = ""
    data: dict[str, Any] | None = None
    """What else a reader needs to follow the measurement: an HTTP exchange, rows of a query."""

    def line(self) -> str:
        """``db latency: 3.1 ms <= 100 ms: pass [postgresql://…]`` in one line."""
        text = f"{self.check}: {self.shown_value()}"
        if self.comparator and not self._yes_no_or_presence():
            text += f" {self.expectation()}"
        text += f": {self.verdict}"
        if self.detail:
            text += f" - {self.detail}"
        if self.source:
            text += f" [{self.source}]"
        return text

    def shown_value(self) -> str:
        if isinstance(self.value, bool):
            return "yes" if self.value else "no"
        return format_value(self.value, self.unit)

    def expectation(self) -> str:
        """The threshold as a reader wants it: ``<= 100 ms``, ``yes``, ``present``."""
        if not self.comparator:
            return ""
        if self.comparator == "present":
            return "present"
        if self.comparator == "==" and isinstance(self.threshold, bool):
            return "yes" if self.threshold else "no"
        return f"{self.comparator} {format_value(self.threshold, self.unit)}"

    def _yes_no_or_presence(self) -> bool:
        return self.comparator == "present" or (self.comparator == "==" and isinstance(self.threshold, bool))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["verdict"] = str(self.verdict)
        data["value"] = _jsonable(self.value)
        data["threshold"] = _jsonable(self.threshold)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evidence:
        return cls(**{**data, "verdict": Verdict(data["verdict"])})


Sink = Callable[[Evidence], None]


class Checker:
    """What a gate calls to check something; the ``check`` fixture.

    Every method records evidence first and raises GateFailure after, so a failed gate always
    leaves its numbers behind.
    """

    def __init__(self, sink: Sink, gate: str = "", phase: str = "", *, production: bool = False) -> None:
        self._sink = sink
        self.gate = gate
        self.phase = phase
        self.production = production
        self.records: list[Evidence] = []

    def that(
        self,
        check: str,
        value: Any,
        comparator: str,
        threshold: Any,
        *,
        unit: str = "",
        source: str = "",
        detail: str = "",
        on_no_data: str = "fail",
        data: dict[str, Any] | None = None,
    ) -> Any:
        """Record ``value <comparator> threshold`` and fail the gate unless it holds."""
        verdict = judge(value, comparator, threshold)
        if verdict is Verdict.NO_DATA and on_no_data == "inconclusive":
            verdict = Verdict.INCONCLUSIVE
        evidence = self._record(check, value, verdict, unit, comparator, threshold, source, detail, data)
        if verdict is Verdict.PASS:
            return value
        if verdict is Verdict.INCONCLUSIVE and not self.production:
            return value
        raise GateFailure(evidence.line())

    def at_most(self, check: str, value: Any, limit: float, **kw: Any) -> Any:
        return self.that(check, value, "<=", limit, **kw)

    def at_least(self, check: str, value: Any, limit: float, **kw: Any) -> Any:
        return self.that(check, value, ">=", limit, **kw)

    def equals(self, check: str, value: Any, expected: Any, **kw: Any) -> Any:
        return self.that(check, value, "==", expected, **kw)

    def holds(self, check: str, condition: bool, **kw: Any) -> bool:
        """A yes/no fact that must be yes: ``rollout of 2.0.0 completed: no: fail - why``."""
        return self.that(check, bool(condition), "==", True, **kw)

    def present(self, check: str, value: Any, **kw: Any) -> Any:
        """A value that must exist (a release name, an LSN): missing or empty is no data."""
        return self.that(check, value, "present", None, **kw)

    def sample(
        self,
        check: str,
        value: Any,
        verdict: Verdict,
        *,
        unit: str = "",
        comparator: str = "",
        threshold: Any = None,
        source: str = "",
        detail: str = "",
        at: str = "",
    ) -> Evidence:
        """Record one sample of a series judged elsewhere (an SLO sampled 5 times): never raises;
        the series' verdict is asserted once, with ``decide``."""
        return self._record(check, value, verdict, unit, comparator, threshold, source, detail, at=at)

    def decide(self, check: str, verdict: Verdict, detail: str = "", *, source: str = "") -> None:
        """Record a series' verdict and fail the gate unless it passed (inconclusive passes
        only outside production)."""
        evidence = self._record(check, detail or str(verdict), verdict, "", "", None, source, "")
        if verdict is Verdict.PASS or (verdict is Verdict.INCONCLUSIVE and not self.production):
            return
        raise GateFailure(evidence.line())

    def judged(
        self,
        check: str,
        value: Any,
        ok: bool,
        *,
        comparator: str = "",
        threshold: Any = None,
        source: str = "",
        detail: str = "",
        data: dict[str, Any] | None = None,
    ) -> Any:
        """A value judged by a rule of its own (a health contract: these values, an HTTP 2xx and
        every check passing): recorded, then the gate fails unless ``ok``; no value is no data."""
        verdict = Verdict.NO_DATA if value is None else Verdict.PASS if ok else Verdict.FAIL
        evidence = self._record(check, value, verdict, "", comparator, threshold, source, detail, data)
        if verdict is not Verdict.PASS:
            raise GateFailure(evidence.line())
        return value

    def fail(self, check: str, problem: str, *, source: str = "") -> None:
        """Record that something could not be measured or did not happen, then fail."""
        evidence = self._record(check, None, Verdict.FAIL, "", "", None, source, problem)
        raise GateFailure(evidence.line())

    def record(self, check: str, value: Any, *, unit: str = "", source: str = "", detail: str = "") -> Any:
        """Record a fact that is not judged (a path, a checksum, a release name)."""
        self._record(check, value, Verdict.INFO, unit, "", None, source, detail)
        return value

    def _record(
        self,
        check: str,
        value: Any,
        verdict: Verdict,
        unit: str,
        comparator: str,
        threshold: Any,
        source: str,
        detail: str,
        data: dict[str, Any] | None = None,
        *,
        at: str = "",
    ) -> Evidence:
        evidence = Evidence(
            check=check,
            value=_redact_value(value),
            verdict=verdict,
            unit=unit,
            comparator=comparator,
            threshold=_redact_value(threshold),
            source=redact(source),
            detail=redact(detail),
            gate=self.gate,
            phase=self.phase,
            data=_redact_data(data),
            **({"at": at} if at else {}),
        )
        self.records.append(evidence)
        self._sink(evidence)
        return evidence


def _redact_data(data: dict[str, Any] | None) -> dict[str, Any] | None:
    """Through JSON and back, so every string inside is redacted, however deep."""
    if data is None:
        return None
    return json.loads(redact(json.dumps(data, default=str)))


def _redact_value(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value


def format_value(value: Any, unit: str = "") -> str:
    """``3.142 ms``, ``no data``: how a value reads in every report."""
    if value is None:
        return "no data"
    if isinstance(value, float):
        text = f"{value:.4g}" if abs(value) < 1e6 else f"{value:.0f}"
    else:
        text = str(value)
    return f"{text} {unit}" if unit else text
