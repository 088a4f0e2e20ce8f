"""The readiness parsers and judges: what a scan report, a test report, a k6 summary, the calendar,
a signed checklist, GitHub's workflow runs and reviews, staging's runs in the ledger and a
certificate's dates say, and the one-line errors when a source cannot say anything."""

from __future__ import annotations

import json
import tomllib
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest
import tomli_w

from releasegate.config import split_host_port
from releasegate.errors import ConfigError, ProbeError
from releasegate.ledger import RunRecord
from releasegate.readiness.approvals import pick_pull_request, pull_request_number, tally_reviews
from releasegate.readiness.certificates import judge_certificate
from releasegate.readiness.checklist import parse_confirmations, read_checklist
from releasegate.readiness.ci import judge_latest_run
from releasegate.readiness.results import read_junit, read_k6_summary
from releasegate.readiness.scans import read_scan
from releasegate.readiness.staging import drilled_release, staged_release
from releasegate.readiness.window import Freeze, judge_window

ARTIFACTS = Path(__file__).resolve().parent.parent / "sandbox" / "releases" / "2.0.0" / "artifacts"


def write(tmp_path: Path, name: str, content: object) -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


def test_the_demo_release_ships_a_clean_scan_and_passing_tests():
    assert read_scan(ARTIFACTS / "trivy.json").critical == 0
    assert read_scan(ARTIFACTS / "trivy.json").findings == 2
    assert read_scan(ARTIFACTS / "code-scan.sarif").critical == 0
    assert read_junit(ARTIFACTS / "acceptance.xml").pass_ratio == 1.0
    assert read_k6_summary(ARTIFACTS / "k6-summary.json").failed == []


def test_trivy_critical_findings_are_counted_and_named(tmp_path):
    report = {
        "SchemaVersion": 2,
        "Results": [
            {
                "Vulnerabilities": [
                    {"VulnerabilityID": "CVE-2025-1", "PkgName": "openssl", "Severity": "CRITICAL"},
                    {"VulnerabilityID": "CVE-2025-2", "PkgName": "zlib", "Severity": "HIGH"},
                ]
            },
            {"Vulnerabilities": None},
        ],
    }
    scan = read_scan(write(tmp_path, "trivy.json", report))
    assert (scan.tool, scan.critical, scan.findings) == ("Trivy", 1, 2)
    assert scan.examples == ["CVE-2025-1 in openssl"]


def test_sarif_is_critical_from_security_severity_of_the_rule_or_the_result(tmp_path):
    report = {
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "Trivy",
                        "rules": [
                            {"id": "CVE-1", "properties": {"security-severity": "9.8"}},
                            {"id": "CVE-2", "properties": {"security-severity": "5.0"}},
                        ],
                    }
                },
                "results": [
                    {"ruleId": "CVE-1"},
                    {"ruleId": "CVE-2"},
                    {"ruleId": "CVE-3", "properties": {"security-severity": "9.1"}},
                ],
            }
        ],
    }
    scan = read_scan(write(tmp_path, "scan.sarif", report))
    assert (scan.critical, scan.findings) == (2, 3)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "file not found"),
        ("{not json", "not readable JSON"),
        ({"hello": 1}, "neither Trivy JSON nor SARIF"),
    ],
)
def test_a_scan_report_that_says_nothing_is_an_error_never_zero(tmp_path, content, problem):
    path = tmp_path / "scan.json" if content is None else write(tmp_path, "scan.json", content)
    with pytest.raises(ProbeError, match=problem):
        read_scan(path)


def test_junit_pass_ratio_leaves_skipped_tests_out_and_names_the_failures(tmp_path):
    xml = """<testsuite><testcase classname="a" name="ok"/><testcase classname="a" name="bad"><failure/></testcase>
    <testcase classname="a" name="err"><error/></testcase><testcase classname="a" name="later"><skipped/></testcase></testsuite>"""
    result = read_junit(write(tmp_path, "junit.xml", xml))
    assert (result.tests, result.failed, result.skipped) == (4, 2, 1)
    assert result.pass_ratio == pytest.approx(1 / 3)
    assert result.failing == ["a::bad", "a::err"]
    assert read_junit(write(tmp_path, "empty.xml", "<testsuite/>")).pass_ratio is None  # no data, not 100 %


def test_k6_thresholds_from_handle_summary_and_summary_export(tmp_path):
    handle = {
        "metrics": {
            "http_req_duration": {"thresholds": {"p(95)<200": {"ok": False}, "p(99)<500": {"ok": True}}}
        }
    }
    export = {"metrics": {"http_req_failed": {"thresholds": {"rate<0.01": True}}}}  # true: crossed
    assert read_k6_summary(write(tmp_path, "a.json", handle)).failed == ["http_req_duration: p(95)<200"]
    assert read_k6_summary(write(tmp_path, "b.json", export)).failed == ["http_req_failed: rate<0.01"]
    with pytest.raises(ProbeError, match="not a k6 summary"):
        read_k6_summary(write(tmp_path, "c.json", {"data": []}))


WEEKDAYS = ["mon", "tue", "wed", "thu"]


def test_the_window_is_open_on_a_weekday_inside_the_hours_in_the_teams_time_zone():
    # Tuesday 2026-11-24 08:30 UTC is 09:30 in Berlin
    verdict = judge_window(
        datetime(2026, 11, 24, 8, 30, tzinfo=UTC), "Europe/Berlin", WEEKDAYS, time(9), time(16), []
    )
    assert verdict.open and verdict.local_time == "Tue 2026-11-24 09:30 Europe/Berlin"


@pytest.mark.parametrize(
    ("when", "reason"),
    [
        (datetime(2026, 11, 24, 7, 30, tzinfo=UTC), "outside the deployment hours 09:00-16:00"),
        (datetime(2026, 11, 27, 10, 0, tzinfo=UTC), "fri is not a deployment day"),
        (datetime(2026, 12, 22, 10, 0, tzinfo=UTC), "change freeze 2026-12-21 to 2027-01-04: year-end"),
    ],
)
def test_the_window_is_closed_with_the_reason(when, reason):
    freezes = [Freeze(date(2026, 12, 21), date(2027, 1, 4), "year-end")]
    verdict = judge_window(when, "Europe/Berlin", WEEKDAYS, time(9), time(16), freezes)
    assert not verdict.open and reason in verdict.reason


def test_the_checklist_file_and_the_command_line_confirm_by_name(tmp_path):
    path = write(
        tmp_path,
        "checklist.toml",
        '[items."release captain"]\nconfirmed_by = "bob"\nat = "2026-11-23T09:00Z"\n[items."war room"]\nconfirmed_by = ""\n',
    )
    signed = read_checklist(path)
    assert list(signed) == ["release captain"] and signed["release captain"].by == "bob"
    given = parse_confirmations(["on-call alerted = alice"], "2026-11-24T10:00:00+00:00")
    assert given["on-call alerted"].by == "alice" and given["on-call alerted"].source == "--confirm"
    with pytest.raises(ConfigError, match='expected "ITEM=NAME"'):
        parse_confirmations(["war room"], "now")


def test_readiness_configuration_is_checked_when_the_file_is_read(tmp_path):
    from releasegate.config import load_environment

    base = (Path(__file__).resolve().parent.parent / "environments" / "sandbox.toml").read_text(
        encoding="utf-8"
    )
    bad_zone = tmp_path / "zone.toml"
    bad_zone.write_text(base.replace('timezone = "UTC"', 'timezone = "Mars/Olympus"'), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"readiness\.window\.timezone: unknown time zone 'Mars/Olympus'"):
        load_environment(str(bad_zone), tmp_path)
    raw = tomllib.loads(base)
    del raw["metrics"]
    no_metrics = tmp_path / "blind.toml"
    no_metrics.write_text(tomli_w.dumps(raw), encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"readiness\.monitoring asks Prometheus: it needs a \[metrics\] section"
    ):
        load_environment(str(no_metrics), tmp_path)


# CI, code review, staging, certificates --------------------------------------------------------


def gh_run(status: str, conclusion: str | None, number: int, created_at: str) -> dict:
    return {
        "id": number,
        "run_number": number,
        "status": status,
        "conclusion": conclusion,
        "created_at": created_at,
        "updated_at": created_at,
        "html_url": f"https://github.com/o/r/actions/runs/{number}",
    }


def test_the_newest_workflow_run_decides_and_only_success_passes():
    older_green = gh_run("completed", "success", 40, "2026-11-22T09:00:00Z")
    newer_red = gh_run("completed", "failure", 41, "2026-11-23T09:00:00Z")
    running = gh_run("in_progress", None, 42, "2026-11-23T10:00:00Z")

    assert judge_latest_run([older_green], "gate.yml", "3f7c2a9").passed
    red = judge_latest_run([newer_red, older_green], "gate.yml", "3f7c2a9")
    assert (red.passed, red.state) == (False, "failure")
    assert (
        "run #41 concluded failure at 2026-11-23T09:00:00Z: fix the release, run gate.yml again" in red.detail
    )
    busy = judge_latest_run([older_green, running], "gate.yml", "3f7c2a9")
    assert (busy.passed, busy.state) == (False, "in_progress")
    assert "run #42 is in progress since 2026-11-23T10:00:00Z: wait for it to finish" in busy.detail
    none = judge_latest_run([], "gate.yml", "3f7c2a9")
    assert (none.passed, none.state) == (False, None)  # no data: never a pass
    assert none.detail.startswith("no run of gate.yml for commit 3f7c2a9: was the workflow triggered")


def gh_review(login: str, state: str, at: str) -> dict:
    return {"user": {"login": login}, "state": state, "submitted_at": at}


def test_each_reviewers_latest_deciding_review_counts():
    reviews = [
        gh_review("alice", "APPROVED", "2026-11-22T10:00:00Z"),
        gh_review("alice", "COMMENTED", "2026-11-22T11:00:00Z"),  # a comment changes nothing
        gh_review("Bob", "APPROVED", "2026-11-22T10:00:00Z"),
        gh_review("bob", "CHANGES_REQUESTED", "2026-11-22T12:00:00Z"),  # supersedes the approval
        gh_review("carol", "CHANGES_REQUESTED", "2026-11-22T09:00:00Z"),
        gh_review("carol", "APPROVED", "2026-11-22T13:00:00Z"),  # ...and the other way round
        gh_review("dave", "APPROVED", "2026-11-22T09:00:00Z"),
        gh_review("dave", "DISMISSED", "2026-11-22T14:00:00Z"),
        gh_review("release-bot", "APPROVED", "2026-11-22T09:00:00Z"),  # the author's own
        {"user": {"login": "erin"}, "state": "PENDING", "submitted_at": None},
    ]
    tally = tally_reviews(reviews, author="release-bot")
    assert tally.approved == ["alice", "carol"]
    assert tally.changes_requested == ["bob (2026-11-22T12:00:00Z)"]


def test_an_approval_of_an_earlier_commit_is_stale_until_the_reviewer_approves_the_last_one():
    last, earlier = "c" * 40, "a" * 40
    reviews = [
        {**gh_review("alice", "APPROVED", "2026-11-22T10:00:00Z"), "commit_id": earlier},
        {**gh_review("bob", "APPROVED", "2026-11-22T10:00:00Z"), "commit_id": earlier},
        {**gh_review("bob", "APPROVED", "2026-11-22T12:00:00Z"), "commit_id": last},  # approved again
        {**gh_review("carol", "APPROVED", "2026-11-22T12:00:00Z"), "commit_id": last},
    ]

    tally = tally_reviews(reviews, head_sha=last)
    assert tally.approved == ["bob", "carol"]
    assert tally.stale == ["alice (approved aaaaaaa)"]
    # Without the last commit (stale_approvals = "count") every standing approval counts.
    assert tally_reviews(reviews).approved == ["alice", "bob", "carol"]


def test_the_release_pull_request_is_the_one_merged_as_its_commit_or_a_configured_number():
    open_one = {"number": 1, "merged_at": None, "merge_commit_sha": "x"}
    merged_other = {"number": 2, "merged_at": "2026-11-22T12:00:00Z", "merge_commit_sha": "y"}
    exact = {"number": 3, "merged_at": "2026-11-22T12:00:00Z", "merge_commit_sha": "abc"}
    assert pick_pull_request([open_one, merged_other, exact], "abc") is exact
    assert pick_pull_request([open_one, merged_other], "abc") is merged_other
    assert pick_pull_request([open_one], "abc") is open_one
    assert pick_pull_request([], "abc") is None
    assert pull_request_number(None, "2.0.0") is None
    assert pull_request_number(812, "2.0.0") == 812
    assert pull_request_number("#{release}", "812") == 812
    with pytest.raises(
        ConfigError, match=r"pull_request: '\{release\}' gives '2.0.0' for release 2.0.0, not a number"
    ):
        pull_request_number("{release}", "2.0.0")


NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def staged(
    run_id: str, release: str, decision: str, ended: str, *, kind: str = "deploy", target: str | None = None
) -> RunRecord:
    return RunRecord(
        id=run_id,
        environment="staging",
        release=release,
        previous_release="1.0.0",
        operator="ci",
        host="runner",
        pid=1,
        started_at=ended,
        ended_at=ended,
        status="finished",
        decision=decision,
        exit_code={"SUCCESS": 0, "ABORTED": 10, "ROLLED_BACK": 11}.get(decision, 12),
        failed_phase=None,
        failed_gate=None,
        failure=None if decision == "SUCCESS" else "a gate failed",
        meta={},
        kind=kind,
        target_run=target,
    )


def test_staging_passed_is_the_newest_success_of_the_release_and_how_long_ago():
    runs = [
        staged("r3", "2.1.0", "SUCCESS", "2026-11-24T06:00:00+00:00"),
        staged("r2", "2.0.0", "ABORTED", "2026-11-23T12:00:00+00:00"),  # aborted before it went out
        staged("r1", "2.0.0", "SUCCESS", "2026-11-22T12:00:00+00:00"),
    ]
    verdict = staged_release(runs, "2.0.0", NOW, "staging")
    assert (verdict.run.id, verdict.age_days) == ("r1", 2.0)
    assert verdict.detail == "run r1 ended SUCCESS at 2026-11-22T12:00:00+00:00, 2 days ago, by ci"

    never = staged_release(runs, "3.0.0", NOW, "staging")
    assert never.age_days is None
    assert never.detail == (
        "3.0.0 was never deployed to staging (newest there: 2.1.0, run r3): "
        "pytest gates/ --env=staging --release=3.0.0"
    )
    failed = staged_release(
        [staged("r4", "3.0.0", "ROLLED_BACK", "2026-11-24T08:00:00+00:00")], "3.0.0", NOW, "staging"
    )
    assert (
        failed.age_days is None
        and "3.0.0 never reached SUCCESS in staging (run r4 ROLLED_BACK)" in failed.detail
    )
    later = staged_release(
        [staged("r5", "2.0.0", "ROLLED_BACK", "2026-11-24T08:00:00+00:00"), *runs], "2.0.0", NOW, "staging"
    )
    assert later.age_days is None and "but a later run r5 ended ROLLED_BACK" in later.detail


def test_the_newest_drill_of_the_release_decides():
    deploys = [staged("d1", "2.0.0", "SUCCESS", "2026-11-22T12:00:00+00:00")]
    good = staged("k1", "1.0.0", "SUCCESS", "2026-11-22T13:00:00+00:00", kind="drill", target="d1")
    bad = staged("k2", "1.0.0", "ROLLBACK_FAILED", "2026-11-23T13:00:00+00:00", kind="drill", target="d1")
    other = staged("k3", "1.9.0", "SUCCESS", "2026-11-24T10:00:00+00:00", kind="drill", target="d0")

    passed = drilled_release([other, good], deploys, "2.0.0", NOW, "staging")
    assert (passed.run.id, passed.age_days) == ("k1", 1.96)
    assert "went back to 1.0.0 and forward again" in passed.detail
    failed = drilled_release([bad, good], deploys, "2.0.0", NOW, "staging")
    assert (
        failed.age_days is None
        and "the last drill of 2.0.0 (run k2) ended ROLLBACK_FAILED: a gate failed" in failed.detail
    )
    missing = drilled_release([other], deploys, "2.0.0", NOW, "staging")
    assert missing.detail == (
        "no rollback drill of 2.0.0 in staging: after deploying it there, pytest rollback/ --env=staging --drill"
    )


def test_a_certificate_passes_with_more_than_min_days_left():
    soon = judge_certificate("api:443", NOW + timedelta(days=5, hours=2), NOW, 30, "CN=api")
    assert (soon.ok, soon.days_left) == (False, 5.1)
    assert soon.detail == "expires 2026-11-29 14:00 UTC, within 30 days: renew it; CN=api"
    assert judge_certificate("api:443", NOW + timedelta(days=90), NOW, 30, "CN=api").ok
    assert not judge_certificate("api:443", NOW + timedelta(days=30), NOW, 30, "CN=api").ok  # more than 30


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("api.summit.internal:443", ("api.summit.internal", 443)),
        ("api.summit.internal", ("api.summit.internal", 443)),
        ("127.0.0.1:8443", ("127.0.0.1", 8443)),
        ("[::1]:8443", ("::1", 8443)),
        ("::1", ("::1", 443)),
    ],
)
def test_tls_hosts_are_host_and_port(entry, expected):
    assert split_host_port(entry) == expected


def test_github_checks_need_the_github_section_and_a_token_reference(tmp_path):
    from releasegate.config import load_environment

    base = (Path(__file__).resolve().parent.parent / "environments" / "sandbox.toml").read_text(
        encoding="utf-8"
    )
    path = tmp_path / "ci.toml"
    path.write_text(base + '\n[readiness.ci]\nworkflow = "gate.yml"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        load_environment(str(path), tmp_path)
    assert str(error.value) == (
        "ci.toml: readiness: readiness.ci asks GitHub: it needs a [readiness.github] section (repo, ref, token)"
    )
    path.write_text(
        base + '\n[readiness.github]\nrepo = "o/r"\ntoken = "ghp_pasted-by-mistake"\n', encoding="utf-8"
    )
    with pytest.raises(ConfigError) as error:
        load_environment(str(path), tmp_path)
    assert "readiness.github.token: a secret must be an ${ENV_VAR} reference" in str(error.value)
    assert "ghp_pasted" not in str(error.value)
    path.write_text(base.replace('hosts = ["127.0.0.1:28443"]', 'hosts = ["api:https"]'), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"readiness\.tls\.hosts\.0: expected \"HOST:PORT\""):
        load_environment(str(path), tmp_path)
