"""Release Manager deployment guide, "Health Check Verification": `/health` and `/metrics`."""


def test_release_manager_health_and_metrics(journey):
    """`/health` returns the expected response (status, version, timestamp, checks); `/metrics`
    exposes the critical metrics (requests, request duration, errors, database connections)."""
    journey("release-manager")
