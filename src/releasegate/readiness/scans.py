"""Security scan reports: how many critical findings (Trivy JSON and SARIF).

GA guide 1.1 "Security scan passed (0 critical vulnerabilities)". A report that cannot be read,
or is not a scan report, is an error: never zero findings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from releasegate.errors import ProbeError

SARIF_CRITICAL = 9.0
"""GitHub's reading of a rule's ``security-severity``: 9.0 and above is critical."""


@dataclass(frozen=True)
class ScanResult:
    tool: str
    critical: int
    findings: int
    examples: list[str] = field(default_factory=list)
    """The first few critical findings, for the evidence."""


def read_scan(path: Path) -> ScanResult:
    """Trivy JSON (``Results[].Vulnerabilities[]``) or SARIF 2.1 (``runs[].results[]``)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProbeError(
            f"security scan report {path}", "file not found", "did the scan job publish it?"
        ) from None
    except (OSError, ValueError) as exc:
        raise ProbeError(f"security scan report {path}", f"not readable JSON: {exc}") from None
    if isinstance(data, dict) and "runs" in data:
        return sarif_critical(data)
    if isinstance(data, dict) and ("Results" in data or "SchemaVersion" in data):
        return trivy_critical(data)
    raise ProbeError(f"security scan report {path}", "neither Trivy JSON nor SARIF")


def trivy_critical(report: dict[str, Any]) -> ScanResult:
    findings, critical = 0, []
    for result in report.get("Results") or []:
        for vuln in result.get("Vulnerabilities") or []:
            findings += 1
            if str(vuln.get("Severity", "")).upper() == "CRITICAL":
                critical.append(f"{vuln.get('VulnerabilityID', '?')} in {vuln.get('PkgName', '?')}")
    return ScanResult("Trivy", len(critical), findings, critical[:5])


def sarif_critical(report: dict[str, Any]) -> ScanResult:
    """A result is critical when its rule's ``security-severity`` is 9.0 or more; results of
    rules without one count only at ``level: error`` with a severity in their own properties."""
    findings, critical, tools = 0, [], []
    for run in report.get("runs") or []:
        driver = (run.get("tool") or {}).get("driver") or {}
        tools.append(driver.get("name", "SARIF"))
        severity = {
            rule.get("id"): _number((rule.get("properties") or {}).get("security-severity"))
            for rule in driver.get("rules") or []
        }
        for result in run.get("results") or []:
            findings += 1
            own = _number((result.get("properties") or {}).get("security-severity"))
            score = own if own is not None else severity.get(result.get("ruleId"))
            if score is not None and score >= SARIF_CRITICAL:
                critical.append(f"{result.get('ruleId', '?')} (security-severity {score:g})")
    return ScanResult(" + ".join(sorted(set(tools))) or "SARIF", len(critical), findings, critical[:5])


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
