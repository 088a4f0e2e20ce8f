"""Summit MVP-4 GA deployment guide, 6.4 "End-to-End Test":
`./scripts/e2e/critical-path-test.sh --env=production`, "Expected: All journeys successful"."""


def test_summit_critical_user_journey(journey):
    """Log in, create an entity, request a high-risk operation, a second user (approver)
    approves it, read the result; the audit trail shows each step. Each step is timed."""
    journey("summit-critical-path")
