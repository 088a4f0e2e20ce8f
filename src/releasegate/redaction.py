"""Secrets never reach a report, a log or an evidence record.

Every secret value releasegate resolves is registered here, and every string that leaves the
process as evidence passes through ``redact``: registered values, passwords in URLs and
``password=...`` pairs become ``***``.
"""

from __future__ import annotations

import re
import threading

MASK = "***"
_lock = threading.Lock()
_secrets: set[str] = set()

_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@")
_KEY_VALUE = re.compile(
    r"(?i)(?P<key>\b(?:password|passwd|pwd|secret|token|api[_-]?key|authorization)\b['\"]?\s*[=:]\s*)"
    r"(?P<quote>['\"]?)(?P<value>(?:Bearer\s+)?[^\s'\",;&]+)"
)


def register_secret(value: str) -> None:
    """Remember a resolved secret so that it is masked wherever it would appear."""
    if value and len(value) >= 3:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """Mask every registered secret, URL password and key=value credential in ``text``."""
    if not text:
        return text
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    return _KEY_VALUE.sub(lambda m: f"{m['key']}{m['quote']}{MASK}", text)
