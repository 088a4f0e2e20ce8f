"""Verify: the new release is healthy on every instance and through the load balancer.

Release Manager "API Endpoint Health": `for i in {1..10}; curl /health; sleep 2`; Summit GA
6.2 health checks (/health, /health/db); Granter 4.3. A failure ROLLS BACK (exit 11).
"""

import statistics

import pytest

from releasegate.platforms import instances_reachable
from releasegate.probes.health import dig, latency_ms
from releasegate.state import ENV_KEY
from releasegate.verification import every_instance_serves, health_repeatedly, series_holds

pytestmark = pytest.mark.phase("verify")

DB_SAMPLES = 3
"""The database's answer time is judged on the median of three: one slow answer on a busy host is
no regression, a database that is slow every time is."""


def test_every_instance_is_healthy_on_the_release(rollout, platform, release, env, check):
    """Pod health: every instance in service runs the release and its /health says healthy."""
    every_instance_serves(
        check,
        platform,
        release,
        env.verify,
        reachable=instances_reachable(env),
    )


@pytest.mark.threshold("verify.health_probes", "verify.health_interval_s")
def test_health_holds_through_the_load_balancer(rollout, service, release, env, check):
    """/health is healthy and reports the new version, N times S seconds apart."""
    verify = env.verify
    health_repeatedly(check, service, verify, release, verify.health_probes, verify.health_interval_s)


@pytest.mark.threshold("verify.health_db_path", "verify.health_db_latency_field", "verify.max_db_latency_ms")
def test_database_answers_in_time(rollout, service, postgres, env, check):
    """Database query time under the limit: the service's /health/db where it has one (GA 6.2),
    else a timed query to the database itself (Granter, Release Manager: "DB query time < 100 ms")."""
    verify = env.verify
    if verify.health_db_path is None:
        times = [round(postgres.query_ms(), 2) for _ in range(DB_SAMPLES)]
        check.at_most(
            "database query time (SELECT 1), median",
            statistics.median(times),
            verify.max_db_latency_ms,
            unit="ms",
            source=postgres.source("SELECT 1"),
            detail=f"samples {', '.join(f'{t:g}' for t in times)} ms",
        )
        return
    answers = [service.get(verify.health_db_path) for _ in range(DB_SAMPLES)]
    for answer in answers:
        check.equals(f"{verify.health_db_path} HTTP status", answer.status, 200, source=answer.source)
    raws = [dig(answer.body, verify.health_db_latency_field) for answer in answers]
    values = [latency_ms(raw) for raw in raws]
    check.at_most(
        f"{verify.health_db_path} latency, median",
        None if None in values else statistics.median(values),
        verify.max_db_latency_ms,
        unit="ms",
        source=answers[-1].source,
        detail=f"{verify.health_db_latency_field} = {', '.join(repr(r) for r in raws)}",
    )


@pytest.mark.threshold("verify.max_failed_requests_during_rollout")
def test_no_request_failed_during_the_rollout(rollout, env, previous_release, check):
    """Zero downtime: probe traffic through the load balancer while instances were replaced."""
    traffic = rollout.traffic
    if previous_release is None:
        pytest.skip(
            f"initial release: nothing served before it, no downtime to measure "
            f"({traffic.sent} probe requests, {traffic.failed} failed while it started)"
        )
    check.at_least("probe requests sent during the rollout", traffic.sent, 1, source=traffic.url)
    if traffic.before_serving or traffic.serving_after_s is not None:
        check.record(
            "service back from maintenance mode after",
            traffic.serving_after_s,
            unit="s",
            source=traffic.url,
            detail=f"{traffic.before_serving} request(s) failed before, while it was down by design",
        )
    check.at_most(
        "requests failed during the rollout",
        traffic.failed,
        env.verify.max_failed_requests_during_rollout,
        source=traffic.url,
        detail="; ".join(traffic.failures),
    )


def pytest_generate_tests(metafunc):
    """One gate per SLO of the environment's [metrics.slo]: each is its own line in the reports."""
    if "slo_name" in metafunc.fixturenames:
        env = metafunc.config.stash.get(ENV_KEY, None)
        names = env.metrics.check_names("verify") if env is not None and env.metrics is not None else []
        metafunc.parametrize("slo_name", names)


def test_slo_holds_on_the_new_release(slo_name, slo_verdicts, env, check):
    """Metrics acceptable (GA 6.3): the SLO sampled from Prometheus, absolute and against the baseline."""
    series_holds(check, slo_name, slo_verdicts[slo_name], env.metrics.slo[slo_name])
