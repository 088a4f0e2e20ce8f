"""The sandbox's Summit and its journeys against a real sandbox (PostgreSQL, nginx, three
instances of the demo service): the bundle API the policy deployment and rollback use, the
policy decisions as a client gets them, the two Summit journeys on 1.0.0 under each bundle,
and what they leave behind.

Its admin token is set here (``SUMMIT_ADMIN_TOKEN``), as a real Summit's would be, so the
journeys use the configured ``token = "${...}"`` for test data and the audit trail.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from gate_runs import CRITICAL_PATH_STEPS, environment, lines
from sandbox_env import running_sandbox, write_sandbox_env

from releasegate.config import Environment, SmokeSettings
from releasegate.evidence import GateFailure
from releasegate.journeys import Journeyer, journey, run_journey
from releasegate.platforms import make_platform
from sandbox import stack
from sandbox.releases import policy_bundle

pytestmark = pytest.mark.integration

TOKEN_VAR = "RG_TEST_SUMMIT_TOKEN"
TOKEN = "summit-admin-t0ken-for-the-summit-tests"
GA_EXAMPLE = {
    "action": "entity.read",
    "user": {"id": "test-user", "clearances": ["TS"]},
    "resource": {"id": "test-entity", "classification": "S"},
}


@pytest.fixture(scope="module")
def env(module_sandbox_dir: Path) -> Iterator[Environment]:
    path = write_sandbox_env(
        module_sandbox_dir,
        metrics=None,
        **{
            "platform.local.secret_env": {"SUMMIT_ADMIN_TOKEN": "${" + TOKEN_VAR + "}"},
            "smoke.journeys.summit.token": "${" + TOKEN_VAR + "}",
            "smoke.journeys.summit-critical-path.token": "${" + TOKEN_VAR + "}",
        },
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(TOKEN_VAR, TOKEN)  # before the sandbox starts: its instances read it
        with running_sandbox(path) as env_file:
            yield environment(env_file)


class Summit:
    """The sandbox's Summit as a client reaches it, through nginx, with or without the token."""

    def __init__(self, env: Environment) -> None:
        self.url = f"{env.platform.url}/summit"

    def __call__(self, method: str, path: str, *, token: str | None = TOKEN, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.request(method, self.url + path, headers=headers, timeout=5, **kw)

    def put_bundle(self, release: str) -> httpx.Response:
        return self("PUT", "/v1/policy/bundles/main", content=policy_bundle(release).read_bytes())


@pytest.fixture
def summit(env: Environment) -> Iterator[Summit]:
    """The client; 1.0.0's bundle is active again afterwards, whatever a test activated."""
    client = Summit(env)
    yield client
    assert client.put_bundle("1.0.0").status_code == 200


def rows(env: Environment, sql: str, *args: Any) -> list[tuple]:
    with psycopg.connect(env.database.dsn) as conn:
        return conn.execute(sql, args).fetchall()


def smoke_data(env: Environment) -> dict[str, int]:
    """Rows carrying any journey prefix, table by table, as psql shows them."""
    tables = {
        "users": "summit_users WHERE id",
        "sessions": "summit_sessions WHERE user_id",
        "entities": "summit_entities WHERE id",
        "approvals": "summit_approvals WHERE requested_by",
    }
    return {
        kind: rows(env, f"SELECT count(*) FROM {t} LIKE 'rg-smoke-%%'")[0][0] for kind, t in tables.items()
    }


def test_up_activates_the_bundle_1_0_0_ships_read_from_its_file(env, summit) -> None:
    shipped = json.loads(policy_bundle("1.0.0").read_text())

    answer = summit("GET", "/v1/policy/bundles/main")

    assert answer.status_code == 200
    body = answer.json()
    assert body.pop("activated_at").endswith("Z")
    assert body == shipped, "the document as the release ships it"
    assert summit("GET", "/health/policy", token=None).json() == {
        "status": "healthy",
        "bundleVersion": "v1.0.0",
    }
    assert summit("GET", "/health", token=None).json() == {"status": "healthy", "version": "1.0.0"}
    assert summit("GET", "/health/db", token=None).json()["status"] == "connected"


def test_the_ga_guides_policy_check_answers_allow_with_the_bundles_version(summit) -> None:
    answer = summit("POST", "/v1/policy/evaluate", json=GA_EXAMPLE)

    assert answer.status_code == 200
    assert answer.json() == {
        "approved": True,
        "decision": "ALLOW",
        "policyVersion": "v1.0.0",
        "reason": "entity.read allowed: clearance TS >= classification S (allow rule 1)",
    }
    high_risk = {**GA_EXAMPLE, "action": "entity.delete"}
    assert summit("POST", "/v1/policy/evaluate", json=high_risk).json()["decision"] == "REQUIRE_APPROVAL"
    assert summit("POST", "/v1/policy/evaluate", json=high_risk).json()["approved"] is False
    malformed = summit("POST", "/v1/policy/evaluate", json={**GA_EXAMPLE, "user": {"id": "u"}})
    assert malformed.status_code == 422 and "user.clearances" in malformed.json()["error"]
    assert summit("POST", "/v1/policy/evaluate", content=b"{not json").status_code == 422


def test_policy_and_test_data_need_the_admin_token_when_it_is_set(summit) -> None:
    for method, path, body in [
        ("POST", "/v1/policy/evaluate", GA_EXAMPLE),
        ("GET", "/v1/policy/bundles/main", None),
        ("PUT", "/v1/policy/bundles/main", json.loads(policy_bundle("2.0.0").read_text())),
        ("GET", "/audit?actor=test-user", None),
        ("GET", "/test-data?prefix=rg-smoke-abc", None),
        ("POST", "/test-data/users", {"id": "rg-smoke-abc-user", "password": "long-enough"}),
    ]:
        for token in (None, "not-the-token"):
            answer = summit(method, path, json=body, token=token)
            assert answer.status_code == 401, (method, path, token)
            assert "needs the admin token" in answer.json()["error"]
    assert summit("GET", "/health/policy", token=None).json()["bundleVersion"] == "v1.0.0", (
        "no PUT got through"
    )


def test_a_bundle_put_becomes_the_active_one_for_every_instance_and_the_previous_one_comes_back(
    env, summit
) -> None:
    activated = summit.put_bundle("2.0.0")

    assert activated.status_code == 200
    body = activated.json()
    assert (body["name"], body["version"]) == ("main", "v2.0.0") and body["activated_at"].endswith("Z")
    assert summit("GET", "/v1/policy/bundles/main").json()["activated_at"] == body["activated_at"]
    for instance in make_platform(env).status().instances:  # each asked directly, not through nginx
        health = httpx.get(f"{instance.url}/summit/health/policy", timeout=5).json()
        assert health == {"status": "healthy", "bundleVersion": "v2.0.0"}, instance.url
    export = {**GA_EXAMPLE, "action": "entity.export"}
    assert summit("POST", "/v1/policy/evaluate", json=export).json()["decision"] == "REQUIRE_APPROVAL"
    assert rows(env, "SELECT version FROM summit_policy_bundles WHERE active") == [("v2.0.0",)]

    rolled_back = summit.put_bundle("1.0.0")  # the policy rollback: the previous bundle again

    assert rolled_back.json()["version"] == "v1.0.0"
    assert summit("POST", "/v1/policy/evaluate", json=export).json()["decision"] == "DENY"
    history = [r[0] for r in rows(env, "SELECT version FROM summit_policy_bundles ORDER BY id")]
    assert history[-3:] == ["v1.0.0", "v2.0.0", "v1.0.0"], "every activation is kept"
    activations = rows(env, "SELECT detail FROM summit_audit WHERE action = 'policy.activate' ORDER BY id")
    assert activations[-1] == ("replaces v2.0.0",)


def test_a_malformed_bundle_is_refused_with_the_reason_and_changes_nothing(env, summit) -> None:
    bundle = json.loads(policy_bundle("2.0.0").read_text())
    bundle["rules"]["allow"][0]["when"] = "clearance >== classification"
    for document, reason in [
        (bundle, "rules.allow[1].when: 'clearance >== classification'"),
        ({**bundle, "name": "other"}, "name: 'other' does not match the bundle's place 'main'"),
        ({**bundle, "version": ""}, "version: a non-empty string"),
    ]:
        answer = summit("PUT", "/v1/policy/bundles/main", json=document)
        assert answer.status_code == 422
        assert reason in answer.json()["error"]
    assert summit("PUT", "/v1/policy/bundles/main", content=b"{").status_code == 422
    assert rows(env, "SELECT version FROM summit_policy_bundles WHERE active") == [("v1.0.0",)]


def test_without_an_active_bundle_the_policy_engine_is_unhealthy_and_every_action_denied(env, summit) -> None:
    with psycopg.connect(env.database.dsn) as conn:
        conn.execute("UPDATE summit_policy_bundles SET active = false WHERE active")
    try:
        health = summit("GET", "/health/policy", token=None)
        assert health.status_code == 503
        assert health.json() == {"status": "unhealthy", "reason": "no active policy bundle 'main'"}
        answer = summit("POST", "/v1/policy/evaluate", json=GA_EXAMPLE).json()
        assert (answer["decision"], answer["approved"], answer["policyVersion"]) == ("DENY", False, None)
        assert summit("GET", "/v1/policy/bundles/main").status_code == 404
    finally:
        assert summit.put_bundle("1.0.0").status_code == 200


def test_the_summit_journey_passes_on_1_0_0_and_leaves_only_its_audit_events(env, check, records) -> None:
    result = run_journey("summit", env, check)

    assert [s.title for s in result.steps] == [
        "test data: an analyst cleared S, an entity at C and one at TS",
        "user can log in",
        "user can read permitted entities",
        "user is denied access to restricted entities",
        "high-risk operation triggers approval workflow",
        "audit trail records all actions",
        "health checks: API, database, policy engine",
    ]
    assert all(s.ok and s.elapsed_ms > 0 for s in result.steps)
    text = lines(records)
    for n, step in enumerate(result.steps, 1):
        assert f"summit step {n}: {step.title}: " in text
    analyst = f"{result.prefix}-analyst"
    assert (
        f"audit of actor {analyst}: event 4, entity.read {result.prefix}-restricted: DENY == DENY: pass"
        in text
    )
    assert f"audit of actor {analyst}: events recorded: 6 == 6: pass" in text
    assert "/health/policy: the bundle loaded is the one that decided: v1.0.0 == v1.0.0: pass" in text
    assert f"summit: test data left after cleanup ({result.prefix}): 0 == 0: pass" in text
    assert smoke_data(env) == {"users": 0, "sessions": 0, "entities": 0, "approvals": 0}
    kept = rows(env, "SELECT count(*) FROM summit_audit WHERE actor = %s", analyst)[0][0]
    assert kept == 6, "the audit trail is append-only: cleanup leaves the run's events"
    assert TOKEN not in text, "the admin token never reaches the evidence"


def test_the_critical_path_passes_under_2_0_0s_bundle_each_step_timed(env, summit, check, records) -> None:
    summit.put_bundle("2.0.0")

    result = run_journey("summit-critical-path", env, check)

    assert [s.title for s in result.steps] == CRITICAL_PATH_STEPS
    step = next(r for r in records if r.check.startswith("summit-critical-path step 5: "))
    assert step.unit == "ms" and step.value > 0
    text = lines(records)
    entity = f"{result.prefix}-entity"
    assert f"audit of resource {entity}: event 3, approval.approve {result.prefix}-requester: REFUSED" in text
    assert f"audit of resource {entity}: event 5, entity.delete {result.prefix}-requester: EXECUTED" in text
    assert (
        f"audit of resource {entity}: the policy version of each decision: ['v2.0.0'] == ['v2.0.0']" in text
    )
    assert smoke_data(env) == {"users": 0, "sessions": 0, "entities": 0, "approvals": 0}


def test_the_bad_policy_bundle_fails_both_journeys_at_the_denied_read_and_they_still_clean_up(
    env, summit, check
) -> None:
    assert summit.put_bundle("2.0.0-bad-policy").json()["version"] == "v2.0.0-bad-policy"

    with pytest.raises(GateFailure) as smoke:
        run_journey("summit", env, check)
    with pytest.raises(GateFailure) as critical:
        run_journey("summit-critical-path", env, check)

    assert "S reads rg-smoke-" in str(smoke.value) and "-permitted (C): HTTP status: 403 == 200: fail" in str(
        smoke.value
    )
    assert "clearance S is not == classification C" in str(smoke.value)
    assert "-entity (C): HTTP status: 403 == 201: fail" in str(critical.value)
    assert smoke_data(env) == {"users": 0, "sessions": 0, "entities": 0, "approvals": 0}


def test_approving_needs_a_second_person_with_the_approver_role(env, summit) -> None:
    prefix = "rg-smoke-approvals"
    try:
        for user, roles in (
            ("requester", ["analyst"]),
            ("colleague", ["analyst"]),
            ("approver", ["approver"]),
        ):
            body = {
                "id": f"{prefix}-{user}",
                "password": "long-enough-1",
                "clearances": ["S"],
                "roles": roles,
            }
            assert summit("POST", "/test-data/users", json=body).status_code == 201
        tokens = {
            user: summit(
                "POST",
                "/auth/login",
                token=None,
                json={"username": f"{prefix}-{user}", "password": "long-enough-1"},
            ).json()["token"]
            for user in ("requester", "colleague", "approver")
        }
        entity = {"id": f"{prefix}-doc", "name": "doc", "classification": "C"}
        assert summit("POST", "/entities", json=entity, token=tokens["requester"]).status_code == 201
        approval = summit("DELETE", f"/entities/{prefix}-doc", token=tokens["requester"]).json()["approval"]
        approve = f"/approvals/{approval['id']}/approve"

        own = summit("POST", approve, token=tokens["requester"])
        not_approver = summit("POST", approve, token=tokens["colleague"])
        anonymous = summit("POST", approve, token=None)

        assert own.status_code == 403 and "cannot approve their own request" in own.json()["error"]
        assert not_approver.status_code == 403 and "needs the role approver" in not_approver.json()["error"]
        assert anonymous.status_code == 401
        assert summit("GET", f"/entities/{prefix}-doc", token=tokens["requester"]).status_code == 200
        done = summit("POST", approve, token=tokens["approver"]).json()["approval"]
        assert (done["status"], done["result"]) == ("approved", {"deleted": f"{prefix}-doc"})
        assert summit("POST", approve, token=tokens["approver"]).status_code == 409, "once only"
        listed = summit("GET", f"/test-data?prefix={prefix}").json()
        assert listed["approvals"] == [f"{approval['id']} (entity.delete {prefix}-doc, approved)"]
        assert len(listed["sessions"]) == 3 and TOKEN not in json.dumps(listed)
        assert not any(t in json.dumps(listed) for t in tokens.values()), "sessions are named, never shown"
    finally:
        swept = summit("DELETE", f"/test-data?prefix={prefix}").json()
    assert swept["deleted"] == {"approvals": 1, "entities": 0, "sessions": 3, "users": 3}
    assert swept["kept"] == {"audit": "append-only: events are never deleted"}


def test_the_audit_trail_is_append_only(env) -> None:
    with psycopg.connect(env.database.dsn) as conn:
        conn.execute(
            "INSERT INTO summit_audit (actor, action, resource, decision) VALUES ('rg-smoke-x', 'a', 'r', 'ALLOW')"
        )
        for statement in ("DELETE FROM summit_audit", "UPDATE summit_audit SET decision = 'DENY'"):
            with (
                pytest.raises(psycopg.errors.RaiseException, match="summit_audit is append-only"),
                conn.transaction(),
            ):
                conn.execute(statement)


def test_test_data_carries_a_journeys_prefix_only(summit) -> None:
    for path, body in [
        ("/test-data/users", {"id": "alice", "password": "long-enough-1"}),
        ("/test-data/entities", {"id": "crown-jewels", "name": "x", "classification": "TS"}),
    ]:
        answer = summit("POST", path, json=body)
        assert answer.status_code == 422 and "rg-smoke-" in answer.json()["error"]
    assert summit("DELETE", "/test-data?prefix=customer").status_code == 422
    assert summit("DELETE", "/test-data?prefix=rg-smoke-%25").status_code == 422


@journey("leaky-summit")
def leaky_summit(j: Journeyer) -> None:
    """Makes a user, logs in, and forgets to clean up."""
    with j.step("make a user and log in"):
        user = j.unique("forgotten")
        body = {"id": user, "password": "long-enough-1", "clearances": ["U"], "roles": []}
        j.expect(j.http.post("/test-data/users", json=body, token=j.admin_token()), 201, "make a user")
        login = {"username": user, "password": "long-enough-1"}
        j.expect(j.http.post("/auth/login", json=login), 200, "log in")


def test_a_summit_journey_that_leaks_fails_naming_the_user_and_its_session(env, summit, check) -> None:
    leaky = env.model_copy(
        update={"smoke": SmokeSettings(journeys={"leaky-summit": env.smoke.journeys["summit"]})}
    )
    with pytest.raises(GateFailure) as failure:
        run_journey("leaky-summit", leaky, check)

    message = str(failure.value)
    prefix = message.split("leaky-summit journey (", 1)[1].split(")", 1)[0]
    assert f"leaked test data: sessions: session of {prefix}-forgotten, users: {prefix}-forgotten" in message
    summit("DELETE", f"/test-data?prefix={prefix}")
    assert smoke_data(env)["users"] == 0


def test_health_says_unhealthy_when_summits_database_is_down(env) -> None:
    """Last: it stops the module's PostgreSQL."""
    stack.load(env).postgres.stop()
    url = f"{env.platform.url}/summit"

    health, db, policy = (
        httpx.get(url + path, timeout=10) for path in ("/health", "/health/db", "/health/policy")
    )

    assert health.status_code == 503 and health.json()["status"] == "unhealthy"
    assert health.json()["error"].startswith("database: ")
    assert db.status_code == 503 and db.json()["status"] == "disconnected"
    assert policy.status_code == 503 and policy.json()["reason"].startswith("database: ")
