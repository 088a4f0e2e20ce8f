"""Test results a release must bring: acceptance (JUnit XML) and performance (k6's summary).

GA guide 1.1 "Acceptance score: 100 %" and "Performance tests passed". An empty or unreadable
file is an error, never a pass.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from releasegate.errors import ProbeError


@dataclass(frozen=True)
class JUnitResult:
    tests: int
    failed: int
    skipped: int
    failing: list[str] = field(default_factory=list)

    @property
    def pass_ratio(self) -> float | None:
        """Passed over run (skipped ones do not count as run); None when nothing ran."""
        ran = self.tests - self.skipped
        return (ran - self.failed) / ran if ran else None


def read_junit(path: Path) -> JUnitResult:
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise ProbeError(f"test results {path}", "file not found", "did the test job publish them?") from None
    except (OSError, ET.ParseError) as exc:
        raise ProbeError(f"test results {path}", f"not JUnit XML: {exc}") from None
    cases = list(root.iter("testcase"))
    failing = [
        f"{c.get('classname', '')}::{c.get('name', '?')}".lstrip(":")
        for c in cases
        if c.find("failure") is not None or c.find("error") is not None
    ]
    skipped = sum(1 for c in cases if c.find("skipped") is not None)
    return JUnitResult(len(cases), len(failing), skipped, failing[:5])


@dataclass(frozen=True)
class K6Result:
    thresholds: int
    failed: list[str]


def read_k6_summary(path: Path) -> K6Result:
    """``k6 run --summary-export`` (or handleSummary's JSON): each metric's thresholds with ``ok``
    (handleSummary) or ``true`` meaning crossed (summary-export's inverted booleans)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProbeError(
            f"k6 summary {path}", "file not found", "did the performance job publish it?"
        ) from None
    except (OSError, ValueError) as exc:
        raise ProbeError(f"k6 summary {path}", f"not readable JSON: {exc}") from None
    metrics: dict[str, Any] = data.get("metrics") if isinstance(data, dict) else None  # type: ignore[assignment]
    if not isinstance(metrics, dict):
        raise ProbeError(f"k6 summary {path}", "no `metrics` object: not a k6 summary")
    count, failed = 0, []
    for name, metric in metrics.items():
        for expression, verdict in ((metric or {}).get("thresholds") or {}).items():
            count += 1
            ok = (
                verdict.get("ok") if isinstance(verdict, dict) else not verdict
            )  # summary-export: true = crossed
            if not ok:
                failed.append(f"{name}: {expression}")
    return K6Result(count, failed)
