"""The readiness parsers and judges: what a scan report, a test report, a k6 summary, the calendar
and a signed checklist say, and the one-line errors when a file cannot say anything."""

from __future__ import annotations

import json
import tomllib
from datetime import UTC, date, datetime, time
from pathlib import Path

import pytest
import tomli_w

from releasegate.errors import ConfigError, ProbeError
from releasegate.readiness.checklist import parse_confirmations, read_checklist
from releasegate.readiness.results import read_junit, read_k6_summary
from releasegate.readiness.scans import read_scan
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
