"""Summit's policy engine (sandbox/policy.py), pure: each decision of the bundles the releases
ship, the bad bundle's bug, what makes a bundle or an evaluation request malformed."""

from __future__ import annotations

import json

import pytest

from sandbox.policy import (
    ALLOW,
    DENY,
    REQUIRE_APPROVAL,
    BundleError,
    RequestError,
    evaluate,
    highest_clearance,
    parse_request,
    read_bundle,
    validate_bundle,
)
from sandbox.releases import RELEASES, policy_bundle

V1 = read_bundle(policy_bundle("1.0.0"))
V2 = read_bundle(policy_bundle("2.0.0"))
BAD = read_bundle(policy_bundle("2.0.0-bad-policy"))


def decision(bundle: dict, action: str, clearances: list[str], classification: str) -> str:
    return evaluate(bundle, action, clearances, classification).decision


def test_the_ga_guides_example_is_allowed_with_the_bundles_version_and_a_reason() -> None:
    answer = evaluate(V1, "entity.read", ["TS"], "S")
    assert answer.body() == {
        "approved": True,
        "decision": "ALLOW",
        "policyVersion": "v1.0.0",
        "reason": "entity.read allowed: clearance TS >= classification S (allow rule 1)",
    }


@pytest.mark.parametrize(
    ("action", "clearances", "classification", "expected"),
    [
        ("entity.read", ["TS"], "S", ALLOW),  # dominance
        ("entity.read", ["S"], "S", ALLOW),  # equal levels dominate
        ("entity.create", ["C"], "U", ALLOW),
        ("entity.read", ["C"], "S", DENY),  # below the classification
        ("entity.read", ["U", "C", "TS"], "S", ALLOW),  # the highest clearance counts
        ("entity.read", ["X", "C"], "S", DENY),  # a level the ordering does not know confers nothing
        ("entity.read", [], "U", DENY),  # no clearance at all
        ("entity.read", ["TS"], "SECRET", DENY),  # an unknown classification fails closed
        ("entity.delete", ["S"], "C", REQUIRE_APPROVAL),  # high-risk, otherwise allowed
        ("entity.delete", ["C"], "TS", DENY),  # high-risk and not allowed: no approval asked
        ("entity.export", ["TS"], "U", DENY),  # 1.0.0 has no rule for it
        ("entity.frobnicate", ["TS"], "U", DENY),
    ],
)
def test_each_decision_of_1_0_0s_bundle(
    action: str, clearances: list[str], classification: str, expected: str
) -> None:
    answer = evaluate(V1, action, clearances, classification)
    assert answer.decision == expected, answer.reason
    assert answer.approved is (expected == ALLOW)
    assert answer.policy_version == "v1.0.0" and answer.reason.startswith(action)


def test_the_reasons_say_what_decided() -> None:
    assert evaluate(V1, "entity.read", ["C"], "S").reason == (
        "entity.read denied: clearance C is not >= classification S (allow rule 1)"
    )
    assert evaluate(V1, "entity.delete", ["S"], "C").reason == (
        "entity.delete is high-risk: clearance S >= classification C (allow rule 1), but an approver must agree"
    )
    assert evaluate(V1, "entity.export", ["TS"], "U").reason == "entity.export denied: no allow rule names it"
    assert "holds no clearance of U < C < S < TS" in evaluate(V1, "entity.read", [], "U").reason


def test_2_0_0s_bundle_makes_export_a_high_risk_action() -> None:
    assert V2["version"] == "v2.0.0"
    assert decision(V2, "entity.export", ["S"], "C") == REQUIRE_APPROVAL
    assert decision(V2, "entity.export", ["C"], "S") == DENY
    assert decision(V2, "entity.read", ["TS"], "S") == ALLOW
    assert decision(V2, "entity.delete", ["TS"], "S") == REQUIRE_APPROVAL


def test_the_bad_bundle_reads_dominance_as_equality() -> None:
    """2.0.0-bad-policy: a TS user is denied an S entity; only an exact match is allowed."""
    denied = evaluate(BAD, "entity.read", ["TS"], "S")
    assert (denied.decision, denied.policy_version) == (DENY, "v2.0.0-bad-policy")
    assert denied.reason == "entity.read denied: clearance TS is not == classification S (allow rule 1)"
    assert decision(BAD, "entity.read", ["S"], "S") == ALLOW
    assert decision(BAD, "entity.create", ["S"], "C") == DENY
    assert decision(BAD, "entity.delete", ["TS"], "S") == REQUIRE_APPROVAL, "its other rule is right"
    assert decision(V2, "entity.read", ["TS"], "S") == ALLOW, "2.0.0's own bundle"


def test_highest_clearance_ignores_what_the_ordering_does_not_know() -> None:
    assert highest_clearance(["C", "TS", "S"]) == "TS"
    assert highest_clearance(["top", 3, None]) is None
    assert highest_clearance(None) is None


def test_every_release_ships_a_bundle_and_the_faulty_2_0_0_builds_share_2_0_0s() -> None:
    for name in RELEASES:
        bundle = read_bundle(policy_bundle(name))
        assert bundle["name"] == "main", name
        if name.startswith("2.0.0-") and name != "2.0.0-bad-policy":
            assert policy_bundle(name).parent.is_symlink(), f"{name}: a link to 2.0.0's policy"
            assert bundle == V2, name
    assert [V1["version"], V2["version"], BAD["version"]] == ["v1.0.0", "v2.0.0", "v2.0.0-bad-policy"]
    assert not policy_bundle("2.0.0-bad-policy").parent.is_symlink(), "its own bundle is its fault"


def good() -> dict:
    return json.loads(json.dumps(V1))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda b: b.update(name="other"), "name: 'other' does not match the bundle's place 'main'"),
        (lambda b: b.update(version=" "), "version: a non-empty string"),
        (lambda b: b.pop("version"), "version: a non-empty string"),
        (lambda b: b.update(rules=[]), "rules: an object"),
        (lambda b: b["rules"].update(deny=[]), "rules.deny: unknown key (allow, high_risk)"),
        (lambda b: b["rules"].update(allow=[]), "rules.allow: a list of at least one rule"),
        (
            lambda b: b["rules"]["allow"][0].update(when="clearance => classification"),
            "rules.allow[1].when: 'clearance => classification': expected clearance >= classification",
        ),
        (
            lambda b: b["rules"]["allow"][0].update(actions=["entity.read", "READ ALL"]),
            "rules.allow[1].actions: 'READ ALL' is not an action name",
        ),
        (lambda b: b["rules"]["allow"][0].update(effect="allow"), "rules.allow[1].effect: unknown key"),
        (lambda b: b["rules"].update(high_risk="entity.delete"), "rules.high_risk: a list of action names"),
    ],
)
def test_a_malformed_bundle_is_refused_with_the_reason(change, reason: str) -> None:
    bundle = good()
    change(bundle)
    with pytest.raises(BundleError) as refused:
        validate_bundle(bundle, "main")
    assert reason in str(refused.value)


def test_a_bundle_as_get_answered_it_can_be_put_back() -> None:
    """A policy rollback may PUT what GET answered: its activated_at is not part of the bundle."""
    assert validate_bundle({**good(), "activated_at": "2026-01-02T10:00:00.000Z"}, "main") == V1
    with pytest.raises(BundleError, match="a bundle is a JSON object"):
        validate_bundle(["main"], "main")


def test_an_evaluation_request_is_the_guides_shape_or_refused_naming_the_field() -> None:
    asked = parse_request(
        {
            "action": "entity.read",
            "user": {"id": "test-user", "clearances": ["TS"]},
            "resource": {"id": "test-entity", "classification": "S"},
        }
    )
    assert (asked.action, asked.user_id, asked.clearances, asked.resource_id, asked.classification) == (
        "entity.read",
        "test-user",
        ("TS",),
        "test-entity",
        "S",
    )
    for body, field in [
        (None, "expected"),
        ({"user": {}, "resource": {}}, "action:"),
        ({"action": "entity.read", "user": {"clearances": []}, "resource": {}}, "user:"),
        (
            {"action": "entity.read", "user": {"id": "u", "clearances": "TS"}, "resource": {}},
            "user.clearances:",
        ),
        (
            {"action": "entity.read", "user": {"id": "u", "clearances": []}, "resource": {"id": "r"}},
            "resource.",
        ),
    ]:
        with pytest.raises(RequestError, match=field):
            parse_request(body)
