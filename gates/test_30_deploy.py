"""Deploy: the release takes the traffic, by the environment's strategy: a rolling update one
instance at a time (max surge 1, max unavailable 0), a canary stepped up with analysis at each
step, or blue-green (green started beside blue, tested directly, then switched).

Summit GA 4.2 "Rolling update: 0 unavailable, 1 surge"; Release Manager steps 5-6 (`kubectl
set image`, `kubectl rollout status`); Granter phase 3. A failure ROLLS BACK (exit 11).
"""

import pytest

from releasegate.analysis.thresholds import Verdict
from releasegate.instance_health import replay
from releasegate.state import ENV_KEY

pytestmark = pytest.mark.phase("deploy")


# Canary (Summit: 5 -> 10 -> 25 -> 50 -> 75 -> 100 %, analysis at each step) -------------------


def pytest_generate_tests(metafunc):
    """One gate per canary step of [metrics.canary]: each is its own line in the reports."""
    if "canary_weight" in metafunc.fixturenames:
        env = metafunc.config.stash.get(ENV_KEY, None)
        metafunc.parametrize(
            "canary_weight", env.metrics.canary.steps if env is not None and env.metrics else []
        )


@pytest.mark.strategy("canary")
def test_canary_instances_start_beside_stable(canary_started, release, check):
    """Deploy canary (5 % traffic next): the new release's instance(s) ready beside stable, no traffic yet."""
    check.holds(
        f"canary {release} started", canary_started.ok, detail=canary_started.reason, source="platform"
    )


@pytest.mark.strategy("canary")
@pytest.mark.threshold("metrics.canary.confidence", "metrics.canary.max_step_s")
def test_canary_step(canary_weight, canary_step, release, previous_release, env, check):
    """Progressive traffic with analysis at each step: each canary instance asked for its health
    and version first, then canary and stable over the same window, on enough requests."""
    result = canary_step(canary_weight)
    health = result.get("health")
    if health is not None:
        replay(check, health, "canary", release)
    if result.get("effective") is not None:
        check.record(
            f"share of requests sent to {release}",
            result["effective"],
            unit="%",
            source="load balancer weights",
        )
    if result.get("requests_needed") is not None:
        served = result.get("canary_requests")
        check.sample(
            "requests the canary served in this step",
            None if served is None else round(served),
            Verdict.PASS if (served or 0) >= result["requests_needed"] else Verdict.NO_DATA,
            comparator=">=",
            threshold=result["requests_needed"],
            source="Prometheus request_rate over the step",
            detail=f"{result['requests_why']}; the step may run {result['max_step_s']:g} s",
        )
    for metric in result.get("metrics", []):
        slo = env.metrics.slo[metric["name"]]
        for side, release_name in (("canary", release), ("stable", previous_release)):
            values = result["samples"][side][metric["name"]]
            check.record(
                f"{metric['name']} {side} ({release_name}) samples",
                ", ".join("none" if v is None else f"{v:.4g}" for v in values),
                unit=slo.unit,
                source=result["sources"].get(f"{metric['name']} {side}", ""),
            )
        check.sample(
            f"{metric['name']}: canary against stable",
            metric["canary_median"],
            Verdict(metric["verdict"]),
            unit=slo.unit,
            detail=metric["reason"],
        )
    check.decide(f"canary at {canary_weight} %", Verdict(result["verdict"]), result["reason"])


# Blue-green (green beside blue, tested directly, then the switch) ------------------------------


@pytest.mark.strategy("blue-green")
def test_green_starts_beside_blue(green_started, release, check):
    """Deploy new version to "green": every instance of it ready, taking no traffic yet."""
    check.holds(f"green {release} started", green_started.ok, detail=green_started.reason, source="platform")


@pytest.mark.strategy("blue-green")
def test_green_answers_before_it_takes_traffic(green_smoke, release, check):
    """Smoke test green environment: each green instance asked directly, before the switch."""
    replay(check, green_smoke, "green", release)


# Every strategy ends with the release taking all the traffic --------------------------------


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
    routed = [i for i in status.instances if i.name in status.in_service]
    check.equals("current release", platform.current_release(), release, source="platform state")
    check.equals("instances taking traffic", len(routed), status.desired, source="load balancer")
    check.equals("releases in service", sorted(status.releases_serving), [release], source="load balancer")
    warm = [i for i in status.instances if i.name not in status.in_service]
    if warm:
        check.record(
            "kept warm, no traffic", ", ".join(f"{i.release} {i.name}" for i in warm), source="platform state"
        )
