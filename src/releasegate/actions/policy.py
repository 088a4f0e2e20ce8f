"""Activating a policy bundle: the release's before its application (Summit GA 4.1 "Deploy OPA
policies first"), or the previous one again when a later gate fails (GA 7.2 "Policy rollback").

Two ways to switch bundles, one per ``[policy.bundle] kind``: ``http`` (this module) puts the
bundle document the release ships on the engine; ``kubernetes-env`` (policy_kubernetes.py) tells
the engine's Deployment which bundle to pull. Either way, activation is done when the engine
itself reports the version, not when the change was accepted: GA 4.1 waits for "Bundle 'main'
loaded successfully (version: v4.0.0)".
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from releasegate.config import Environment, PolicyBundleSettings, PolicySettings
from releasegate.errors import ActionError, ProbeError
from releasegate.platforms.base import Progress
from releasegate.probes.http import Exchange
from releasegate.probes.policy import PolicyEngine
from releasegate.probes.policy import field as answer_field
from releasegate.release_names import fill

POLL_S = 0.5


@dataclass(frozen=True)
class Bundle:
    path: str
    version: str
    sha256: str
    document: dict[str, Any]


@dataclass(frozen=True)
class Prepared:
    """What activating the release's bundle will change, read before anything changes."""

    version: str
    """The version the engine must report once it is active."""
    previous_version: str | None
    about: str
    """The intent's line: what is about to change."""
    undo: dict[str, Any]
    """Everything ``restore`` needs to put the previous bundle back, kept in the ledger."""
    changes: bool
    """False when the engine already has what the release asks for: nothing to do or undo."""
    facts: dict[str, Any] = field(default_factory=dict)
    """Evidence: the file and its checksum, or the Deployment and its variable."""
    payload: Any = None


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


class BundleSwitch(Protocol):
    def prepare(self, release: str) -> Prepared: ...

    def apply(self, prepared: Prepared, progress: Progress) -> Activation: ...

    def restore(self, undo: dict[str, Any], progress: Progress) -> Activation: ...

    def close(self) -> None: ...


def bundle_switch(env: Environment) -> BundleSwitch:
    """The switch ``[policy.bundle] kind`` names, on the environment's policy engine."""
    policy = env.policy
    assert policy is not None and policy.bundle is not None
    engine = PolicyEngine(policy, env.platform.url)
    if policy.bundle.kind == "kubernetes-env":
        from releasegate.actions.policy_kubernetes import KubernetesEnvBundle

        assert env.platform.kubernetes is not None
        return KubernetesEnvBundle(engine, policy.bundle, env.platform.kubernetes)
    return HttpBundle(engine, policy.bundle)


def expected_version(policy: PolicySettings, release: str) -> str:
    """The version the release expects the engine to enforce: ``expected_version``, else what
    its bundle says (the file's version, or the variable's value)."""
    if policy.expected_version is not None:
        return fill(policy.expected_version, release)
    bundle = policy.bundle
    assert bundle is not None  # the settings refuse neither
    if bundle.kind == "kubernetes-env":
        return fill(bundle.value, release)
    return read_bundle(bundle, release).version


def wait_for_version(
    engine: PolicyEngine, version: str, progress: Progress, *, started: float, timeout_s: float
) -> Activation:
    """Until the engine reports ``version`` (a progress line every 5 s), or ``timeout_s`` after
    ``started`` (when the change began: the report says how long activation took)."""
    deadline = started + timeout_s
    next_line = time.monotonic() + 5
    active: str | None = None
    source = engine.base_url
    while True:
        try:
            reported = engine.active_version()
            answer = reported.exchange
            active, source = reported.version, answer.source
            problem = f"the engine reports {active or 'no version'}"
            if active is None and answer.status != 200:  # its own word on why, as it gave it
                why = answer_field(answer.body, "reason") or answer_field(answer.body, "error")
                problem = f"the engine answers HTTP {answer.status}: {why or answer.text[:200]}"
        except ProbeError as exc:
            active, problem = None, str(exc)
        now = time.monotonic()
        if active == version:
            return Activation(True, version, active, now - started, source=source)
        if now >= deadline:
            return Activation(
                False, version, active, now - started, f"not active after {timeout_s:g} s: {problem}", source
            )
        if now >= next_line:
            progress(f"waiting for the policy engine to load {version}: {problem}")
            next_line = now + 5
        time.sleep(POLL_S)


def _refused(answer: Exchange, version: str, started: float) -> Activation:
    reason = answer_field(answer.body, "error") or answer.text[:200]
    return Activation(
        False, version, None, time.monotonic() - started, f"HTTP {answer.status}: {reason}", answer.source
    )


# kind = "http": the bundle document, PUT on the engine ----------------------------------------


def read_bundle(settings: PolicyBundleSettings, release: str) -> Bundle:
    """The release's bundle file: JSON with its version at ``version_field``."""
    assert settings.file is not None
    path = Path(fill(settings.file, release))
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
    version = answer_field(document, settings.version_field) if isinstance(document, dict) else None
    if not isinstance(version, str) or not version:
        raise ActionError(f"policy bundle {path}: no version at {settings.version_field!r}")
    return Bundle(str(path), version, hashlib.sha256(raw).hexdigest(), document)


def without_runtime_fields(document: dict[str, Any]) -> dict[str, Any]:
    """The active bundle as it can be uploaded again: what the engine adds on activation goes."""
    return {k: v for k, v in document.items() if k not in ("activated_at", "activatedAt")}


class HttpBundle:
    """GET the active bundle (kept for the undo), PUT the release's, wait for its version."""

    def __init__(self, engine: PolicyEngine, settings: PolicyBundleSettings) -> None:
        self.engine = engine
        self.settings = settings

    def prepare(self, release: str) -> Prepared:
        bundle = read_bundle(self.settings, release)
        current, answer = self.engine.active_bundle(self.settings.path)
        if current is None and answer.status != 404:
            raise ActionError(
                f"policy engine at {answer.source}: HTTP {answer.status} reading the active bundle"
            )
        previous = without_runtime_fields(current) if current is not None else None
        previous_version = (
            answer_field(previous, self.settings.version_field) if previous is not None else None
        )
        return Prepared(
            version=bundle.version,
            previous_version=previous_version,
            changes=previous_version != bundle.version,
            about=f"activate policy bundle {bundle.version} (replacing {previous_version or 'no bundle'})",
            undo={
                "previous_version": previous_version,
                "previous_bundle": previous,
                "path": self.settings.path,
            },
            facts={"file": bundle.path, "sha256": bundle.sha256, "source": answer.source},
            payload=bundle.document,
        )

    def apply(self, prepared: Prepared, progress: Progress) -> Activation:
        return self._put(prepared.payload, prepared.version, progress)

    def restore(self, undo: dict[str, Any], progress: Progress) -> Activation:
        previous, version = undo.get("previous_bundle"), undo.get("previous_version")
        if previous is None or version is None:
            raise ActionError("no bundle was active before this run: nothing to put back, decide by hand")
        return self._put(previous, version, progress)

    def _put(self, document: dict[str, Any], version: str, progress: Progress) -> Activation:
        started = time.monotonic()
        progress(f"policy bundle {version} -> PUT {self.engine.base_url}{self.settings.path}")
        answer = self.engine.activate(self.settings.path, document)
        if answer.status not in (200, 201, 204):
            return _refused(answer, version, started)
        return wait_for_version(
            self.engine, version, progress, started=started, timeout_s=self.settings.activation_timeout_s
        )

    def close(self) -> None:
        self.engine.close()
