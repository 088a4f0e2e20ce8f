"""What the sandbox's systems served by the demo service (Granter, Summit) share on the request
side: JSON errors, bearer tokens, password hashes, the admin token that guards test data, and
the test-data prefix. (sandbox.common is the process side: starting and stopping components.)"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

TEST_PREFIX = re.compile(r"^rg-smoke-[a-z0-9-]+$")
"""What a journey's test data is named by (``rg-smoke-<8 hex>-...``): only it may be made or
removed through the test-data endpoints."""
PBKDF2_ROUNDS = 20_000

Endpoint = Callable[[Any, Request], Awaitable[JSONResponse]]


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def bearer(request: Request) -> str:
    """The request's ``Authorization: Bearer`` token, or ""."""
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else ""


def admin_only(what: str) -> Callable[[Endpoint], Endpoint]:
    """An endpoint of a system whose ``admin_token`` (from its ``*_ADMIN_TOKEN``), when set, the
    request must carry as its bearer token: 401 ``{what} needs the admin token`` otherwise."""

    def guard(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def guarded(system: Any, request: Request) -> JSONResponse:
            token = system.admin_token
            if token and not hmac.compare_digest(bearer(request), token):
                return error(401, f"{what} needs the admin token")
            return await endpoint(system, request)

        return guarded

    return guard


async def read_json(request: Request) -> dict[str, Any]:
    """The request's JSON object; {} for anything else (each endpoint says what it expected)."""
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def hash_password(password: str) -> str:
    salt = secrets.token_hex(8)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), PBKDF2_ROUNDS).hex()
    return f"{salt}${digest}"


def verify_password(password: str, stored: str) -> bool:
    salt, _, digest = stored.partition("$")
    mine = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), PBKDF2_ROUNDS).hex()
    return hmac.compare_digest(mine, digest)


def first_line(exc: BaseException) -> str:
    """An exception as one line, for a JSON answer or a log line."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def timestamp(moment: datetime) -> str:
    """``2026-01-02T10:00:00.123Z``: ISO 8601 in UTC, as the runbooks' JSON shows times."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def select_one_ms(pool: Any) -> float:
    """The round trip of ``SELECT 1`` through the pool, in ms (every /health/db answers it);
    raises the pool's or the driver's error when the database does not answer."""
    async with pool.connection(timeout=2.0) as conn:
        started = time.perf_counter()
        await (await conn.execute("SELECT 1")).fetchone()
        return (time.perf_counter() - started) * 1000


def loopback_server(app: Any, port: int, host: str = "127.0.0.1") -> Any:
    """uvicorn serving ``app`` on a loopback address only (127.0.0.1, or a pod's own address in
    127.0.0.0/8 under the sandbox's node agent), quiet, as every sandbox service runs; ``.run()``
    it, then ``.started`` says whether it ever listened."""
    import uvicorn  # the sandbox's services only: the gates never import it

    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"{host} is not a loopback address: the sandbox's services listen on loopback only")
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="on",
        loop="asyncio",
        timeout_graceful_shutdown=5,
    )
    return uvicorn.Server(config)
