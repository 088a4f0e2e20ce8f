"""The sandbox's Granter: what the Granter runbook's five smoke flows need, over the sandbox's
PostgreSQL (tables from ``seed_granter.sql``), served by the demo service under ``/granter``
(a real Granter answers at its own host's root; journeys are given a base URL).

- auth: ``POST /auth/register``, ``POST /auth/login`` (a bearer token), ``GET /auth/me``;
- search: ``GET /search?query=&category=&min_amount=&max_amount=&deadline_before=&page=&per_page=``;
- scraper: ``POST /scraper/runs {"start_url", "max_pages", "label"}`` follows a portal's "next"
  links page by page and stores what it finds; the portal is ``GET /portal/grants?page=N``,
  served here too: the scraper fetches only from loopback, never the internet;
- IA: ``POST /ia/extract {"text", "label"}``: the primary (structured) extractor reads
  ``Key: value`` documents and fails on prose; the fallback (patterns) then answers, and the
  answer says which one did (the ``bad-extraction`` build has no fallback);
- health: ``/health`` (the runbook's ``{"status":"healthy","services":{"database":"up","api":"up"}}``),
  ``/data-service/health``, ``/frontend/health``;
- test data: ``GET|DELETE /test-data?prefix=rg-smoke-...`` lists or deletes what carries a
  journey's prefix (users, grants, extractions); with ``GRANTER_ADMIN_TOKEN`` set it needs that
  bearer token.
"""

from __future__ import annotations

import html
import ipaddress
import json
import math
import os
import re
import secrets
from datetime import date
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from sandbox.web import TEST_PREFIX, admin_only, bearer, error, hash_password, read_json, verify_password

PORTAL_PAGES, PORTAL_PER_PAGE = 3, 4
MAX_SCRAPE_PAGES = 10
LOOPBACK = ("127.0.0.1", "localhost", "::1")
CATEGORIES = ("research", "education", "health", "environment")


class Granter:
    def __init__(self, pool: AsyncConnectionPool, fault: str | None = None) -> None:
        self.pool = pool
        self.fault = fault
        self.admin_token = os.environ.get("GRANTER_ADMIN_TOKEN") or None

    def routes(self) -> list[Route]:
        return [
            Route("/health", self.health),
            Route("/data-service/health", self.data_service_health),
            Route("/frontend/health", self.frontend_health),
            Route("/auth/register", self.register, methods=["POST"]),
            Route("/auth/login", self.login, methods=["POST"]),
            Route("/auth/me", self.me),
            Route("/search", self.search),
            Route("/portal/grants", self.portal),
            Route("/scraper/runs", self.scrape, methods=["POST"]),
            Route("/ia/extract", self.extract, methods=["POST"]),
            Route("/test-data", self.test_data, methods=["GET", "DELETE"]),
        ]

    # -- health ---------------------------------------------------------------------------------

    async def health(self, _request: Request) -> JSONResponse:
        """backend-core (runbook 3.3): ``{"status":"healthy","services":{"database":"up","api":"up"}}``."""
        database = await self._database_up()
        services = {"database": "up" if database else "down", "api": "up"}
        return _health(services)

    async def data_service_health(self, _request: Request) -> JSONResponse:
        database = await self._database_up()
        return _health({"database": "up" if database else "down", "scraper": "up"})

    async def frontend_health(self, _request: Request) -> JSONResponse:
        return _health({"web": "up"})

    async def _database_up(self) -> bool:
        try:
            async with self.pool.connection(timeout=2.0) as conn:
                await conn.execute("SELECT 1 FROM granter_users LIMIT 1")
        except (PoolTimeout, psycopg.Error):
            return False
        return True

    # -- auth -----------------------------------------------------------------------------------

    async def register(self, request: Request) -> JSONResponse:
        body = await read_json(request)
        email, password, name = (str(body.get(k) or "").strip() for k in ("email", "password", "name"))
        if "@" not in email or len(password) < 8 or not name:
            return error(422, "expected an email, a password of 8 characters or more, and a name")
        try:
            async with self.pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    "INSERT INTO granter_users (email, name, password_hash) VALUES (%s, %s, %s) "
                    "RETURNING id, email, name",
                    [email.lower(), name, hash_password(password)],
                )
                user = await cur.fetchone()
        except psycopg.errors.UniqueViolation:
            return error(409, f"{email} is already registered")
        return JSONResponse(user, status_code=201)

    async def login(self, request: Request) -> JSONResponse:
        body = await read_json(request)
        email, password = str(body.get("email") or "").lower(), str(body.get("password") or "")
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "SELECT id, email, name, password_hash FROM granter_users WHERE email = %s", [email]
            )
            user = await cur.fetchone()
            if user is None or not verify_password(password, user["password_hash"]):
                return error(401, "wrong email or password")
            token = secrets.token_urlsafe(24)
            await conn.execute(
                "INSERT INTO granter_sessions (token, user_id) VALUES (%s, %s)", [token, user["id"]]
            )
        return JSONResponse({"token": token, "user": {k: user[k] for k in ("id", "email", "name")}})

    async def me(self, request: Request) -> JSONResponse:
        token = bearer(request)
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "SELECT u.id, u.email, u.name FROM granter_sessions s "
                "JOIN granter_users u ON u.id = s.user_id WHERE s.token = %s",
                [token],
            )
            user = await cur.fetchone()
        if user is None:
            return error(401, "not logged in")
        return JSONResponse(user)

    # -- search ---------------------------------------------------------------------------------

    async def search(self, request: Request) -> JSONResponse:
        params = request.query_params
        try:
            page = max(int(params.get("page", "1")), 1)
            per_page = min(max(int(params.get("per_page", "10")), 1), 50)
            min_amount = int(params["min_amount"]) if params.get("min_amount") else None
            max_amount = int(params["max_amount"]) if params.get("max_amount") else None
            before = date.fromisoformat(params["deadline_before"]) if params.get("deadline_before") else None
        except ValueError:
            return error(422, "page, per_page, min_amount, max_amount: integers; deadline_before: YYYY-MM-DD")
        where, args = ["TRUE"], []
        if params.get("query"):
            where.append("(title ILIKE %s OR funder ILIKE %s OR source ILIKE %s)")
            args += [f"%{params['query']}%"] * 3
        if params.get("category"):
            where.append("category = %s")
            args.append(params["category"])
        if min_amount is not None:
            where.append("amount_cents >= %s")
            args.append(min_amount * 100)
        if max_amount is not None:
            where.append("amount_cents <= %s")
            args.append(max_amount * 100)
        if before is not None:
            where.append("deadline <= %s")
            args.append(before)
        condition = " AND ".join(where)
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(f"SELECT count(*) AS n FROM granter_grants WHERE {condition}", args)
            total = (await cur.fetchone() or {"n": 0})["n"]
            await cur.execute(
                "SELECT id, title, funder, category, amount_cents / 100 AS amount, deadline, source "
                f"FROM granter_grants WHERE {condition} ORDER BY deadline, id LIMIT %s OFFSET %s",
                [*args, per_page, (page - 1) * per_page],
            )
            results = [{**row, "deadline": row["deadline"].isoformat()} for row in await cur.fetchall()]
        return JSONResponse(
            {
                "results": results,
                "total": total,
                "page": page,
                "per_page": per_page,
                "pages": math.ceil(total / per_page),
            }
        )

    # -- the scraper and the portal it reads --------------------------------------------------------

    async def portal(self, request: Request) -> Response:
        """A funder's grant listing, PORTAL_PAGES pages of PORTAL_PER_PAGE grants, "next" linked."""
        try:
            page = int(request.query_params.get("page", "1"))
        except ValueError:
            page = 0
        if not 1 <= page <= PORTAL_PAGES:
            return HTMLResponse("<h1>no such page</h1>", status_code=404)
        items = []
        for n in range((page - 1) * PORTAL_PER_PAGE + 1, page * PORTAL_PER_PAGE + 1):
            grant = portal_grant(n)
            items.append(
                f'<article class="grant" data-category="{grant["category"]}" data-amount="{grant["amount"]}" '
                f'data-deadline="{grant["deadline"]}"><h2>{html.escape(grant["title"])}</h2>'
                f'<p class="funder">{html.escape(grant["funder"])}</p></article>'
            )
        nav = f'<a rel="next" href="grants?page={page + 1}">next</a>' if page < PORTAL_PAGES else ""
        return HTMLResponse(
            f"<html><body><h1>Open grants, page {page}</h1>{''.join(items)}{nav}</body></html>"
        )

    async def scrape(self, request: Request) -> JSONResponse:
        body = await read_json(request)
        start_url, label = str(body.get("start_url") or ""), str(body.get("label") or "")
        try:
            max_pages = min(int(body.get("max_pages", MAX_SCRAPE_PAGES)), MAX_SCRAPE_PAGES)
        except (TypeError, ValueError):
            return error(422, "max_pages: an integer")
        if not label or not _loopback(start_url):
            return error(422, "expected a label and an http:// start_url on loopback (never the internet)")
        pages, found, url = [], [], start_url
        async with httpx.AsyncClient(timeout=5.0, follow_redirects=False) as client:
            while url and len(pages) < max_pages:
                if not _loopback(url):
                    return error(422, f"refusing to follow {url}: not on loopback")
                try:
                    response = await client.get(url)
                except httpx.HTTPError as exc:
                    return error(502, f"could not fetch {url}: {type(exc).__name__}")
                if response.status_code != 200:
                    return error(502, f"{url} answered HTTP {response.status_code}")
                listing = _Listing()
                listing.feed(response.text)
                pages.append(url)
                found += [{**grant, "source_url": url} for grant in listing.grants]
                url = urljoin(url, listing.next_href) if listing.next_href else ""
        async with self.pool.connection() as conn, conn.transaction():
            for grant in found:
                await conn.execute(
                    "INSERT INTO granter_grants (title, funder, category, amount_cents, deadline, source, source_url) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    [
                        grant["title"],
                        grant["funder"],
                        grant["category"],
                        grant["amount"] * 100,
                        grant["deadline"],
                        label,
                        grant["source_url"],
                    ],
                )
        return JSONResponse(
            {"label": label, "pages": pages, "items": found, "complete": not url}, status_code=201
        )

    # -- IA: extraction with a fallback -------------------------------------------------------------

    async def extract(self, request: Request) -> JSONResponse:
        body = await read_json(request)
        text, label = str(body.get("text") or ""), str(body.get("label") or "")
        if not text or not label:
            return error(422, "expected a text and a label")
        extractor, reason = "primary", None
        try:
            fields = primary_extract(text)
        except ExtractionError as exc:
            reason = str(exc)
            if self.fault == "bad-extraction":
                return JSONResponse(
                    {"error": f"extraction failed: {reason}", "extractor": None}, status_code=422
                )
            extractor = "fallback"
            try:
                fields = fallback_extract(text)
            except ExtractionError as again:
                return error(422, f"neither extractor could read it: {reason}; {again}")
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO granter_extractions (label, extractor, fields) VALUES (%s, %s, %s) RETURNING id",
                [label, extractor, json.dumps(fields)],
            )
            row = await cur.fetchone()
        return JSONResponse(
            {
                "id": row[0] if row else None,
                "extractor": extractor,
                "fallback_reason": reason,
                "fields": fields,
            }
        )

    # -- test data --------------------------------------------------------------------------------

    @admin_only("test data")
    async def test_data(self, request: Request) -> JSONResponse:
        """What carries a journey's prefix (GET), or its removal (DELETE)."""
        prefix = request.query_params.get("prefix", "")
        if not TEST_PREFIX.match(prefix):
            return error(422, "prefix must look like rg-smoke-<id>: test data only")
        like = prefix + "%"
        tables = {
            "users": ("granter_users", "email"),
            "grants": ("granter_grants", "source"),
            "extractions": ("granter_extractions", "label"),
        }
        async with self.pool.connection() as conn, conn.transaction():
            answer: dict[str, Any] = {}
            for kind, (table, column) in tables.items():
                if request.method == "DELETE":
                    cur = await conn.execute(f"DELETE FROM {table} WHERE {column} LIKE %s", [like])
                    answer[kind] = cur.rowcount
                else:
                    shown = "title || ' (' || source || ')'" if table == "granter_grants" else column
                    cur = await conn.execute(
                        f"SELECT {shown} FROM {table} WHERE {column} LIKE %s ORDER BY id", [like]
                    )
                    answer[kind] = [row[0] for row in await cur.fetchall()]
        return JSONResponse({"deleted": answer} if request.method == "DELETE" else answer)


# -- pure parts: the portal's grants, the page parser, the two extractors -----------------------------


def portal_grant(n: int) -> dict[str, Any]:
    """The portal's n-th grant (1-based), the same on every run."""
    category = CATEGORIES[n % len(CATEGORIES)]
    return {
        "title": f"{category.capitalize()} open call {n:02d}",
        "funder": f"Portal Funder {n % 3 + 1}",
        "category": category,
        "amount": 10_000 + (n * 7_000) % 60_000,
        "deadline": date(2026, 3 + n % 9, 10 + n).isoformat(),
    }


class _Listing(HTMLParser):
    """The grants of one portal page and its rel="next" link."""

    def __init__(self) -> None:
        super().__init__()
        self.grants: list[dict[str, Any]] = []
        self.next_href: str | None = None
        self._field: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "article" and values.get("class") == "grant":
            self.grants.append(
                {
                    "title": "",
                    "funder": "",
                    "category": values.get("data-category") or "",
                    "amount": int(values.get("data-amount") or 0),
                    "deadline": values.get("data-deadline") or "",
                }
            )
        elif tag == "h2" and self.grants:
            self._field = "title"
        elif tag == "p" and values.get("class") == "funder" and self.grants:
            self._field = "funder"
        elif tag == "a" and values.get("rel") == "next":
            self.next_href = values.get("href")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h2", "p"):
            self._field = None

    def handle_data(self, data: str) -> None:
        if self._field:
            self.grants[-1][self._field] += data.strip()


class ExtractionError(ValueError):
    """An extractor could not read the document."""


_KEY_VALUE = re.compile(r"^\s*(title|funder|amount|deadline|category)\s*:\s*(.+?)\s*$", re.I | re.M)
_AMOUNT = re.compile(r"(?:\$|USD\s?|EUR\s?|€)\s?([\d][\d,. ]*\d)", re.I)
_DATE = re.compile(r"\b(\d{4}-\d{2}-\d{2})\b")


def primary_extract(text: str) -> dict[str, Any]:
    """The structured extractor (the "IA" model of the runbook): ``Key: value`` lines only."""
    found = {key.lower(): value for key, value in _KEY_VALUE.findall(text)}
    missing = [key for key in ("title", "amount", "deadline") if key not in found]
    if missing:
        raise ExtractionError(f"primary extractor: no {', '.join(missing)} line")
    try:
        amount = int(re.sub(r"[^\d]", "", found["amount"]))
        deadline = date.fromisoformat(found["deadline"]).isoformat()
    except ValueError as exc:
        raise ExtractionError(f"primary extractor: {exc}") from None
    return {
        "title": found["title"],
        "amount": amount,
        "deadline": deadline,
        "category": found.get("category", "").lower() or None,
    }


def fallback_extract(text: str) -> dict[str, Any]:
    """Patterns over prose: the first amount with a currency, the first ISO date, a category word."""
    amount, deadline = _AMOUNT.search(text), _DATE.search(text)
    if amount is None or deadline is None:
        raise ExtractionError("fallback extractor: no amount with a currency or no YYYY-MM-DD date")
    lowered = text.lower()
    return {
        "title": text.strip().split(".")[0][:120],
        "amount": int(re.sub(r"[^\d]", "", amount.group(1))),
        "deadline": deadline.group(1),
        "category": next((c for c in CATEGORIES if c in lowered), None),
    }


# -- helpers -------------------------------------------------------------------------------------


def _health(services: dict[str, str]) -> JSONResponse:
    healthy = all(state == "up" for state in services.values())
    return JSONResponse(
        {"status": "healthy" if healthy else "unhealthy", "services": services},
        status_code=200 if healthy else 503,
    )


def _loopback(url: str) -> bool:
    """An http:// URL on this machine (127.0.0.0/8, as a Service's address on the sandbox's
    Kubernetes is, localhost, ::1)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return False
    if parts.hostname in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False
