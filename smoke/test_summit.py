"""Summit MVP-4 GA deployment guide, 6.1 "Smoke Tests" (`./scripts/smoke-test-production.sh`,
and its list of manual smoke tests) and 6.2 "Health Checks"."""


def test_summit_smoke_tests_and_health_checks(journey):
    """User can log in; can read permitted entities; is denied access to restricted entities; a
    high-risk operation triggers the approval workflow; the audit trail records all actions; and
    /health, /health/db, /health/policy answer healthy."""
    journey("summit")
