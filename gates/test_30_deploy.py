"""Deploy: the rolling update, one instance at a time, max surge 1, max unavailable 0.

Summit GA 4.2 "Rolling update: 0 unavailable, 1 surge"; Release Manager steps 5-6 (`kubectl
set image`, `kubectl rollout status`); Granter phase 3. A failure ROLLS BACK (exit 11).
"""

import pytest

pytestmark = pytest.mark.phase("deploy")


def test_rollout_completes(rollout, release, check):
    """Monitor rollout: "successfully rolled out", with the time it took."""
    for line in rollout.result.events[-3:]:
        check.record("rollout event", line)
    check.holds(
        f"rollout of {release} completed", rollout.result.ok, detail=rollout.result.reason, source="platform"
    )
    check.record("rollout duration", round(rollout.result.duration_s, 2), unit="s")


def test_platform_reports_the_release(rollout, platform, release, check):
    """kubectl get deployment: the platform's current release is the new one on every replica."""
    status = platform.status()
    check.equals("current release", platform.current_release(), release, source="platform state")
    check.equals("instances", len(status.instances), status.desired, source="platform state")
    check.equals("releases in service", sorted(status.releases_serving), [release], source="load balancer")
