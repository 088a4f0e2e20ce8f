"""User journeys against a real sandbox (PostgreSQL, Redis, nginx, the demo service and its
Granter), in process: what each journey checks, what it records, what it leaves behind.

The sandbox's Granter guards its test data with an admin token here, as a real one would, so the
journeys use the configured ``token = "${...}"`` for their cleanup and leak check.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from gate_runs import environment, lines
from sandbox_env import running_sandbox, write_sandbox_env

from releasegate.analysis.thresholds import Verdict
from releasegate.config import Environment, JourneySettings, SmokeSettings
from releasegate.errors import ConfigError, ProbeError
from releasegate.evidence import GateFailure
from releasegate.journeys import Journeyer, journey, run_journey

pytestmark = pytest.mark.integration

TOKEN_VAR = "RG_TEST_GRANTER_TOKEN"
TOKEN = "granter-admin-t0ken-for-the-journey-tests"
GRANTER = {
    "base_url": "{url}/granter",
    "token": "${" + TOKEN_VAR + "}",
    "cleanup_path": "/test-data?prefix={prefix}",
    "leak_check_path": "/test-data?prefix={prefix}",
}


def token_protected_env(dir: Path, **overrides: object) -> Path:
    """The sandbox environment whose Granter needs the admin token for its test data."""
    return write_sandbox_env(
        dir,
        metrics=None,
        **{
            "platform.local.secret_env": {"GRANTER_ADMIN_TOKEN": "${" + TOKEN_VAR + "}"},
            "smoke.journeys.granter.token": "${" + TOKEN_VAR + "}",
        },
        **overrides,
    )


@pytest.fixture(scope="module")
def env(module_sandbox_dir: Path) -> Iterator[Environment]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(TOKEN_VAR, TOKEN)  # before the sandbox starts: its instances read it
        with running_sandbox(token_protected_env(module_sandbox_dir)) as env_file:
            yield environment(env_file)


def smoke_data(env: Environment) -> dict[str, int]:
    """Rows carrying any journey prefix, table by table, as psql shows them."""
    queries = {
        "users": "SELECT count(*) FROM granter_users WHERE email LIKE 'rg-smoke-%%'",
        "grants": "SELECT count(*) FROM granter_grants WHERE source LIKE 'rg-smoke-%%'",
        "extractions": "SELECT count(*) FROM granter_extractions WHERE label LIKE 'rg-smoke-%%'",
    }
    with psycopg.connect(env.database.dsn) as conn:
        return {kind: conn.execute(sql).fetchone()[0] for kind, sql in queries.items()}


def with_journeys(env: Environment, **journeys: dict) -> Environment:
    return env.model_copy(
        update={"smoke": SmokeSettings(journeys={k: JourneySettings(**v) for k, v in journeys.items()})}
    )


def test_the_granter_journey_passes_its_five_flows_and_leaves_nothing(env, check, records) -> None:
    result = run_journey("granter", env, check)

    assert [s.title for s in result.steps] == [
        "auth flow: register",
        "auth flow: log in",
        "scraper flow: multi-page",
        "search flow: query + filters",
        "IA flow: extraction + fallback",
        "health flow: all probes",
    ]
    assert all(s.ok and s.elapsed_ms > 0 for s in result.steps)
    text = lines(records)
    for n, step in enumerate(result.steps, 1):
        assert f"granter step {n}: {step.title}: " in text and " ms: pass" in text
    assert "scraper: pages followed: 3 >= 2: pass" in text
    assert "primary document: extractor that answered: primary == primary: pass" in text
    assert "fallback document: extractor that answered: fallback == fallback: pass" in text
    for probe in ("/health", "/data-service/health", "/frontend/health"):
        assert f"{probe}: every service up: yes: pass" in text
    assert f"granter: test data left after cleanup ({result.prefix}): 0 == 0: pass" in text
    assert result.prefix.startswith("rg-smoke-") and not result.leaked
    assert smoke_data(env) == {"users": 0, "grants": 0, "extractions": 0}
    assert TOKEN not in text, "the admin token never reaches the evidence"
    assert "login answered a token: yes: pass" in text


def test_the_release_manager_journey_checks_the_guides_health_schema_and_metric_names(
    env, check, records
) -> None:
    result = run_journey("release-manager", env, check)

    text = lines(records)
    assert "/health matches the guide's JSON schema: yes: pass" in text
    for name in (
        "release_manager_requests_total",
        "release_manager_request_duration_seconds",
        "release_manager_errors_total",
        "release_manager_db_connections_active",
    ):
        assert f"/metrics exposes {name}: yes: pass" in text
    assert [s.title for s in result.steps] == [
        "GET /health: the expected response",
        "GET /metrics: the critical metrics",
    ]


def test_a_metric_the_service_does_not_expose_fails_naming_it(env, check) -> None:
    settings = env.smoke.journeys["release-manager"].model_dump()
    settings["metrics"] = [*settings["metrics"], "release_manager_queue_depth"]
    with pytest.raises(GateFailure, match="/metrics exposes release_manager_queue_depth: no: fail"):
        run_journey("release-manager", with_journeys(env, **{"release-manager": settings}), check)


def test_a_health_check_the_guide_requires_and_the_service_lacks_fails_the_schema(env, check) -> None:
    settings = {"health_checks": ["database", "cache", "message_queue"], "metrics": ["errors_total"]}
    with pytest.raises(GateFailure, match="checks: 'message_queue' is a required property"):
        run_journey("release-manager", with_journeys(env, **{"release-manager": settings}), check)


@journey("leaky-granter")
def leaky_granter(j: Journeyer) -> None:
    """Registers an account and forgets to clean it up."""
    with j.step("register"):
        email = f"{j.unique('forgotten')}@example.test"
        j.expect(
            j.http.post(
                "/auth/register", json={"email": email, "password": "long-enough-1", "name": "Leaky"}
            ),
            201,
            "register",
        )


def test_a_journey_that_leaks_test_data_fails_naming_what_leaked(env, check, records) -> None:
    leaky = with_journeys(env, **{"leaky-granter": {**GRANTER, "cleanup_path": None}})
    try:
        with pytest.raises(GateFailure) as failure:
            run_journey("leaky-granter", leaky, check)

        message = str(failure.value)
        assert "leaky-granter journey (rg-smoke-" in message
        assert "leaked test data: users: rg-smoke-" in message and "-forgotten@example.test" in message
        leak = next(r for r in records if "test data left after cleanup" in r.check)
        assert leak.verdict is Verdict.FAIL and leak.value == 1 and "-forgotten@example.test" in leak.detail
    finally:
        with psycopg.connect(env.database.dsn) as conn:
            conn.execute("DELETE FROM granter_users WHERE email LIKE 'rg-smoke-%%-forgotten@example.test'")


@journey("granter-failing-midway")
def failing_midway(j: Journeyer) -> None:
    """Makes data, then a step fails: the cleanup still runs."""
    j.clean_up_by_prefix()
    with j.step("scrape"):
        start = j.url("/portal/grants?page=1")
        j.expect(j.http.post("/scraper/runs", json={"start_url": start, "label": j.prefix}), 201, "scrape")
    with j.step("search for something that is not there"):
        body = j.expect(j.http.get("/search", params={"query": j.prefix}), 200, "search")
        j.check.equals("grants found", body["total"], 0)


def test_a_failing_step_fails_the_journey_and_its_data_is_still_cleaned_up(env, check, records) -> None:
    with pytest.raises(GateFailure, match=r"grants found: 12 == 0: fail"):
        run_journey(
            "granter-failing-midway", with_journeys(env, **{"granter-failing-midway": GRANTER}), check
        )

    text = lines(records)
    assert "granter-failing-midway step 2: search for something that is not there:" in text
    step = next(r for r in records if r.check.endswith("search for something that is not there"))
    assert step.verdict is Verdict.FAIL and step.unit == "ms"
    assert "test data left after cleanup" in text and "0 == 0: pass" in text
    assert smoke_data(env) == {"users": 0, "grants": 0, "extractions": 0}


def test_a_journey_that_makes_data_without_a_leak_check_fails(env, check) -> None:
    unchecked = with_journeys(env, **{"granter-failing-midway": {**GRANTER, "leak_check_path": None}})
    with pytest.raises(
        GateFailure, match=r"no leak check: set smoke\.journeys\.granter-failing-midway\.leak_check_path"
    ):
        run_journey("granter-failing-midway", unchecked, check)
    assert smoke_data(env)["grants"] == 0, "the cleanup ran"


def test_the_scraper_reads_only_pages_on_loopback(env) -> None:
    import httpx

    answer = httpx.post(
        f"{env.platform.url}/granter/scraper/runs",
        json={"start_url": "http://example.com/grants", "label": "rg-smoke-test"},
        timeout=5,
    )
    assert answer.status_code == 422 and "never the internet" in answer.json()["error"]


def test_an_unreachable_system_is_one_line_naming_its_url(env, check) -> None:
    closed = with_journeys(env, **{"release-manager": {"base_url": "http://127.0.0.1:9", "metrics": ["x"]}})
    with pytest.raises(
        ProbeError, match=r"release-manager journey at http://127.0.0.1:9/health: connection refused"
    ):
        run_journey("release-manager", closed, check)


def test_a_journey_the_environment_does_not_configure_or_nobody_wrote_is_a_config_error(env, check) -> None:
    with pytest.raises(ConfigError, match="configures no journey 'summit'"):
        run_journey("summit", with_journeys(env), check)
    with pytest.raises(ConfigError, match=r"no journey named 'nobody-wrote-this'.*known: .*granter"):
        run_journey("nobody-wrote-this", with_journeys(env, **{"nobody-wrote-this": {}}), check)


def test_the_granters_test_data_needs_the_admin_token(env) -> None:
    import httpx

    url = f"{env.platform.url}/granter/test-data?prefix=rg-smoke-abc"
    assert httpx.get(url, timeout=5).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).json() == {
        "users": [],
        "grants": [],
        "extractions": [],
    }
    assert (
        httpx.delete(
            url.replace("rg-smoke-abc", "customer"), headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
        ).status_code
        == 422
    )
