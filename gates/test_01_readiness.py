"""Preflight: release readiness, the runbooks' pre-deployment checklist, checked instead of ticked.

Summit GA 1.1 "Pre-deployment checklist" (MVP-4 gate workflow passed, security scan 0 critical,
acceptance 100 %, performance tests passed, rollback tested in staging), Summit "Code review
approved by at least 2 reviewers" and "Staging deployment successful", GA 1.2 and Release
Manager "Maintenance window scheduled", Release Manager "Monitoring ... active", certificates
that will not expire under the release, and the people's items (release captain, on-call, war
room) confirmed by name. Each check runs only when the environment's [readiness] has its
section. A failure here ABORTS the run (exit 10) before anything changed.
"""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from releasegate.analysis.thresholds import Verdict
from releasegate.config import split_host_port
from releasegate.errors import ProbeError
from releasegate.ledger import Ledger, open_ledger
from releasegate.probes.github import Commit, GitHub
from releasegate.probes.tls import peer_certificate
from releasegate.readiness.approvals import pick_pull_request, pull_request_number, tally_reviews
from releasegate.readiness.certificates import judge_certificate, unreadable
from releasegate.readiness.checklist import parse_confirmations, read_checklist
from releasegate.readiness.ci import SUCCESS, judge_latest_run
from releasegate.readiness.results import read_junit, read_k6_summary
from releasegate.readiness.scans import read_scan
from releasegate.readiness.staging import drilled_release, staged_release
from releasegate.readiness.window import Freeze, judge_window
from releasegate.release_names import fill
from releasegate.report.compliance import read_provenance, read_sbom, release_file

pytestmark = pytest.mark.phase("preflight")


def artifact(template: str, release: str) -> Path:
    """A release's file: ``{release}`` filled in, relative paths from where the gates run (the CI
    job's workspace, where the artifacts were downloaded)."""
    return Path(fill(template, release))


@pytest.fixture(scope="module")
def github(env) -> GitHub:
    """The release's repository ([readiness.github]); its token is read from its variable here."""
    return GitHub.from_settings(env.readiness.github)


@pytest.fixture
def release_commit(env, release, github, check) -> Commit:
    """The commit [readiness.github] ref names for this release (``v{release}``: its tag)."""
    commit = github.commit(fill(env.readiness.github.ref, release))
    check.record(f"commit of {commit.ref}", commit.sha, source=commit.source)
    return commit


@pytest.fixture
def release_pull_request(env, release, github, release_commit, check) -> dict[str, Any]:
    """The release's pull request: the configured number, else the one its commit came from."""
    number = pull_request_number(env.readiness.approvals.pull_request, release)
    if number is None:
        pulls = github.pulls_of_commit(release_commit.sha)
        pull, source = pick_pull_request(pulls.data, release_commit.sha), pulls.source
        if pull is None:
            check.fail(
                f"pull request of {release_commit.ref} ({release_commit.short})",
                "no pull request contains this commit: was it pushed without review? "
                "(or name it: [readiness.approvals] pull_request)",
                source=source,
            )
    else:
        answer = github.pull(number)
        pull, source = answer.data, answer.source
    state = "merged" if pull.get("merged_at") else str(pull.get("state", "?"))
    check.record(
        f"pull request of {release_commit.ref}",
        f"#{pull['number']} {pull.get('title', '')}".strip(),
        source=source,
        detail=state,
    )
    return pull


@pytest.fixture(scope="module")
def staging_ledger(env, run) -> Ledger:
    """Where staging records its runs: [readiness.staging.ledger], else this run's own ledger."""
    named = env.readiness.staging.ledger
    if named is None or not (named.path or named.dsn):
        return run.ledger
    if named.path and not Path(named.path).is_file():  # opening it would make an empty one
        raise ProbeError(
            f"staging's ledger {named.path}", "file not found", "check [readiness.staging.ledger] path"
        )
    return open_ledger(named, None)


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


@pytest.mark.configured("readiness.github")
@pytest.mark.threshold("readiness.github.ref")
def test_release_is_tagged(release_commit, check):
    """ "Git tags created for the release version" (Release Manager; GA 2.3's git tag): the
    release's ref names a commit in the repository, the commit its images are built from."""
    check.present(f"git ref {release_commit.ref}", release_commit.short, source=release_commit.source)


@pytest.mark.configured("readiness.ci")
@pytest.mark.threshold("readiness.ci.workflow")
def test_ci_workflow_passed(env, github, release_commit, check):
    """CI workflow passed (GA 1.1 "MVP-4 gate workflow passed"): its latest run for the release's commit succeeded."""
    workflow = env.readiness.ci.workflow
    runs = github.workflow_runs(workflow, release_commit.sha)
    verdict = judge_latest_run(runs.data, workflow, release_commit.short)
    check.equals(
        f"{workflow} for {release_commit.ref} ({release_commit.short})",
        verdict.state,
        SUCCESS,
        source=runs.source,
        detail=verdict.detail,
    )


@pytest.mark.configured("readiness.approvals")
@pytest.mark.threshold("readiness.approvals.min_approvals")
def test_code_review_approved(env, github, release_pull_request, check):
    """Code review approved (Summit: by at least 2 reviewers): distinct approvals standing now, none asking for changes."""
    number = release_pull_request["number"]
    reviews = github.reviews(number)
    last_commit = (release_pull_request.get("head") or {}).get("sha")
    ignore_stale = env.readiness.approvals.stale_approvals == "ignore"
    author = (release_pull_request.get("user") or {}).get("login")
    tally = tally_reviews(reviews.data, author, last_commit if ignore_stale else None)
    changes = f"changes requested by {', '.join(tally.changes_requested)}" if tally.changes_requested else ""
    stale = f"stale, of a commit before {last_commit[:7]}: {', '.join(tally.stale)}" if tally.stale else ""
    check.at_least(
        f"distinct approving reviewers of #{number}",
        len(tally.approved),
        env.readiness.approvals.min_approvals,
        source=reviews.source,
        detail="; ".join(filter(None, [", ".join(tally.approved) or "nobody approves it", stale, changes])),
    )
    check.at_most(
        f"reviewers requesting changes on #{number}",
        len(tally.changes_requested),
        0,
        source=reviews.source,
        detail=f"{changes}: address them and ask again" if changes else "none",
    )


@pytest.mark.configured("readiness.staging")
@pytest.mark.threshold("readiness.staging.environment", "readiness.staging.within_days")
def test_release_passed_in_staging(env, release, staging_ledger, check):
    """Staging deployment successful: this release reached SUCCESS in staging within the last days."""
    settings = env.readiness.staging
    deploys = staging_ledger.headers(settings.environment, "deploy")
    verdict = staged_release(deploys, release, datetime.now(UTC), settings.environment)
    check.at_most(
        f"days since {release} passed in {settings.environment}",
        verdict.age_days,
        settings.within_days,
        unit="days",
        source=f"ledger {staging_ledger.where}",
        detail=verdict.detail,
    )


@pytest.mark.configured("readiness.staging.drill")
@pytest.mark.threshold("readiness.staging.within_days")
def test_rollback_tested_in_staging(env, release, staging_ledger, check):
    """Rollback tested in staging (GA 1.1): a rollback drill of this release passed there within the last days."""
    settings = env.readiness.staging
    verdict = drilled_release(
        staging_ledger.headers(settings.environment, "drill"),
        staging_ledger.headers(settings.environment, "deploy"),
        release,
        datetime.now(UTC),
        settings.environment,
    )
    check.at_most(
        f"days since the rollback drill of {release} in {settings.environment}",
        verdict.age_days,
        settings.within_days,
        unit="days",
        source=f"ledger {staging_ledger.where}",
        detail=verdict.detail,
    )


@pytest.mark.configured("readiness.tls")
@pytest.mark.threshold("readiness.tls.min_days")
def test_tls_certificates_stay_valid(env, check):
    """TLS certificates of every host verify, and stay valid for more than min_days."""
    settings = env.readiness.tls
    now = datetime.now(UTC)
    failing = []
    for entry in settings.hosts:
        host, port = split_host_port(entry)
        try:
            cert = peer_certificate(host, port, ca_file=settings.ca_file, timeout_s=settings.timeout_s)
            verdict = judge_certificate(entry, cert.not_after, now, settings.min_days, cert.about)
        except ProbeError as exc:
            verdict = unreadable(entry, f"{exc.problem} ({exc.hint})" if exc.hint else exc.problem)
        check.sample(
            f"certificate of {entry}",
            verdict.days_left,
            Verdict.PASS if verdict.ok else Verdict.FAIL,
            unit="days",
            comparator=">",
            threshold=settings.min_days,
            source=f"TLS handshake with {entry}",
            detail=verdict.detail,
        )
        if not verdict.ok:
            failing.append(f"{entry}: {verdict.detail}")
    check.holds(
        f"every certificate valid for more than {settings.min_days:g} days",
        not failing,
        source=f"TLS handshakes with {len(settings.hosts)} host(s)",
        detail=" | ".join(failing) or ", ".join(settings.hosts),
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
