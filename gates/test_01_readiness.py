"""Preflight: release readiness, the runbooks' pre-deployment checklist, checked instead of ticked.

Summit GA 1.1 "Pre-deployment checklist" (security scan 0 critical, acceptance 100 %,
performance tests passed), GA 1.2 and Release Manager "Maintenance window scheduled", Release
Manager "Monitoring ... active", and the people's items (release captain, on-call, war room)
confirmed by name. Each check runs only when the environment's [readiness] has its section.
A failure here ABORTS the run (exit 10) before anything changed.
"""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from releasegate.analysis.thresholds import Verdict
from releasegate.readiness.checklist import parse_confirmations, read_checklist
from releasegate.readiness.results import read_junit, read_k6_summary
from releasegate.readiness.scans import read_scan
from releasegate.readiness.window import Freeze, judge_window
from releasegate.report.compliance import read_provenance, read_sbom, release_file

pytestmark = pytest.mark.phase("preflight")


def artifact(template: str, release: str) -> Path:
    """A release's file: ``{release}`` filled in, relative paths from where the gates run (the CI
    job's workspace, where the artifacts were downloaded)."""
    return Path(template.replace("{release}", release))


@pytest.mark.configured("readiness.security_scan")
@pytest.mark.threshold("readiness.security_scan.max_critical")
def test_security_scan_has_no_critical_finding(env, release, check):
    """Security scan passed (0 critical vulnerabilities): every Trivy JSON or SARIF report."""
    settings = env.readiness.security_scan
    for template in settings.reports:
        path = artifact(template, release)
        scan = read_scan(path)
        check.at_most(
            f"critical findings ({scan.tool}, {path.name})",
            scan.critical,
            settings.max_critical,
            source=str(path),
            detail="; ".join(scan.examples) or f"{scan.findings} finding(s), none critical",
        )


@pytest.mark.configured("readiness.acceptance")
@pytest.mark.threshold("readiness.acceptance.min_pass_ratio")
def test_acceptance_score(env, release, check):
    """Acceptance score: 100 % (GA 1.1), from the acceptance suite's JUnit XML."""
    settings = env.readiness.acceptance
    path = artifact(settings.junit, release)
    result = read_junit(path)
    ratio = result.pass_ratio
    check.at_least(
        "acceptance tests passed",
        None if ratio is None else round(100 * ratio, 2),
        round(100 * settings.min_pass_ratio, 2),
        unit="%",
        source=str(path),
        detail=f"{result.tests} tests, {result.failed} failed, {result.skipped} skipped"
        + (f": {'; '.join(result.failing)}" if result.failing else ""),
    )


@pytest.mark.configured("readiness.performance")
def test_performance_tests_passed(env, release, check):
    """Performance tests passed (GA 1.1): every threshold of the k6 run met."""
    path = artifact(env.readiness.performance.k6_summary, release)
    result = read_k6_summary(path)
    check.at_least(
        "k6 thresholds",
        result.thresholds,
        1,
        source=str(path),
        detail="a run with no threshold proves nothing",
    )
    check.at_most(
        "k6 thresholds crossed", len(result.failed), 0, source=str(path), detail="; ".join(result.failed)
    )


@pytest.mark.configured("readiness.window")
@pytest.mark.threshold("readiness.window.days", "readiness.window.start", "readiness.window.end")
def test_inside_the_deployment_window(env, check):
    """Maintenance window scheduled: inside the allowed days and hours, outside any freeze."""
    w = env.readiness.window
    verdict = judge_window(
        datetime.now(UTC),
        w.timezone,
        list(w.days),
        w.start,
        w.end,
        [Freeze(f.start, f.end, f.reason) for f in w.freeze],
    )
    check.holds(
        f"deployment window open at {verdict.local_time}",
        verdict.open,
        detail=verdict.reason,
        source="[readiness.window]",
    )


@pytest.mark.configured("readiness.monitoring")
def test_monitoring_targets_are_up(env, prometheus, check):
    """Monitoring active: every scrape target of Prometheus answers (a blind deploy is no deploy)."""
    targets = prometheus.targets()
    down = [
        f"{t['job']}/{t['instance']}: {t['error'] or t['health']}" for t in targets if t["health"] != "up"
    ]
    check.at_least("scrape targets", len(targets), 1, source=f"{prometheus.url}/api/v1/targets")
    check.at_most(
        "scrape targets down", len(down), 0, source=f"{prometheus.url}/api/v1/targets", detail="; ".join(down)
    )


@pytest.mark.configured("readiness.monitoring")
@pytest.mark.threshold("readiness.monitoring.min_rules", "readiness.monitoring.blocking_severities")
def test_alert_rules_loaded_and_nothing_critical_firing(env, prometheus, check):
    """Alerts configured, and no critical alert firing: we do not deploy into an incident."""
    settings = env.readiness.monitoring
    rules = prometheus.alerting_rules()
    check.at_least(
        "alerting rules loaded",
        len(rules),
        settings.min_rules,
        source=f"{prometheus.url}/api/v1/rules",
        detail=", ".join(rules[:10]),
    )
    firing = prometheus.firing_alerts()
    blocking = [a for a in firing if a.get("severity") in settings.blocking_severities]
    check.at_most(
        f"alerts firing with severity {'/'.join(settings.blocking_severities)}",
        len(blocking),
        0,
        source=f"{prometheus.url}/api/v1/alerts",
        detail="; ".join(
            f"{a.get('alertname', '?')} ({a.get('instance', a.get('job', ''))})" for a in blocking
        )
        or f"{len(firing)} firing, none blocking",
    )


@pytest.mark.configured("readiness.checklist")
def test_people_items_are_confirmed(env, request, check):
    """Release captain named, on-call alerted, war room open: each confirmed by a person, by name."""
    settings = env.readiness.checklist
    confirmed = read_checklist(Path(settings.file)) if settings.file else {}
    confirmed |= parse_confirmations(
        request.config.getoption("rg_confirm"), datetime.now(UTC).isoformat(timespec="seconds")
    )
    missing = []
    for item in settings.items:
        found = confirmed.get(item)
        if found is None:
            missing.append(item)
            how = f'--confirm "{item}=YOUR NAME"' + (
                f" or sign it in {settings.file}" if settings.file else ""
            )
            check.sample(
                item, None, Verdict.FAIL, source="[readiness.checklist]", detail=f"not confirmed: {how}"
            )
        else:
            check.record(item, f"confirmed by {found.by}", source=found.source, detail=found.at)
    check.holds(
        "every people item confirmed by name",
        not missing,
        source="[readiness.checklist]",
        detail=f"missing: {', '.join(missing)}" if missing else f"{len(settings.items)} item(s)",
    )


@pytest.mark.configured("compliance")
def test_sbom_and_provenance_ship_with_the_release(env, release, check):
    """Security scan + SBOM (optimisation summary, CI stage 2), and the build's provenance: each
    configured file exists, reads, and the provenance names this release."""
    settings = env.compliance
    if settings.sbom is None and settings.provenance is None:
        pytest.skip("[compliance] names neither an SBOM nor a provenance file")
    if settings.sbom is not None:
        path = release_file(settings.sbom, release)
        check.record("SBOM", read_sbom(path), source=str(path))
    if settings.provenance is not None:
        path = release_file(settings.provenance, release)
        check.record("provenance", read_provenance(path, release), source=str(path))
