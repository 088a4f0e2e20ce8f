"""Deploy, first: the release's policy bundle (Summit GA 4.1 "Deploy OPA Policies First").

The bundle the release ships is activated on the policy engine before the application changes
(``[policy.bundle]``: the document PUT on the engine, or the engine's Deployment told which
bundle to pull), what GA 7.2 needs to put the bundle of now back is kept in the ledger first,
and the application waits until the engine itself reports the new version ("Bundle 'main'
loaded successfully (version: v4.0.0)"). When a later gate fails, the rollback puts the
previous bundle back after the application.
"""

import pytest

pytestmark = [pytest.mark.phase("deploy"), pytest.mark.configured("policy.bundle")]


def test_policy_bundle_is_active_before_the_application(policy_bundle, check):
    """Policy bundle built; OPA instances updated: the engine reports the release's bundle."""
    if "file" in policy_bundle:
        check.record("policy bundle", policy_bundle["file"], detail=f"sha256 {policy_bundle['sha256'][:12]}")
    else:
        check.record("policy bundle", policy_bundle["variable"], source=policy_bundle["deployment"])
    check.record("policy bundle active before", policy_bundle["previous_version"] or "none")
    check.equals(
        "policy bundle version the engine reports",
        policy_bundle["active"],
        policy_bundle["version"],
        source=policy_bundle.get("source", ""),
        detail=policy_bundle["detail"]
        or (
            f"activated in {policy_bundle['seconds']:.1f} s" if policy_bundle["changed"] else "already active"
        ),
    )
