"""People's items of the runbooks (release captain named, on-call alerted, war room open): a
machine cannot check them, so a person confirms each, by name, in a signed checklist file or on
the command line (``--confirm "on-call alerted=alice"``), and the report says who and when.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from releasegate.errors import ConfigError


@dataclass(frozen=True)
class Confirmation:
    item: str
    by: str
    at: str
    source: str


def read_checklist(path: Path) -> dict[str, Confirmation]:
    """``[items."release captain"] confirmed_by = "alice", at = "2026-11-23T09:00Z"``"""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"checklist {path}: not readable TOML: {exc}") from None
    found = {}
    for item, entry in (data.get("items") or {}).items():
        if isinstance(entry, dict) and str(entry.get("confirmed_by", "")).strip():
            found[item] = Confirmation(item, str(entry["confirmed_by"]), str(entry.get("at", "")), str(path))
    return found


def parse_confirmations(options: list[str], at: str) -> dict[str, Confirmation]:
    """``--confirm "ITEM=NAME"``, repeatable."""
    found = {}
    for option in options:
        item, sep, by = option.partition("=")
        if not sep or not item.strip() or not by.strip():
            raise ConfigError(f'--confirm {option!r}: expected "ITEM=NAME", e.g. --confirm "war room=alice"')
        found[item.strip()] = Confirmation(item.strip(), by.strip(), at, "--confirm")
    return found
