"""The sandbox's Summit: what the Summit GA guide's policy deployment (4.1, 5.1, 7.2), smoke
tests (6.1), health checks (6.2) and critical user journey (6.4) need, over the sandbox's
PostgreSQL (tables from ``seed_summit.sql``), so every instance of the demo service agrees.
Served by the demo service under ``/summit`` (a real Summit answers at its own host's root).

Health (6.2):

- ``GET /health``: ``{"status": "healthy", "version": "<release>"}``; 503 ``unhealthy`` when
  its database is not reachable;
- ``GET /health/db``: ``{"status": "connected", "latency": "1.2ms"}`` (a timed query);
- ``GET /health/policy``: ``{"status": "healthy", "bundleVersion": "v1.0.0"}``; 503
  ``{"status": "unhealthy", "reason": ...}`` when no valid bundle is active.

Policy (4.1, 5.1, 7.2), each needing the bearer token ``SUMMIT_ADMIN_TOKEN`` when it is set:

- ``POST /v1/policy/evaluate`` ``{"action": "entity.read", "user": {"id", "clearances": ["TS"]},
  "resource": {"id", "classification": "S"}}`` -> ``{"approved": true, "decision": "ALLOW",
  "policyVersion": "v1.0.0", "reason": ...}`` (``approved`` is false for DENY and
  REQUIRE_APPROVAL); 422 on a malformed request;
- ``GET /v1/policy/bundles/main``: the active bundle as it was uploaded, plus ``activated_at``;
- ``PUT /v1/policy/bundles/main`` with a bundle (sandbox.policy says what one is): validated
  (422 with the reason), then made the active one in one transaction -> ``{"name", "version",
  "activated_at"}``. Every bundle activated stays in the table; a policy rollback is the PUT of
  the previous one. Evaluations read the active bundle from the database on every request.

Users and what they do, each decision taken by the active bundle (sandbox.policy):

- ``POST /auth/login {"username", "password"}`` -> ``{"token", "user": {"id", "clearances",
  "roles"}}``; ``GET /auth/me`` with the token;
- ``POST /entities {"id", "name", "classification"}`` (``entity.create``);
  ``GET /entities/{id}`` (``entity.read``): 200, 403 ``{"decision": "DENY", "reason", ...}`` or
  404; ``DELETE /entities/{id}`` (``entity.delete``) and ``POST /entities/{id}/export``
  (``entity.export``, a rule of 2.0.0's bundle);
- a high-risk action answers 202 ``{"approval": {"id", "status": "pending", "operation",
  "resource", ...}}``; ``GET /approvals/{id}``; ``POST /approvals/{id}/approve`` by a logged-in
  user with the role ``approver`` who is not the requester carries the operation out (the
  approval is then ``approved``, or ``failed`` with what went wrong); the requester approving
  their own request is 403;
- ``GET /audit?actor=ID`` or ``?resource=ID`` (admin token when set): ``{"events": [{"at",
  "actor", "action", "resource", "decision", "policyVersion", "detail"}]}``. Every login,
  evaluation, read, create, delete or export request, approval and bundle activation appends
  one. The trail is append-only (a trigger refuses UPDATE and DELETE): test-data cleanup does
  not remove a journey's events, and the leak check does not list them.

Test data (admin token when set), ids carrying a journey's prefix ``rg-smoke-...`` only:
``POST /test-data/users {"id", "password", "clearances", "roles"}``, ``POST /test-data/entities
{"id", "name", "classification"}`` (no policy: a journey makes entities its user may not
read), and ``GET|DELETE /test-data?prefix=rg-smoke-...`` listing or removing the users,
sessions, entities and approvals of that prefix.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Json
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sandbox.policy import (
    ALLOW,
    BUNDLE_NAME,
    DENY,
    LEVELS,
    REQUIRE_APPROVAL,
    BundleError,
    Decision,
    RequestError,
    evaluate,
    parse_request,
    validate_bundle,
)
from sandbox.web import (
    TEST_PREFIX,
    admin_only,
    bearer,
    error,
    first_line,
    hash_password,
    read_json,
    select_one_ms,
    timestamp,
    verify_password,
)

MAIN = "main"
"""The bundle evaluations use (GA 4.1: "Bundle 'main' loaded successfully")."""
ENTITY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ROLE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
APPROVER = "approver"
ADMIN = "admin"
"""The actor of the audit events the admin token's holder causes (bundle activations)."""
AUDIT_LIMIT = 1000
LOGGED_IN, LOGIN_FAILED, REFUSED = "SUCCESS", "FAILURE", "REFUSED"
"""Audit decisions that are not the policy's: a login's outcome, an approval refused (four eyes).
The policy's are ALLOW, DENY and REQUIRE_APPROVAL; an approval's APPROVED, then EXECUTED or
FAILED; a missing entity's NOT_FOUND; a bundle's activation ACTIVATED."""
ENTITY_COLUMNS = "id, name, classification, created_by, created_at"
APPROVAL_COLUMNS = (
    "id, operation, resource, entity, requested_by, policy_version, status, approved_by, result, "
    "requested_at, decided_at"
)

Operation = Callable[[psycopg.AsyncConnection[Any], dict[str, Any]], Awaitable[tuple[int, dict[str, Any]]]]


class Summit:
    def __init__(self, pool: AsyncConnectionPool, version: str) -> None:
        self.pool = pool
        self.version = version
        self.admin_token = os.environ.get("SUMMIT_ADMIN_TOKEN") or None
        self.operations: dict[str, Operation] = {
            "entity.read": _read,
            "entity.create": _create,
            "entity.delete": _delete,
            "entity.export": _export,
        }

    def routes(self) -> list[Route]:
        return [
            Route("/health", self.health),
            Route("/health/db", self.health_db),
            Route("/health/policy", self.health_policy),
            Route("/v1/policy/evaluate", self.evaluate, methods=["POST"]),
            Route("/v1/policy/bundles/{name}", self.get_bundle, methods=["GET"]),
            Route("/v1/policy/bundles/{name}", self.put_bundle, methods=["PUT"]),
            Route("/auth/login", self.login, methods=["POST"]),
            Route("/auth/me", self.me),
            Route("/entities", self.create_entity, methods=["POST"]),
            Route("/entities/{entity_id}", self.read_entity, methods=["GET"]),
            Route("/entities/{entity_id}", self.delete_entity, methods=["DELETE"]),
            Route("/entities/{entity_id}/export", self.export_entity, methods=["POST"]),
            Route("/approvals/{approval_id}", self.get_approval),
            Route("/approvals/{approval_id}/approve", self.approve, methods=["POST"]),
            Route("/audit", self.audit),
            Route("/test-data", self.test_data, methods=["GET", "DELETE"]),
            Route("/test-data/users", self.make_user, methods=["POST"]),
            Route("/test-data/entities", self.make_entity, methods=["POST"]),
        ]

    # -- health (GA 6.2) ----------------------------------------------------------------------------

    async def health(self, _request: Request) -> JSONResponse:
        try:
            async with self.pool.connection(timeout=2.0) as conn:
                await conn.execute("SELECT 1 FROM summit_users LIMIT 1")
        except (PoolTimeout, psycopg.Error) as exc:
            body = {"status": "unhealthy", "version": self.version, "error": f"database: {first_line(exc)}"}
            return JSONResponse(body, status_code=503)
        return JSONResponse({"status": "healthy", "version": self.version})

    async def health_db(self, _request: Request) -> JSONResponse:
        try:
            latency_ms = await select_one_ms(self.pool)
        except (PoolTimeout, psycopg.Error) as exc:
            return JSONResponse({"status": "disconnected", "error": first_line(exc)}, status_code=503)
        return JSONResponse({"status": "connected", "latency": f"{latency_ms:.1f}ms"})

    async def health_policy(self, _request: Request) -> JSONResponse:
        try:
            async with self.pool.connection(timeout=2.0) as conn:
                bundle, problem = await _active_bundle(conn, MAIN)
        except (PoolTimeout, psycopg.Error) as exc:
            bundle, problem = None, f"database: {first_line(exc)}"
        if bundle is None:
            return JSONResponse({"status": "unhealthy", "reason": problem}, status_code=503)
        return JSONResponse({"status": "healthy", "bundleVersion": bundle["version"]})

    # -- policy (GA 4.1, 5.1, 7.2) ------------------------------------------------------------------

    @admin_only("policy evaluation")
    async def evaluate(self, request: Request) -> JSONResponse:
        try:
            asked = parse_request(await request.json())
        except ValueError as exc:  # RequestError, or a body that is not JSON
            return error(422, str(exc) if isinstance(exc, RequestError) else "the body is not JSON")
        async with self.pool.connection() as conn:
            decision = await _decide(conn, asked.action, asked.clearances, asked.classification)
            await _audit(conn, asked.user_id, "policy.evaluate", asked.resource_id, decision, asked.action)
        return JSONResponse(decision.body())

    @admin_only("policy bundles")
    async def get_bundle(self, request: Request) -> JSONResponse:
        name = request.path_params["name"]
        async with self.pool.connection() as conn:
            row = await _one(
                conn,
                "SELECT document, activated_at FROM summit_policy_bundles WHERE name = %s AND active",
                [name],
            )
        if row is None:
            return error(404, f"no active policy bundle {name!r}")
        return JSONResponse({**row["document"], "activated_at": timestamp(row["activated_at"])})

    @admin_only("policy bundles")
    async def put_bundle(self, request: Request) -> JSONResponse:
        name = request.path_params["name"]
        if not BUNDLE_NAME.match(name):
            return error(404, f"{name!r} is not a bundle name (lowercase letters, digits, '-')")
        try:
            bundle = validate_bundle(await request.json(), name)
        except ValueError as exc:  # BundleError, or a body that is not JSON
            return error(422, str(exc) if isinstance(exc, BundleError) else "the body is not JSON")
        async with self.pool.connection() as conn, conn.transaction():
            # One activation at a time per name: the unique index allows one active bundle.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", [f"summit_policy_bundles:{name}"]
            )
            previous = await _one(
                conn, "SELECT version FROM summit_policy_bundles WHERE name = %s AND active", [name]
            )
            await conn.execute(
                "UPDATE summit_policy_bundles SET active = false WHERE name = %s AND active", [name]
            )
            row = await _one(
                conn,
                "INSERT INTO summit_policy_bundles (name, version, document, active) "
                "VALUES (%s, %s, %s, true) RETURNING activated_at",
                [name, bundle["version"], Json(bundle)],
            )
            replaced = f"replaces {previous['version']}" if previous else "the first bundle"
            activated = Decision("ACTIVATED", replaced, bundle["version"])
            await _audit(conn, ADMIN, "policy.activate", f"bundle:{name}", activated, "")
        assert row is not None
        return JSONResponse(
            {"name": name, "version": bundle["version"], "activated_at": timestamp(row["activated_at"])}
        )

    # -- users ------------------------------------------------------------------------------------

    async def login(self, request: Request) -> JSONResponse:
        body = await read_json(request)
        username, password = str(body.get("username") or "")[:128], str(body.get("password") or "")
        async with self.pool.connection() as conn:
            user = await _one(
                conn,
                "SELECT id, password_hash, clearances, roles FROM summit_users WHERE id = %s",
                [username],
            )
            if user is None or not verify_password(password, user["password_hash"]):
                refused = Decision(LOGIN_FAILED, "wrong username or password", None)
                await _audit(conn, username or "(none)", "auth.login", username, refused, "")
                return error(401, "wrong username or password")
            token = secrets.token_urlsafe(24)
            await conn.execute(
                "INSERT INTO summit_sessions (token, user_id) VALUES (%s, %s)", [token, username]
            )
            await _audit(conn, username, "auth.login", username, Decision(LOGGED_IN, "password", None), "")
        return JSONResponse({"token": token, "user": _user_body(user)})

    async def me(self, request: Request) -> JSONResponse:
        async with self.pool.connection() as conn:
            user = await _session_user(conn, request)
        return JSONResponse(_user_body(user)) if user else error(401, "not logged in")

    # -- entities: every action decided by the active bundle -----------------------------------------

    async def create_entity(self, request: Request) -> JSONResponse:
        entity = _entity_fields(await read_json(request))
        if isinstance(entity, str):
            return error(422, entity)
        async with self.pool.connection() as conn:
            user = await _session_user(conn, request)
            if user is None:
                return error(401, "not logged in")
            return await self._guarded(conn, user, "entity.create", {**entity, "created_by": user["id"]})

    async def read_entity(self, request: Request) -> JSONResponse:
        return await self._on_entity(request, "entity.read")

    async def delete_entity(self, request: Request) -> JSONResponse:
        return await self._on_entity(request, "entity.delete")

    async def export_entity(self, request: Request) -> JSONResponse:
        return await self._on_entity(request, "entity.export")

    async def _on_entity(self, request: Request, action: str) -> JSONResponse:
        entity_id = request.path_params["entity_id"]
        async with self.pool.connection() as conn:
            user = await _session_user(conn, request)
            if user is None:
                return error(401, "not logged in")
            entity = await _entity(conn, entity_id)
            if entity is None:
                missing = Decision("NOT_FOUND", f"no entity {entity_id}", None)
                await _audit(conn, user["id"], action, entity_id, missing, "")
                return error(404, f"no entity {entity_id}")
            return await self._guarded(conn, user, action, entity)

    async def _guarded(
        self, conn: psycopg.AsyncConnection[Any], user: dict[str, Any], action: str, entity: dict[str, Any]
    ) -> JSONResponse:
        """The bundle's decision on ``action``, audited with what came of it: done (ALLOW), an
        approval to wait for (REQUIRE_APPROVAL) or refused (DENY, 403)."""
        async with conn.transaction():
            decision = await _decide(conn, action, user["clearances"], entity["classification"])
            verdict = {k: v for k, v in decision.body().items() if k != "approved"}
            if decision.decision == ALLOW:
                status, body = await self.operations[action](conn, entity)
                outcome = "" if status < 400 else f"answered {status}: {body.get('error')}"
                await _audit(conn, user["id"], action, entity["id"], decision, outcome)
                return JSONResponse(body, status_code=status)
            await _audit(conn, user["id"], action, entity["id"], decision, "")
            if decision.decision == REQUIRE_APPROVAL:
                approval = await _one(
                    conn,
                    "INSERT INTO summit_approvals (id, operation, resource, entity, requested_by, policy_version) "
                    f"VALUES (%s, %s, %s, %s, %s, %s) RETURNING {APPROVAL_COLUMNS}",
                    [
                        f"apr-{secrets.token_hex(6)}",
                        action,
                        entity["id"],
                        Json(_jsonable(entity)),
                        user["id"],
                        decision.policy_version,
                    ],
                )
                assert approval is not None
                return JSONResponse({"approval": _approval_body(approval), **verdict}, status_code=202)
            return JSONResponse(verdict, status_code=403)

    # -- approvals (four eyes) --------------------------------------------------------------------

    async def get_approval(self, request: Request) -> JSONResponse:
        async with self.pool.connection() as conn:
            if await _session_user(conn, request) is None:
                return error(401, "not logged in")
            approval = await _approval(conn, request.path_params["approval_id"])
        if approval is None:
            return error(404, f"no approval {request.path_params['approval_id']}")
        return JSONResponse({"approval": _approval_body(approval)})

    async def approve(self, request: Request) -> JSONResponse:
        """A second person agrees: the operation is carried out as it was requested."""
        approval_id = request.path_params["approval_id"]
        async with self.pool.connection() as conn:
            user = await _session_user(conn, request)
            if user is None:
                return error(401, "not logged in")
            async with conn.transaction():
                approval = await _approval(conn, approval_id, lock=True)
                if approval is None:
                    return error(404, f"no approval {approval_id}")
                refusal = _approval_refusal(user, approval)
                if refusal is not None:
                    denied = Decision(REFUSED, refusal, None)
                    await _audit(
                        conn, user["id"], "approval.approve", approval["resource"], denied, approval_id
                    )
                    return error(403, refusal)
                if approval["status"] != "pending":
                    return error(409, f"approval {approval_id} is {approval['status']}, not pending")
                status, result = await self.operations[approval["operation"]](conn, approval["entity"])
                done = "approved" if status < 400 else "failed"
                updated = await _one(
                    conn,
                    "UPDATE summit_approvals SET status = %s, approved_by = %s, result = %s, "
                    f"decided_at = now() WHERE id = %s RETURNING {APPROVAL_COLUMNS}",
                    [done, user["id"], Json(result), approval_id],
                )
                what = f"{approval['operation']} requested by {approval['requested_by']} ({approval_id})"
                agreed = Decision("APPROVED", what, approval["policy_version"])
                await _audit(conn, user["id"], "approval.approve", approval["resource"], agreed, "")
                carried_out = Decision(
                    "EXECUTED" if done == "approved" else "FAILED",
                    f"approved by {user['id']} ({approval_id})"
                    + ("" if done == "approved" else f": {result.get('error')}"),
                    approval["policy_version"],
                )
                await _audit(
                    conn,
                    approval["requested_by"],
                    approval["operation"],
                    approval["resource"],
                    carried_out,
                    "",
                )
        assert updated is not None
        return JSONResponse({"approval": _approval_body(updated)})

    # -- the audit trail ----------------------------------------------------------------------------

    @admin_only("the audit trail")
    async def audit(self, request: Request) -> JSONResponse:
        where, args = [], []
        for column in ("actor", "resource"):
            if request.query_params.get(column):
                where.append(f"{column} = %s")
                args.append(request.query_params[column])
        if not where:
            return error(422, "filter by actor=ID or resource=ID")
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "SELECT at, actor, action, resource, decision, policy_version, detail FROM summit_audit "
                f"WHERE {' AND '.join(where)} ORDER BY id LIMIT {AUDIT_LIMIT}",
                args,
            )
            events = [_event_body(row) for row in await cur.fetchall()]
        return JSONResponse({"events": events})

    # -- test data ----------------------------------------------------------------------------------

    @admin_only("test data")
    async def make_user(self, request: Request) -> JSONResponse:
        body = await read_json(request)
        user_id, password = str(body.get("id") or ""), str(body.get("password") or "")
        clearances, roles = body.get("clearances", []), body.get("roles", [])
        if not TEST_PREFIX.match(user_id):
            return error(422, "id must look like rg-smoke-<id>-...: test data only")
        if len(password) < 8:
            return error(422, "password: 8 characters or more")
        if not isinstance(clearances, list) or not all(c in LEVELS for c in clearances):
            return error(422, f"clearances: a list of {', '.join(LEVELS)}")
        if not isinstance(roles, list) or not all(isinstance(r, str) and ROLE.match(r) for r in roles):
            return error(422, "roles: a list of names such as analyst or approver")
        try:
            async with self.pool.connection() as conn:
                user = await _one(
                    conn,
                    "INSERT INTO summit_users (id, password_hash, clearances, roles) VALUES (%s, %s, %s, %s) "
                    "RETURNING id, clearances, roles",
                    [user_id, hash_password(password), clearances, roles],
                )
        except psycopg.errors.UniqueViolation:
            return error(409, f"user {user_id} exists")
        return JSONResponse(user, status_code=201)

    @admin_only("test data")
    async def make_entity(self, request: Request) -> JSONResponse:
        entity = _entity_fields(await read_json(request))
        if isinstance(entity, str):
            return error(422, entity)
        if not TEST_PREFIX.match(entity["id"]):
            return error(422, "id must look like rg-smoke-<id>-...: test data only")
        async with self.pool.connection() as conn:
            status, body = await _create(conn, {**entity, "created_by": "test-data"})
        return JSONResponse(body, status_code=status)

    @admin_only("test data")
    async def test_data(self, request: Request) -> JSONResponse:
        """What carries a journey's prefix (GET), or its removal (DELETE); never audit events."""
        prefix = request.query_params.get("prefix", "")
        if not TEST_PREFIX.match(prefix):
            return error(422, "prefix must look like rg-smoke-<id>: test data only")
        like = [prefix + "%"]
        kinds = {  # in deletion order: what refers to a user goes before the user
            "approvals": (
                "summit_approvals",
                "resource LIKE %s OR requested_by LIKE %s",
                "id || ' (' || operation || ' ' || resource || ', ' || status || ')'",
                like * 2,
            ),
            "entities": ("summit_entities", "id LIKE %s", "id || ' (' || classification || ')'", like),
            "sessions": ("summit_sessions", "user_id LIKE %s", "'session of ' || user_id", like),
            "users": ("summit_users", "id LIKE %s", "id", like),
        }
        answer: dict[str, Any] = {}
        async with self.pool.connection() as conn, conn.transaction():
            for kind, (table, where, shown, args) in kinds.items():
                if request.method == "DELETE":
                    answer[kind] = (await conn.execute(f"DELETE FROM {table} WHERE {where}", args)).rowcount
                else:
                    cur = await conn.execute(f"SELECT {shown} FROM {table} WHERE {where} ORDER BY 1", args)
                    answer[kind] = [row[0] for row in await cur.fetchall()]
        if request.method == "DELETE":
            return JSONResponse(
                {"deleted": answer, "kept": {"audit": "append-only: events are never deleted"}}
            )
        return JSONResponse(answer)


# -- the operations an allowed or approved action carries out ------------------------------------------


async def _read(conn: psycopg.AsyncConnection[Any], entity: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    found = await _entity(conn, entity["id"])
    return (200, found) if found else (404, {"error": f"no entity {entity['id']}"})


async def _create(conn: psycopg.AsyncConnection[Any], entity: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    try:
        async with conn.transaction():  # a savepoint inside an approval's transaction
            row = await _one(
                conn,
                "INSERT INTO summit_entities (id, name, classification, created_by) VALUES (%s, %s, %s, %s) "
                f"RETURNING {ENTITY_COLUMNS}",
                [entity["id"], entity["name"], entity["classification"], entity["created_by"]],
            )
    except psycopg.errors.UniqueViolation:
        return 409, {"error": f"entity {entity['id']} exists"}
    assert row is not None
    return 201, _jsonable(row)


async def _delete(conn: psycopg.AsyncConnection[Any], entity: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    cur = await conn.execute("DELETE FROM summit_entities WHERE id = %s", [entity["id"]])
    return (200, {"deleted": entity["id"]}) if cur.rowcount else (404, {"error": f"no entity {entity['id']}"})


async def _export(conn: psycopg.AsyncConnection[Any], entity: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    status, found = await _read(conn, entity)
    return (status, {"export": {"format": "summit-entity/v1", "entity": found}} if status == 200 else found)


# -- queries ------------------------------------------------------------------------------------------


async def _active_bundle(conn: psycopg.AsyncConnection[Any], name: str) -> tuple[dict[str, Any] | None, str]:
    """The active bundle, validated again (a row written behind the API's back may be bad),
    or None and why not."""
    row = await _one(conn, "SELECT document FROM summit_policy_bundles WHERE name = %s AND active", [name])
    if row is None:
        return None, f"no active policy bundle {name!r}"
    try:
        return validate_bundle(row["document"], name), ""
    except BundleError as exc:
        return None, f"the active bundle {name!r} is invalid: {exc}"


async def _decide(
    conn: psycopg.AsyncConnection[Any], action: str, clearances: Any, classification: str
) -> Decision:
    bundle, problem = await _active_bundle(conn, MAIN)
    if bundle is None:
        return Decision(DENY, f"{action} denied: {problem}", None)
    return evaluate(bundle, action, clearances, classification)


async def _audit(
    conn: psycopg.AsyncConnection[Any],
    actor: str,
    action: str,
    resource: str | None,
    decision: Decision,
    detail: str,
) -> None:
    """Append one event: who, did what, to what, decided how, under which bundle, and why."""
    await conn.execute(
        "INSERT INTO summit_audit (actor, action, resource, decision, policy_version, detail) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        [
            actor,
            action,
            resource,
            decision.decision,
            decision.policy_version,
            "; ".join(part for part in (detail, decision.reason) if part),
        ],
    )


async def _session_user(conn: psycopg.AsyncConnection[Any], request: Request) -> dict[str, Any] | None:
    token = bearer(request)
    if not token:
        return None
    return await _one(
        conn,
        "SELECT u.id, u.clearances, u.roles FROM summit_sessions s "
        "JOIN summit_users u ON u.id = s.user_id WHERE s.token = %s",
        [token],
    )


async def _entity(conn: psycopg.AsyncConnection[Any], entity_id: str) -> dict[str, Any] | None:
    row = await _one(conn, f"SELECT {ENTITY_COLUMNS} FROM summit_entities WHERE id = %s", [entity_id])
    return _jsonable(row) if row else None


async def _approval(
    conn: psycopg.AsyncConnection[Any], approval_id: str, *, lock: bool = False
) -> dict[str, Any] | None:
    return await _one(
        conn,
        f"SELECT {APPROVAL_COLUMNS} FROM summit_approvals WHERE id = %s" + (" FOR UPDATE" if lock else ""),
        [approval_id],
    )


async def _one(conn: psycopg.AsyncConnection[Any], sql: str, args: list[Any]) -> dict[str, Any] | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(sql, args)
    return await cur.fetchone()


# -- pure parts -----------------------------------------------------------------------------------------


def _approval_refusal(user: dict[str, Any], approval: dict[str, Any]) -> str | None:
    """Why ``user`` may not approve: four eyes, and only approvers approve."""
    if user["id"] == approval["requested_by"]:
        return "the requester cannot approve their own request (a second person must)"
    if APPROVER not in user["roles"]:
        return f"approving needs the role {APPROVER}"
    return None


def _entity_fields(body: dict[str, Any]) -> dict[str, Any] | str:
    """``{"id", "name", "classification"}`` from a request, or what is wrong with it."""
    entity_id, name, classification = (body.get(k) for k in ("id", "name", "classification"))
    if not isinstance(entity_id, str) or not ENTITY_ID.match(entity_id):
        return "id: letters, digits, '.', '_' or '-', up to 128"
    if not isinstance(name, str) or not name.strip():
        return "name: a non-empty string"
    if classification not in LEVELS:
        return f"classification: one of {', '.join(LEVELS)}"
    return {"id": entity_id, "name": name.strip(), "classification": classification}


def _user_body(user: dict[str, Any]) -> dict[str, Any]:
    return {"id": user["id"], "clearances": list(user["clearances"]), "roles": list(user["roles"])}


def _approval_body(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "status": row["status"],
        "operation": row["operation"],
        "resource": row["resource"],
        "requested_by": row["requested_by"],
        "requested_at": timestamp(row["requested_at"]),
        "approved_by": row["approved_by"],
        "decided_at": timestamp(row["decided_at"]) if row["decided_at"] else None,
        "result": row["result"],
        "policyVersion": row["policy_version"],
    }


def _event_body(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "at": timestamp(row["at"]),
        "actor": row["actor"],
        "action": row["action"],
        "resource": row["resource"],
        "decision": row["decision"],
        "policyVersion": row["policy_version"],
        "detail": row["detail"],
    }


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: timestamp(v) if isinstance(v, datetime) else v for k, v in row.items()}
