"""Granter sprint 4 runbook, step 4.1 "Run Smoke Tests: must pass all 5 flows", with the spot
checks of step 4.4 (``/auth/me`` with the token, ``/search?query=test``). Its test data (a user,
scraped grants, extractions) carries the run's prefix and is swept by ``cleanup_path``.

Params (``[smoke.journeys.granter.params]``): ``scrape_start`` (the portal page the scraper
starts from, default ``/portal/grants?page=1``), ``min_pages`` (default 2).
"""

from __future__ import annotations

import math
import secrets
from collections import Counter
from typing import Any

from releasegate.journeys.base import Journeyer, journey
from releasegate.redaction import register_secret

UP = ("up", "ok", "healthy", "pass")

STRUCTURED = """Title: {title}
Funder: Smoke Test Foundation
Amount: 42,000
Deadline: 2026-10-31
Category: research
"""
PROSE = (
    "{title}. The Smoke Test Foundation funds environment projects with up to $18,500 per team; "
    "applications close on 2026-11-30."
)


@journey("granter")
def granter(j: Journeyer) -> None:
    """Granter: auth, search, scraper, IA and health flows."""
    j.clean_up_by_prefix()
    email = f"{j.unique('user')}@example.test"
    password = secrets.token_urlsafe(16)
    register_secret(password)
    with j.step("auth flow: register"):
        user = j.expect(
            j.http.post("/auth/register", json={"email": email, "password": password, "name": "Smoke Test"}),
            201,
            "register",
        )
        j.check.equals("registered account", user.get("email"), email)
    with j.step("auth flow: log in"):
        j.expect(
            j.http.post("/auth/login", json={"email": email, "password": password + "x"}),
            401,
            "log in with a wrong password",
        )
        session = j.expect(
            j.http.post("/auth/login", json={"email": email, "password": password}), 200, "log in"
        )
        token = session.get("token") if isinstance(session, dict) else None
        j.http.bearer(token)  # masked in every report from here on
        j.check.holds("login answered a token", bool(token))
        me = j.expect(j.http.get("/auth/me"), 200, "GET /auth/me with the token (4.4)")
        j.check.equals("/auth/me returns the user", me.get("email"), email)
    with j.step("scraper flow: multi-page"):
        scraped = _scrape(j)
    with j.step("search flow: query + filters"):
        _search(j, scraped)
    with j.step("IA flow: extraction + fallback"):
        _extract(j)
    with j.step("health flow: all probes"):
        for path in j.settings.health_paths or ["/health"]:
            _probe(j, path)


def _scrape(j: Journeyer) -> list[dict[str, Any]]:
    start = j.url(j.param("scrape_start", "/portal/grants?page=1"))
    run = j.expect(
        j.http.post("/scraper/runs", json={"start_url": start, "max_pages": 10, "label": j.prefix}),
        201,
        "scrape from " + start,
    )
    j.check.at_least("scraper: pages followed", len(run.get("pages", [])), j.param("min_pages", 2))
    j.check.holds(
        "scraper: reached the last page", run.get("complete") is True, detail=", ".join(run["pages"])
    )
    items = run.get("items", [])
    j.check.at_least("scraper: grants found", len(items), 1)
    return items


def _search(j: Journeyer, scraped: list[dict[str, Any]]) -> None:
    """Query this run's grants with a category and a minimum amount, page by page: exactly the
    scraped grants that match, predicted from what the scraper found."""
    category = Counter(item["category"] for item in scraped).most_common(1)[0][0]
    amounts = sorted(item["amount"] for item in scraped if item["category"] == category)
    min_amount = amounts[len(amounts) // 2]
    expected = sorted(
        item["title"] for item in scraped if item["category"] == category and item["amount"] >= min_amount
    )
    query = {"query": j.prefix, "category": category, "min_amount": min_amount, "per_page": 1}
    found: list[str] = []
    pages = math.ceil(len(expected) / query["per_page"])
    for page in range(1, pages + 1):
        body = j.expect(j.http.get("/search", params={**query, "page": page}), 200, f"search page {page}")
        j.check.equals(f"search page {page}: total", body.get("total"), len(expected))
        found += [result["title"] for result in body.get("results", [])]
    j.check.equals(
        f"search {category}, at least {min_amount}: the scraped grants that match", sorted(found), expected
    )
    spot = j.expect(j.http.get("/search", params={"query": "test"}), 200, "GET /search?query=test (4.4)")
    j.check.holds("/search?query=test returns results", isinstance(spot.get("results"), list))


def _extract(j: Journeyer) -> None:
    title = j.unique("call")
    for text, extractor, amount in ((STRUCTURED, "primary", 42_000), (PROSE, "fallback", 18_500)):
        body = j.expect(
            j.http.post("/ia/extract", json={"text": text.format(title=title), "label": j.prefix}),
            200,
            f"extract a {'structured' if extractor == 'primary' else 'prose'} document",
        )
        j.check.equals(f"{extractor} document: extractor that answered", body.get("extractor"), extractor)
        fields = body.get("fields") or {}
        j.check.equals(f"{extractor} document: amount", fields.get("amount"), amount)
        j.check.equals(f"{extractor} document: title", fields.get("title"), title)


def _probe(j: Journeyer, path: str) -> None:
    answer = j.http.get(j.url(path))
    body = j.expect(answer, 200, f"{path}")
    body = body if isinstance(body, dict) else {}
    j.check.equals(f"{path} status", body.get("status"), "healthy", source=answer.source)
    parts = body.get("services") or body.get("checks") or {}
    down = {name: state for name, state in parts.items() if str(state).lower() not in UP}
    j.check.holds(
        f"{path}: every service up",
        not down,
        source=answer.source,
        detail=", ".join(f"{k}: {v}" for k, v in down.items()) or ", ".join(parts),
    )
