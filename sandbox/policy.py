"""Summit's policy engine: a policy bundle's rules applied to one request, with no I/O, so the
sandbox's Summit (sandbox/summit.py) and the tests share one definition of every decision.

In the GA runbook's terms (4.1 "Deploy OPA Policies First", 5.1 "Verify Policy Evaluation"):
clearances and classifications are ordered ``U < C < S < TS``; a bundle names which actions
are allowed under which condition on the user's highest clearance and the resource's
classification, and which of them are high-risk::

    {"name": "main", "version": "v1.0.0",
     "rules": {"allow": [{"actions": ["entity.read", "entity.create", "entity.delete"],
                          "when": "clearance >= classification"}],
               "high_risk": ["entity.delete"]}}

A decision is ``ALLOW`` when an ``allow`` rule naming the action holds, ``REQUIRE_APPROVAL``
when such an action is high-risk (a second person must approve it), and ``DENY`` otherwise:
unknown actions, unknown levels and users without a clearance fail closed.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LEVELS = ("U", "C", "S", "TS")
"""Unclassified < Confidential < Secret < Top Secret."""
ALLOW, DENY, REQUIRE_APPROVAL = "ALLOW", "DENY", "REQUIRE_APPROVAL"
COMPARATORS: dict[str, Callable[[int, int], bool]] = {">=": operator.ge, ">": operator.gt, "==": operator.eq}
CONDITION = re.compile(r"^\s*clearance\s*(>=|>|==)\s*classification\s*$")
ACTION = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
BUNDLE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


class BundleError(ValueError):
    """A bundle that cannot be activated; the message says which key and why."""


class RequestError(ValueError):
    """An evaluation request of the wrong shape; the message says which field."""


@dataclass(frozen=True)
class Decision:
    decision: str
    reason: str
    policy_version: str | None

    @property
    def approved(self) -> bool:
        return self.decision == ALLOW

    def body(self) -> dict[str, Any]:
        """The answer of ``POST /v1/policy/evaluate`` (GA 5.1's expected JSON, with the reason)."""
        return {
            "approved": self.approved,
            "decision": self.decision,
            "policyVersion": self.policy_version,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class EvaluationRequest:
    action: str
    user_id: str
    clearances: tuple[str, ...]
    resource_id: str
    classification: str


def evaluate(bundle: dict[str, Any], action: str, clearances: Any, classification: str) -> Decision:
    """The bundle's decision for a user with ``clearances`` doing ``action`` on a resource of
    ``classification``. ``bundle`` has passed :func:`validate_bundle`."""
    version = bundle["version"]
    rules = [(n, rule) for n, rule in enumerate(bundle["rules"]["allow"], 1) if action in rule["actions"]]
    if not rules:
        return Decision(DENY, f"{action} denied: no allow rule names it", version)
    if classification not in LEVELS:
        return Decision(
            DENY, f"{action} denied: classification {classification!r} is not one of {_levels()}", version
        )
    clearance = highest_clearance(clearances)
    if clearance is None:
        return Decision(DENY, f"{action} denied: the user holds no clearance of {_levels()}", version)
    for number, rule in rules:
        comparator = _comparator(rule["when"])
        if COMPARATORS[comparator](LEVELS.index(clearance), LEVELS.index(classification)):
            held = f"clearance {clearance} {comparator} classification {classification} (allow rule {number})"
            if action in bundle["rules"].get("high_risk", []):
                return Decision(
                    REQUIRE_APPROVAL, f"{action} is high-risk: {held}, but an approver must agree", version
                )
            return Decision(ALLOW, f"{action} allowed: {held}", version)
    number, rule = rules[0]
    return Decision(
        DENY,
        f"{action} denied: clearance {clearance} is not {_comparator(rule['when'])} "
        f"classification {classification} (allow rule {number})",
        version,
    )


def highest_clearance(clearances: Any) -> str | None:
    """The highest of the user's clearances the ordering knows; None when there is none."""
    known = [c for c in clearances or () if isinstance(c, str) and c in LEVELS]
    return max(known, key=LEVELS.index) if known else None


def validate_bundle(document: Any, name: str) -> dict[str, Any]:
    """The bundle to store under ``name`` (without an ``activated_at`` a GET answered), or a
    BundleError naming what is wrong."""
    if not isinstance(document, dict):
        raise BundleError("a bundle is a JSON object with name, version and rules")
    bundle = {k: v for k, v in document.items() if k != "activated_at"}
    if bundle.get("name") != name:
        raise BundleError(f"name: {bundle.get('name')!r} does not match the bundle's place {name!r}")
    version = bundle.get("version")
    if not isinstance(version, str) or not version.strip():
        raise BundleError("version: a non-empty string, e.g. v1.0.0")
    rules = bundle.get("rules")
    if not isinstance(rules, dict):
        raise BundleError('rules: an object {"allow": [...], "high_risk": [...]}')
    unknown = sorted(set(rules) - {"allow", "high_risk"})
    if unknown:
        raise BundleError(f"rules.{unknown[0]}: unknown key (allow, high_risk)")
    allow = rules.get("allow")
    if not isinstance(allow, list) or not allow:
        raise BundleError("rules.allow: a list of at least one rule (a bundle allowing nothing denies all)")
    for number, rule in enumerate(allow, 1):
        _check_rule(rule, f"rules.allow[{number}]")
    high_risk = rules.get("high_risk", [])
    if not isinstance(high_risk, list) or not all(isinstance(a, str) and ACTION.match(a) for a in high_risk):
        raise BundleError("rules.high_risk: a list of action names such as entity.delete")
    return bundle


def parse_request(body: Any) -> EvaluationRequest:
    """``{"action", "user": {"id", "clearances"}, "resource": {"id", "classification"}}`` (GA 5.1),
    or a RequestError naming the field."""
    if not isinstance(body, dict):
        raise RequestError(
            'expected {"action", "user": {"id", "clearances"}, "resource": {"id", "classification"}}'
        )
    action, user, resource = body.get("action"), body.get("user"), body.get("resource")
    if not isinstance(action, str) or not action:
        raise RequestError("action: a non-empty string such as entity.read")
    if not isinstance(user, dict) or not _text(user.get("id")):
        raise RequestError("user: an object with an id")
    clearances = user.get("clearances")
    if not isinstance(clearances, list) or not all(isinstance(c, str) for c in clearances):
        raise RequestError('user.clearances: a list of strings such as ["TS"]')
    if not isinstance(resource, dict) or not _text(resource.get("id")):
        raise RequestError("resource: an object with an id")
    if not _text(resource.get("classification")):
        raise RequestError(f"resource.classification: one of {_levels()}")
    return EvaluationRequest(
        action, user["id"], tuple(clearances), resource["id"], resource["classification"]
    )


def read_bundle(path: Path, name: str = "main") -> dict[str, Any]:
    """A bundle file, validated: a BundleError names the file and what is wrong with it."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: {exc}") from None
    try:
        return validate_bundle(document, name)
    except BundleError as exc:
        raise BundleError(f"{path}: {exc}") from None


def _check_rule(rule: Any, where: str) -> None:
    if not isinstance(rule, dict):
        raise BundleError(f'{where}: an object {{"actions": [...], "when": "clearance >= classification"}}')
    unknown = sorted(set(rule) - {"actions", "when"})
    if unknown:
        raise BundleError(f"{where}.{unknown[0]}: unknown key (actions, when)")
    actions = rule.get("actions")
    if not isinstance(actions, list) or not actions:
        raise BundleError(f"{where}.actions: a list of at least one action name")
    bad = [a for a in actions if not isinstance(a, str) or not ACTION.match(a)]
    if bad:
        raise BundleError(f"{where}.actions: {bad[0]!r} is not an action name such as entity.read")
    if not isinstance(rule.get("when"), str) or not CONDITION.match(rule["when"]):
        raise BundleError(
            f"{where}.when: {rule.get('when')!r}: expected clearance >= classification (or >, ==)"
        )


def _comparator(condition: str) -> str:
    match = CONDITION.match(condition)
    assert match is not None, "validated bundles only"
    return match.group(1)


def _levels() -> str:
    return " < ".join(LEVELS)


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())
