"""The ``/health`` contract the runbooks share: ``{"status", "version", "checks"}``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from releasegate.probes.http import Exchange, Http


@dataclass(frozen=True)
class Health:
    status: str | None
    version: str | None
    checks: dict[str, Any] = field(default_factory=dict)
    http_status: int = 0
    source: str = ""
    elapsed_ms: float = 0.0
    body: object = None
    """The answer as it came, for the evidence record."""

    @property
    def failing_checks(self) -> dict[str, Any]:
        return {
            name: value
            for name, value in self.checks.items()
            if str(value).lower() not in ("ok", "up", "pass")
        }


def read_health(http: Http, path: str = "/health") -> Health:
    """GET the health endpoint; a body that is not the expected JSON gives status None (no data)."""
    exchange = http.get(path)
    return parse_health(exchange)


def parse_health(exchange: Exchange) -> Health:
    body = exchange.body if isinstance(exchange.body, dict) else {}
    checks = body.get("checks") if isinstance(body.get("checks"), dict) else {}
    status = body.get("status")
    version = body.get("version")
    return Health(
        status=str(status) if status is not None else None,
        version=str(version) if version is not None else None,
        checks=checks,
        http_status=exchange.status,
        source=exchange.source,
        elapsed_ms=exchange.elapsed_ms,
        body=exchange.body if exchange.body is not None else exchange.text[:500],
    )
