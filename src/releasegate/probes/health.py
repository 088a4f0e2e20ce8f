"""A service's health endpoint, read by the contract its environment gives (``[verify.health]``):
where the status is and which values mean healthy, where the version is (a field, a header, or
nowhere), and the map of named checks. The runbooks' ``{"status", "version", "checks"}`` is the
default, not an assumption."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from releasegate.config import HealthContract
from releasegate.probes.http import Exchange, Http

_MISSING = object()
_LATENCY = re.compile(r"^\s*[<>≤≥~]?=?\s*(\d+(?:\.\d+)?)\s*(us|µs|ms|s)?\s*$", re.IGNORECASE)
_MS_PER = {"us": 0.001, "µs": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass(frozen=True)
class Health:
    status: str | None
    """The status as the answer gives it ("healthy", "UP", "True"); ``HTTP 200`` for a contract
    without a status field; None when the field is missing."""
    healthy: bool
    version: str | None
    """The version the answer names; None when it names none (or the contract reads none)."""
    checks: dict[str, Any] = field(default_factory=dict)
    failing_checks: dict[str, Any] = field(default_factory=dict)
    http_status: int = 0
    source: str = ""
    elapsed_ms: float = 0.0
    body: object = None
    """The answer as it came, for the evidence record."""


def read_health(http: Http, path: str = "/health", contract: HealthContract | None = None) -> Health:
    """GET the health endpoint; a body without the contract's fields is unhealthy (no data)."""
    return parse_health(http.get(path), contract or HealthContract())


def parse_health(exchange: Exchange, contract: HealthContract) -> Health:
    body = exchange.body
    ok_http = 200 <= exchange.status < 300
    if contract.status_field:
        value = dig(body, contract.status_field, _MISSING)
        status = None if value is _MISSING or value is None else _text(value)
        healthy = ok_http and value is not _MISSING and _member(value, contract.healthy)
    else:
        status, healthy = f"HTTP {exchange.status}", ok_http
    if contract.version_header:
        version: str | None = exchange.headers.get(contract.version_header.lower())
    elif contract.version_field:
        found = dig(body, contract.version_field, _MISSING)
        version = None if found is _MISSING or found is None else str(found)
    else:
        version = None
    checks = dig(body, contract.checks_field) if contract.checks_field else {}
    checks = checks if isinstance(checks, dict) else {}
    failing = {name: value for name, value in checks.items() if not _check_passes(value, contract)}
    return Health(
        status=status,
        healthy=healthy and not failing,
        version=version,
        checks=checks,
        failing_checks=failing,
        http_status=exchange.status,
        source=exchange.source,
        elapsed_ms=exchange.elapsed_ms,
        body=exchange.body if exchange.body is not None else exchange.text[:500],
    )


def dig(body: Any, dotted: str, missing: Any = None) -> Any:
    """``build.version`` of a JSON answer; ``missing`` when any step is not there."""
    node = body
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return missing
        node = node[part]
    return node


def latency_ms(value: Any) -> float | None:
    """A latency as a health endpoint writes it: ``4.2`` (ms), ``"<5ms"``, ``"4 ms"``, ``"0.004s"``;
    None when it is not one (no data, never zero)."""
    if isinstance(value, bool) or value is None or value is _MISSING:
        return None
    if isinstance(value, int | float):
        return float(value)
    match = _LATENCY.match(str(value))
    if match is None:
        return None
    return float(match.group(1)) * _MS_PER[(match.group(2) or "ms").lower()]


def _check_passes(value: Any, contract: HealthContract) -> bool:
    if isinstance(value, dict):  # Spring: {"db": {"status": "UP", ...}}
        inner = dig(value, contract.status_field or "status", _MISSING)
        return inner is not _MISSING and _member(inner, contract.check_ok)
    return _member(value, contract.check_ok)


def _member(value: Any, allowed: list[Any]) -> bool:
    """Booleans match booleans only (True is not 1); text matches text without case ("UP", "up")."""
    for candidate in allowed:
        if isinstance(candidate, bool) or isinstance(value, bool):
            if candidate is value:
                return True
        elif str(value).lower() == str(candidate).lower():
            return True
    return False


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
