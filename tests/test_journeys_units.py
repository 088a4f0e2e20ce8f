"""The journeys' pure parts and their configuration: what a leak check's answer means, which
metric names an exposition has, how /health differs from the guide's schema, what [smoke]
refuses."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import tomli_w
from sandbox_env import write_sandbox_env

from releasegate.config import load_environment
from releasegate.errors import ConfigError
from releasegate.journeys.exposition import exposes, metric_names
from releasegate.journeys.leaks import leaked_items
from releasegate.journeys.release_manager import schema_errors

ROOT = Path(__file__).resolve().parent.parent

GUIDE_HEALTH = {
    "status": "healthy",
    "version": "v2024.01.15",
    "timestamp": "2024-01-15T14:30:00Z",
    "checks": {"database": "ok", "cache": "ok", "message_queue": "ok"},
}


def test_a_leak_check_answer_names_what_is_left_and_anything_else_is_no_data() -> None:
    assert leaked_items({"users": [], "grants": [], "extractions": 0}) == []
    assert leaked_items({"users": ["rg-smoke-1-user@example.test"], "sessions": 2}) == [
        "users: rg-smoke-1-user@example.test",
        "sessions: 2 left",
    ]
    assert leaked_items([{"name": "rg-smoke-1-bucket"}, "rg-smoke-1-key"]) == [
        "rg-smoke-1-bucket",
        "rg-smoke-1-key",
    ]
    assert leaked_items({"items": [{"id": 7}]}) == ["7"]
    for not_an_answer in (None, "ok", {"status": "ok"}, {"users": True}):
        assert leaked_items(not_an_answer) is None, not_an_answer


def test_metric_names_count_a_family_by_any_of_its_samples() -> None:
    text = """# HELP release_manager_requests_total Requests
# TYPE release_manager_requests_total counter
release_manager_requests_total{route="/"} 3.0
release_manager_request_duration_seconds_bucket{le="0.1"} 1.0
release_manager_request_duration_seconds_count 1.0
up 1
"""
    names = metric_names(text)
    assert exposes(names, "release_manager_requests_total")
    assert exposes(names, "release_manager_request_duration_seconds")
    assert not exposes(names, "release_manager_errors_total")
    assert not exposes(names, "release_manager_request")


def test_health_is_judged_against_the_guides_schema_with_the_environments_checks() -> None:
    assert schema_errors(GUIDE_HEALTH, ["database", "cache", "message_queue"]) == []
    no_queue = {**GUIDE_HEALTH, "checks": {"database": "ok", "cache": "ok"}}
    assert schema_errors(no_queue, ["database", "cache", "message_queue"]) == [
        "checks: 'message_queue' is a required property"
    ]
    assert schema_errors({**GUIDE_HEALTH, "timestamp": "yesterday"}, [])[0].startswith(
        "timestamp: 'yesterday'"
    )
    assert schema_errors({"status": "fine"}, []) == [
        "(top level): 'version' is a required property",
        "(top level): 'timestamp' is a required property",
        "(top level): 'checks' is a required property",
        "status: 'fine' is not one of ['healthy', 'degraded', 'unhealthy']",
    ]
    assert schema_errors(None, []) == ["(top level): None is not of type 'object'"]


@pytest.mark.parametrize(
    ("journeys", "message"),
    [
        (
            {"granter": {"leak_check_path": "/test-data"}},
            "smoke.journeys.granter.leak_check_path: test data is found by {prefix}",
        ),
        (
            {"granter": {"cleanup_path": "/test-data?all=1"}},
            "smoke.journeys.granter.cleanup_path: test data is found by {prefix}",
        ),
        ({"granter": {"pasword": "${X}"}}, "smoke.journeys.granter.pasword: unknown key"),
        (
            {"granter": {"token": "hunter2-inline"}},
            "smoke.journeys.granter.token: a secret must be an ${ENV_VAR} reference",
        ),
        ({"Granter Flows": {}}, "smoke.journeys: journey name 'Granter Flows'"),
    ],
)
def test_a_bad_smoke_section_is_one_line_naming_the_key(tmp_path: Path, journeys: dict, message: str) -> None:
    path = write_sandbox_env(tmp_path)
    raw = {**tomllib.loads(path.read_text()), "smoke": {"journeys": journeys}}
    path.write_text(tomli_w.dumps(raw))
    with pytest.raises(ConfigError) as error:
        load_environment(str(path), ROOT)
    assert message in str(error.value)


def test_the_examples_give_each_system_its_runbooks_journeys() -> None:
    granter = load_environment("environments/granter-production.example.toml", ROOT).smoke
    assert granter is not None and list(granter.journeys) == ["granter"] and granter.on_verify
    assert len(granter.journeys["granter"].health_paths) == 3
    manager = load_environment("environments/release-manager-production.example.toml", ROOT).smoke
    assert manager is not None and manager.journeys["release-manager"].health_checks == [
        "database",
        "cache",
        "message_queue",
    ]
    summit = load_environment("environments/summit-production.example.toml", ROOT).smoke
    assert summit is not None and list(summit.journeys) == ["summit", "summit-critical-path"]
    assert summit.journeys["summit"].health_paths == ["/health", "/health/db", "/health/policy"]
    assert all(j.token is not None and j.leak_check_path for j in summit.journeys.values())
    sandbox = load_environment("sandbox", ROOT).smoke
    assert sandbox is not None and list(sandbox.journeys) == [
        "granter",
        "release-manager",
        "summit",
        "summit-critical-path",
    ]
