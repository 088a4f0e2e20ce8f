"""Checks that both the gates and the rollback need: is a release healthy on every instance,
through the load balancer, repeatedly; is the database as it was at the backup.

Each routine measures with probes and judges through a Checker, so every sample is evidence.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from releasegate.analysis.thresholds import Verdict
from releasegate.config import Environment, SloCheck, VerifySettings
from releasegate.errors import ProbeError
from releasegate.evidence import Checker
from releasegate.journeys import get_journey, run_journey
from releasegate.platforms.base import Platform
from releasegate.probes.health import read_health
from releasegate.probes.http import Http
from releasegate.probes.postgres import Postgres


def health_is(check: Checker, http: Http, verify: VerifySettings, release: str, label: str) -> None:
    """One health probe, judged by the environment's contract (``[verify.health]``): healthy,
    the version the release reports (when the answer names one), every check passing."""
    path, contract = verify.health_path, verify.health
    try:
        health = read_health(http, path, contract)
    except ProbeError as exc:
        check.fail(f"{label} {path}", str(exc), source=http.url(path))
        return
    detail = ", ".join(f"{k}: {v}" for k, v in health.failing_checks.items())
    exchange = {
        "http": {
            "request": health.source,
            "status": health.http_status,
            "elapsed_ms": round(health.elapsed_ms, 1),
            "body": health.body,
        }
    }
    if contract.status_field:
        accepted: Any = list(contract.healthy)
        why = f"HTTP {health.http_status}" + (f"; failing: {detail}" if detail else "")
    else:
        accepted, why = "HTTP 2xx", detail and f"failing: {detail}"
    check.judged(
        f"{label} status",
        health.status,
        health.healthy,
        comparator="in",
        threshold=accepted,
        source=health.source,
        detail=why,
        data=exchange,
    )
    if contract.reports_version:
        check.equals(
            f"{label} version", health.version, contract.expected_version(release), source=health.source
        )


def every_instance_serves(
    check: Checker, platform: Platform, release: str, verify: VerifySettings, *, reachable: bool = True
) -> None:
    """Every instance the load balancer routes to runs ``release`` and, asked directly when its
    address answers from here, says it is healthy (else the platform's readiness stands in)."""
    status = platform.status()
    routed = [i for i in status.instances if i.name in status.in_service]
    check.equals("instances in service", len(routed), status.desired, source="platform status")
    for instance in routed:
        check.equals(f"{instance.name} release", instance.release, release, source="platform status")
        if not reachable:
            check.holds(
                f"{instance.name} ready", instance.ready, source="platform status", detail=instance.detail
            )
            continue
        health_is(
            check,
            Http(instance.url, timeout_s=verify.request_timeout_s, component=instance.name),
            verify,
            release,
            f"{instance.name} {verify.health_path}",
        )


def health_repeatedly(
    check: Checker, http: Http, verify: VerifySettings, release: str, times: int, interval_s: float
) -> None:
    """The runbook's ``for i in {1..10}; do curl /health; sleep 2; done``: every sample recorded."""
    for attempt in range(1, times + 1):
        health_is(check, http, verify, release, f"{verify.health_path} probe {attempt}/{times}")
        if attempt < times:
            time.sleep(interval_s)


def smoke_passes(check: Checker, env: Environment, progress: Callable[[str], None] | None = None) -> None:
    """The rollback's "smoke passes" (Granter rollback step 6: "All tests should pass on
    previous version"): every configured journey that needs nothing of the new release."""
    if env.smoke is None:
        return
    for name, settings in env.smoke.journeys.items():
        if settings.after_rollback and get_journey(name).after_rollback:
            run_journey(name, env, check, progress=progress)


def database_as_before(
    check: Checker, pg: Postgres, row_counts: dict[str, int], schema_version: str | None, label: str
) -> None:
    """Row counts of the verified tables and the schema version match what they were."""
    if row_counts:
        now = pg.row_counts(list(row_counts), pg.dbname)
        for table, expected in row_counts.items():
            check.equals(
                f"{label}: rows in {table}",
                now.get(table),
                expected,
                source=pg.source(f"SELECT count(*) FROM {table}"),
            )
    check.equals(
        f"{label}: schema version", pg.schema_version(), schema_version, source=pg.source(pg.version_query)
    )


def series_holds(check: Checker, name: str, series: dict, slo: SloCheck) -> None:
    """Every sample of an SLO series as evidence, then its verdict: the runbooks' "3 consecutive
    failures" decide, one bad sample alone does not. Undecided (sampling stopped because another
    check failed) is not a pass either."""
    for sample in series["samples"]:
        check.sample(
            f"{name} sample {sample['index']}",
            sample["value"],
            Verdict(sample["verdict"]),
            unit=slo.unit,
            comparator=slo.comparator,
            threshold=slo.threshold,
            source=sample["source"],
            detail=sample["detail"],
            at=sample["at"],
        )
    if series["verdict"] is None:
        pytest.skip(series["reason"] or f"{name} was not decided")
    label = f"{name} ({slo.description})" if slo.description else name
    check.decide(label, Verdict(series["verdict"]), series["reason"])
