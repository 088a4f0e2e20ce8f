"""Release Manager deployment guide, "Health Check Verification": ``/health`` answers the
expected response and ``/metrics`` exposes the critical metrics. It makes no data and needs
nothing of the new release, so the rollback's verification runs it too."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

from releasegate.journeys.base import Journeyer, exchange_data, journey
from releasegate.journeys.exposition import exposes, metric_names

OK_VALUES = ("ok", "up", "pass")

HEALTH_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Release Manager /health (deployment guide, Health Check Verification)",
    "type": "object",
    "required": ["status", "version", "timestamp", "checks"],
    "properties": {
        "status": {"type": "string", "enum": ["healthy", "degraded", "unhealthy"]},
        "version": {"type": "string", "minLength": 1},
        "timestamp": {
            "type": "string",
            "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$",
        },
        "checks": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
"""The guide's expected response: ``{"status": "healthy", "version": "v2024.01.15", "timestamp":
"2024-01-15T14:30:00Z", "checks": {"database": "ok", ...}}``; which checks, the environment says."""


def health_schema(required_checks: list[str]) -> dict[str, Any]:
    """The schema with the environment's check names required under ``checks``."""
    checks = {**HEALTH_SCHEMA["properties"]["checks"], "required": list(required_checks)}
    return {**HEALTH_SCHEMA, "properties": {**HEALTH_SCHEMA["properties"], "checks": checks}}


def schema_errors(body: Any, required_checks: list[str]) -> list[str]:
    """Each way ``body`` differs from the schema, as ``checks: 'cache' is a required property``."""
    validator = Draft202012Validator(health_schema(required_checks))
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '(top level)'}: {error.message}"
        for error in sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    ]


@journey("release-manager", creates_data=False)
def release_manager(j: Journeyer) -> None:
    """Release Manager: /health matches its JSON schema with its checks; /metrics has its names."""
    settings = j.settings
    for path in settings.health_paths or ["/health"]:
        with j.step(f"GET {path}: the expected response"):
            answer = j.http.get(j.url(path))
            body = j.expect(answer, 200, f"{path}")
            errors = schema_errors(body, settings.health_checks)
            j.check.holds(
                f"{path} matches the guide's JSON schema",
                not errors,
                source=answer.source,
                detail="; ".join(errors),
                data={"http": exchange_data(answer), "required checks": settings.health_checks},
            )
            j.check.equals(f"{path} status", body["status"], "healthy", source=answer.source)
            for name, value in body["checks"].items():
                j.check.holds(
                    f"{path} check {name} is ok",
                    str(value).lower() in OK_VALUES,
                    source=answer.source,
                    detail=str(value),
                )
    with j.step(f"GET {settings.metrics_path}: the critical metrics"):
        answer = j.http.get(j.url(settings.metrics_path))
        j.check.equals(f"{settings.metrics_path}: HTTP status", answer.status, 200, source=answer.source)
        if not settings.metrics:
            j.check.fail("metric names to look for", f"none configured: set smoke.journeys.{j.name}.metrics")
        names = metric_names(answer.text)
        for name in settings.metrics:
            j.check.holds(
                f"{settings.metrics_path} exposes {name}", exposes(names, name), source=answer.source
            )
