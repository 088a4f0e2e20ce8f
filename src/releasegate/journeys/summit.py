"""Summit MVP-4 GA deployment guide, 6.1 "Smoke Tests" (its manual list, a step each) and 6.2
"Health Checks" (``health_paths``: API, database, policy engine).

The journey makes its own users and entities through Summit's test-data endpoints
(``/test-data/users``, ``/test-data/entities``, with ``token`` when set), named with the run's
prefix, and sweeps them by ``cleanup_path``. The audit trail is append-only: this run's events
stay, and since its actors carry the prefix no other run ever reads them. It needs nothing of a
new release, so the rollback's verification runs it on the previous one too.

The helpers below (accounts, entities, the audit trail) serve the critical path journey too
(``summit_critical_path.py``, GA 6.4).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from releasegate.journeys.base import Journeyer, journey
from releasegate.redaction import register_secret

UP = ("healthy", "connected")
DEFAULT_HEALTH = ["/health", "/health/db", "/health/policy"]
_LATENCY = re.compile(r"^\s*([\d.]+)\s*ms\s*$")


@dataclass
class Account:
    id: str
    password: str
    token: str | None = None


@journey("summit")
def summit(j: Journeyer) -> None:
    """Summit: log in, read a permitted entity, be denied a restricted one, a high-risk
    operation waits for approval, the audit trail has each action; then the health checks."""
    j.clean_up_by_prefix()
    with j.step("test data: an analyst cleared S, an entity at C and one at TS"):
        analyst = make_user(j, "analyst", clearances=["S"], roles=["analyst"])
        permitted = make_entity(j, "permitted", "C")
        restricted = make_entity(j, "restricted", "TS")
    with j.step("user can log in"):
        token = log_in(j, analyst)
    with j.step("user can read permitted entities"):
        body = j.expect(j.http.get(f"/entities/{permitted}", token=token), 200, f"S reads {permitted} (C)")
        j.check.equals("the entity read", json_object(body).get("id"), permitted)
    with j.step("user is denied access to restricted entities"):
        body = json_object(
            j.expect(j.http.get(f"/entities/{restricted}", token=token), 403, f"S reads {restricted} (TS)")
        )
        j.check.equals("the policy's decision on the restricted entity", body.get("decision"), "DENY")
        version = j.check.present("the policy version that decided", body.get("policyVersion"))
    with j.step("high-risk operation triggers approval workflow"):
        body = j.expect(j.http.delete(f"/entities/{permitted}", token=token), 202, f"delete {permitted}")
        approval = json_object(json_object(body).get("approval"))
        j.check.equals("the approval's operation", approval.get("operation"), "entity.delete")
        j.check.equals("the approval's status", approval.get("status"), "pending")
        asked = j.expect(j.http.get(f"/approvals/{approval.get('id')}", token=token), 200, "the approval")
        j.check.equals(
            "the approval, asked again",
            json_object(json_object(asked).get("approval")).get("status"),
            "pending",
        )
        j.expect(j.http.get(f"/entities/{permitted}", token=token), 200, "the entity, until someone approves")
    with j.step("audit trail records all actions"):
        expect_audit(
            j,
            {"actor": analyst.id},
            [
                ("auth.login", analyst.id, "FAILURE"),  # the wrong password first
                ("auth.login", analyst.id, "SUCCESS"),
                ("entity.read", permitted, "ALLOW"),
                ("entity.read", restricted, "DENY"),
                ("entity.delete", permitted, "REQUIRE_APPROVAL"),
                ("entity.read", permitted, "ALLOW"),
            ],
            policy_version=version,
        )
    with j.step("health checks: API, database, policy engine"):
        for path in j.settings.health_paths or DEFAULT_HEALTH:
            _probe(j, path, version)


# -- what both Summit journeys do -------------------------------------------------------------------


def make_user(j: Journeyer, kind: str, *, clearances: list[str], roles: list[str]) -> Account:
    """A user of this run (``rg-smoke-<id>-<kind>``), made through the test-data endpoint."""
    account = Account(j.unique(kind), secrets.token_urlsafe(16))
    register_secret(account.password)
    body = {"id": account.id, "password": account.password, "clearances": clearances, "roles": roles}
    made = j.expect(
        j.http.post("/test-data/users", json=body, token=j.admin_token()),
        201,
        f"test data: user {account.id} cleared {'/'.join(clearances) or 'nothing'}, roles {', '.join(roles)}",
    )
    j.check.equals(f"{account.id}: clearances", json_object(made).get("clearances"), clearances)
    return account


def make_entity(j: Journeyer, kind: str, classification: str) -> str:
    """An entity of this run classified ``classification``, made through the test-data endpoint
    (no policy: the journey's user may not be allowed to)."""
    entity = j.unique(kind)
    body = {"id": entity, "name": f"smoke test {kind}", "classification": classification}
    j.expect(
        j.http.post("/test-data/entities", json=body, token=j.admin_token()),
        201,
        f"test data: entity {entity} ({classification})",
    )
    return entity


def log_in(j: Journeyer, account: Account) -> str:
    """A wrong password is refused; the right one answers a session token (masked from now on)."""
    j.expect(
        j.http.post("/auth/login", json={"username": account.id, "password": account.password + "x"}),
        401,
        f"{account.id} logs in with a wrong password",
    )
    body = json_object(
        j.expect(
            j.http.post("/auth/login", json={"username": account.id, "password": account.password}),
            200,
            f"{account.id} logs in",
        )
    )
    token = body.get("token")
    j.check.holds(f"{account.id}: login answered a token", isinstance(token, str) and bool(token))
    register_secret(token)
    account.token = token
    me = json_object(j.expect(j.http.get("/auth/me", token=token), 200, "GET /auth/me with the token"))
    j.check.equals("/auth/me returns the user", me.get("id"), account.id)
    return token


def expect_audit(
    j: Journeyer,
    query: dict[str, str],
    expected: list[tuple[str, str, str]],
    *,
    policy_version: str | None = None,
) -> list[dict[str, Any]]:
    """The audit events of ``query`` (``{"actor": id}`` or ``{"resource": id}``), in order, are
    exactly ``expected``: (action, resource (an actor's trail) or actor (a resource's), decision)
    each; the policy's decisions name ``policy_version`` when given."""
    what = ", ".join(f"{k} {v}" for k, v in query.items())
    by = "resource" if "actor" in query else "actor"
    body = json_object(
        j.expect(j.http.get("/audit", params=query, token=j.admin_token()), 200, f"audit of {what}")
    )
    events = [e for e in body.get("events") or [] if isinstance(e, dict)]
    seen = [f"{e.get('action')} {e.get(by)}: {e.get('decision')}" for e in events]
    for number, (action, subject, decision) in enumerate(expected, 1):
        event = events[number - 1] if number <= len(events) else None
        # the decision when the event is the one expected there; else what is there instead
        found = None if event is None else seen[number - 1]
        if event is not None and (event.get("action"), event.get(by)) == (action, subject):
            found = event.get("decision")
        j.check.equals(f"audit of {what}: event {number}, {action} {subject}", found, decision)
    j.check.equals(
        f"audit of {what}: events recorded",
        len(events),
        len(expected),
        detail="; ".join(seen[len(expected) :]),
    )
    if policy_version is not None:
        decided = [e for e in events if e.get("decision") in ("ALLOW", "DENY", "REQUIRE_APPROVAL")]
        versions = sorted({str(e.get("policyVersion")) for e in decided})
        j.check.equals(f"audit of {what}: the policy version of each decision", versions, [policy_version])
    return events


def _probe(j: Journeyer, path: str, policy_version: str | None) -> None:
    """GA 6.2: healthy (or connected), with the version, latency or bundle it reports."""
    answer = j.http.get(j.url(path))
    body = json_object(j.expect(answer, 200, path))
    status = body.get("status")
    j.check.holds(f"{path}: {'/'.join(UP)}", status in UP, source=answer.source, detail=str(status))
    if "latency" in body:
        latency = _LATENCY.match(str(body["latency"]))
        j.check.record(
            f"{path}: latency Summit reports",
            float(latency.group(1)) if latency else None,
            unit="ms",
            source=answer.source,
            detail=str(body["latency"]),
        )
    if "bundleVersion" in body and policy_version is not None:
        j.check.equals(
            f"{path}: the bundle loaded is the one that decided",
            body["bundleVersion"],
            policy_version,
            source=answer.source,
        )
    elif "version" in body:
        j.check.present(f"{path}: version", body["version"], source=answer.source)


def json_object(body: Any) -> dict[str, Any]:
    """An answer's JSON object, or {} (its checks then fail with no data, never crash)."""
    return body if isinstance(body, dict) else {}
