"""Activating a policy bundle: the release's before its application (Summit GA 4.1 "Deploy OPA
policies first"), or the previous one again when a later gate fails (GA 7.2 "Policy rollback").

Activation is done when the engine itself reports the version, not when the upload was
accepted: GA 4.1 waits for "Bundle 'main' loaded successfully (version: v4.0.0)".
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from releasegate.config import PolicyBundleSettings
from releasegate.errors import ActionError, ProbeError
from releasegate.platforms.base import Progress
from releasegate.probes.policy import PolicyEngine, field

POLL_S = 0.5


@dataclass(frozen=True)
class Bundle:
    path: str
    version: str
    sha256: str
    document: dict[str, Any]


@dataclass(frozen=True)
class Activation:
    ok: bool
    version: str
    """The version asked for."""
    active: str | None
    """What the engine reported last."""
    seconds: float
    detail: str = ""
    source: str = ""


def read_bundle(settings: PolicyBundleSettings, release: str) -> Bundle:
    """The release's bundle file: JSON with its version at ``version_field``."""
    path = Path(settings.file.replace("{release}", release))
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ActionError(f"policy bundle {path}: file not found (does the release ship it?)") from None
    except OSError as exc:
        raise ActionError(f"policy bundle {path}: cannot read: {exc.strerror}") from None
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise ActionError(f"policy bundle {path}: not JSON: {exc}") from None
    version = field(document, settings.version_field) if isinstance(document, dict) else None
    if not isinstance(version, str) or not version:
        raise ActionError(f"policy bundle {path}: no version at {settings.version_field!r}")
    return Bundle(str(path), version, hashlib.sha256(raw).hexdigest(), document)


def activate(
    engine: PolicyEngine,
    settings: PolicyBundleSettings,
    document: dict[str, Any],
    version: str,
    progress: Progress,
) -> Activation:
    """PUT the bundle, then wait until the engine reports ``version`` (or the timeout)."""
    started = time.monotonic()
    answer = engine.activate(settings.path, document)
    if answer.status not in (200, 201, 204):
        reason = field(answer.body, "error") or answer.text[:200]
        return Activation(
            False, version, None, time.monotonic() - started, f"HTTP {answer.status}: {reason}", answer.source
        )
    deadline = started + settings.activation_timeout_s
    active: str | None = None
    source = answer.source
    next_line = started + 5
    while True:
        try:
            reported = engine.active_version()
            active, source = reported.version, reported.exchange.source
        except ProbeError as exc:
            active = None
            last_problem = str(exc)
        else:
            last_problem = f"the engine reports {active or 'no version'}"
        if active == version:
            return Activation(True, version, active, time.monotonic() - started, source=source)
        now = time.monotonic()
        if now >= deadline:
            return Activation(
                False,
                version,
                active,
                now - started,
                f"not active after {settings.activation_timeout_s:g} s: {last_problem}",
                source,
            )
        if now >= next_line:
            progress(f"waiting for the policy engine to load {version}: {last_problem}")
            next_line = now + 5
        time.sleep(POLL_S)


def without_runtime_fields(document: dict[str, Any]) -> dict[str, Any]:
    """The active bundle as it can be uploaded again: what the engine adds on activation goes."""
    return {k: v for k, v in document.items() if k not in ("activated_at", "activatedAt")}
