"""What a leak check's answer says is left: pure parsing, no I/O.

A system's leak-check endpoint (``GET /test-data?prefix=rg-smoke-ab12cd34``) answers JSON: a
list of what still carries the prefix, or an object of such lists (or counts) by kind::

    {"users": ["rg-smoke-ab12cd34-user@example.test"], "grants": [], "extractions": 0}

Anything listed or counted leaked.
"""

from __future__ import annotations

from typing import Any


def leaked_items(body: Any) -> list[str] | None:
    """``["users: rg-smoke-...-user@example.test", ...]``; [] when nothing is left; None when the
    answer is not a leak check's (no data: never taken as clean)."""
    if isinstance(body, list):
        return [_name(item) for item in body]
    if not isinstance(body, dict):
        return None
    items = body.get("items", body) if isinstance(body.get("items"), list | dict) else body
    if isinstance(items, list):
        return [_name(item) for item in items]
    leaked: list[str] = []
    for kind, value in items.items():
        if isinstance(value, list):
            leaked += [f"{kind}: {_name(item)}" for item in value]
        elif isinstance(value, bool) or not isinstance(value, int):
            return None
        elif value:
            leaked.append(f"{kind}: {value} left")
    return leaked


def _name(item: Any) -> str:
    if isinstance(item, dict):
        for key in ("name", "title", "email", "id", "key"):
            if key in item:
                return str(item[key])
    return str(item)
