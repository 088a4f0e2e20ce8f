"""Every environment file shipped in environments/ loads, and the Kubernetes ones say what their
runbooks say (the values a reviewer would check against the runbook lines)."""

from pathlib import Path

import pytest
from gate_runs import run_suite

from releasegate.config import load_environment

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "environments").glob("*.toml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_environment_loads(path):
    env = load_environment(str(path), ROOT)
    assert env.name
    assert env.planned_minutes, "every shipped environment shows the runbook's planned durations"


def test_granter_updates_three_deployments_in_order_and_rolls_back_by_image_tag():
    k8s = load_environment("granter-production.example", ROOT).platform.kubernetes
    assert [d.name for d in k8s.deployments] == ["backend-core", "data-service", "web-frontend"]
    assert {d.image for d in k8s.deployments} == {f"granter/{d.name}:v{{release}}" for d in k8s.deployments}
    assert k8s.rollback == "image" and k8s.rollout_timeout_s == 300
    assert k8s.maintenance.mode == "scale-to-zero" and k8s.maintenance.deployments == ["backend-core"]
    assert load_environment("granter-production.example", ROOT).rollback.database == "restore"


def test_release_manager_patches_the_rolling_update_and_undoes_by_revision():
    env = load_environment("release-manager-production.example", ROOT)
    (deployment,) = env.platform.kubernetes.deployments
    assert (deployment.max_surge, deployment.max_unavailable, deployment.enforce_strategy) == (1, 0, True)
    assert env.platform.kubernetes.rollback == "revision"
    assert env.migrate.command == ["alembic", "upgrade", "head"]


def test_summit_goes_through_helm_and_follows_its_argo_rollout():
    k8s = load_environment("summit-production.example", ROOT).platform.kubernetes
    assert k8s.strategy == "argo-rollout" and k8s.argo_rollout.name == "summit-canary-rollout"
    assert k8s.helm.chart == "./charts/summit" and k8s.helm.set_values == {"image.tag": "v{release}-ga"}
    assert (k8s.preflight.max_node_cpu_ratio, k8s.preflight.max_node_memory_ratio) == (0.7, 0.8)


def test_the_production_examples_check_ci_code_review_staging_and_certificates():
    summit = load_environment("summit-production.example", ROOT).readiness
    assert (summit.github.repo, summit.github.ref, summit.ci.workflow) == (
        "summit/summit",
        "v{release}-ga",  # GA 2.3: git tag -a v4.0.0-ga
        "mvp4-gate.yml",
    )
    assert summit.github.token == "${GITHUB_TOKEN}", "a reference, never a value"
    assert summit.approvals.min_approvals == 2  # "Code review approved by at least 2 reviewers"
    assert (summit.staging.environment, summit.staging.drill) == (
        "summit-staging",
        True,
    )  # "Rollback tested in staging"
    assert summit.staging.ledger.dsn and summit.staging.ledger.password == "${RELEASEGATE_LEDGER_PASSWORD}"
    assert load_environment("production.example", ROOT).readiness.approvals.min_approvals == 2
    assert load_environment("release-manager-production.example", ROOT).readiness.approvals.min_approvals == 1
    granter = load_environment("granter-production.example", ROOT).readiness
    assert granter.approvals is None and granter.staging.drill and granter.tls.min_days == 30
    staging = load_environment("staging.example", ROOT)
    assert staging.readiness.staging is None, (
        "staging is where the release is proven, not where it is checked"
    )
    assert staging.ledger.dsn == load_environment("production.example", ROOT).ledger.dsn, "one shared ledger"


# The examples are the runbooks (issue 11, part 4): their thresholds, watch and phase limits, each
# printed by `--dry-run` (the examples' hosts cannot be reached here: the plan says "unknown (...)"
# where it would have read the target, and lists every threshold the run would enforce).

RUNBOOK_NUMBERS = {
    "summit-production.example": [
        "metrics.slo.error_ratio: <= 0.001;",  # GA 6.3, 8.2: error rate < 0.1 %
        "metrics.slo.latency_p95: <= 200 ms;",  # GA 6.3, 8.2 (summary 3's 20 % is canary vs stable)
        "metrics.slo.latency_p99: <= 1000 ms;",  # optimisation summary 3
        "metrics.slo.restarts: <= 0;",  # optimisation summary 5: pod restart counts
        "3 failures in a row fail it",  # optimisation summary 5: 3 consecutive failures
        "every 300 s until 3600 s",  # GA 8.2: the first hour
        "stopped after migrate.timeout_s = 300 s",  # GA 3.3: < 5 minutes
        "rollback.timeout_s = 180 s",  # GA 7.1: < 3 minutes
        "rollback.database_timeout_s = 600 s",  # GA 10: migration rollback 10 min (PITR)
        "verify.max_db_latency_ms = 5.0",  # GA 6.2: latency < 5 ms
    ],
    "granter-production.example": [
        "metrics.slo.error_ratio: <= 0.001;",  # 4.5: error rate < 0.1 %
        "metrics.slo.error_ratio_critical: <= 0.01;",  # rollback only if > 1 % error rate
        "metrics.slo.latency_p95: <= 200 ms;",  # Key metrics: API response time < 200 ms (p95)
        "metrics.slo.db_query_p99: <= 100 ms;",  # Key metrics: database query time < 100 ms
        "metrics.slo.cpu: <= 0.7;",  # Key metrics: CPU usage < 70 %
        "metrics.slo.db_connections: <= 100;",  # Key metrics: active connections < 100
        "metrics.slo.memory_growth:",  # Key metrics: memory usage stable
        "every 300 s until 1800 s, every 600 s until 3600 s, every 1800 s until 14400 s",  # monitoring phase
        "stopped after migrate.timeout_s = 600 s",  # Phase 2: 14:15-14:25
        "rollback.timeout_s = 900 s",  # Checklist 6: estimated rollback time 15 minutes
        "rollback order (rollback.maintenance): maintenance mode, the database, then the previous release",
    ],
    "release-manager-production.example": [
        "metrics.slo.error_ratio: <= 0.001;",  # error rate < 0.1 % of total requests
        "metrics.slo.latency_p99: <= 500 ms;",  # p99 < 500 ms
        "metrics.slo.db_connections: <= 80;",  # database connections < 80 of max pool
        "metrics.slo.memory: <= 0.7;",  # memory usage < 70 % of allocated
        "metrics.slo.db_query_p99: <= 100 ms;",  # database query time p99 < 100 ms
        "metrics.slo.cache_hit_ratio: >= 0.85;",  # cache hit rate > 85 %
        "every 60 s until 3600 s",  # monitor continuously for 1 hour
        "verify.health_probes = 10",  # for i in {1..10}
        "verify.health_interval_s = 2.0",  # sleep 2
        "rollback.timeout_s = 300 s",  # rollout status --timeout=5m after the undo
    ],
}


@pytest.mark.parametrize("name", sorted(RUNBOOK_NUMBERS))
def test_the_dry_run_of_each_example_lists_its_runbook_s_numbers(name: str) -> None:
    plan = run_suite("gates/", ROOT / "environments" / f"{name}.toml", "--release=9.9.9", "--dry-run")

    assert plan.code == 0, plan.output
    assert "serving now: unknown (" in plan.output, "the examples' hosts are not reachable from here"
    missing = [number for number in RUNBOOK_NUMBERS[name] if number not in plan.output]
    assert not missing, f"{missing} not in the plan:\n{plan.output}"
    env = load_environment(name, ROOT)
    assert env.metrics is not None
    for slo in env.metrics.slo:
        assert f"metrics.slo.{slo}: " in plan.output, f"{slo}: every threshold enforced is in the plan"


def test_each_example_s_thresholds_say_which_runbook_line_they_come_from() -> None:
    for name in RUNBOOK_NUMBERS:
        env = load_environment(name, ROOT)
        assert env.metrics is not None and env.metrics.slo, name
        for slo_name, slo in env.metrics.slo.items():
            assert slo.description, f"{name}: metrics.slo.{slo_name} names no runbook line"
        text = (ROOT / "environments" / f"{name}.toml").read_text()
        assert "max = " in text and text.count("#") > 40, "each number commented with its runbook line"


def test_release_manager_asks_for_the_guide_s_own_metric_names() -> None:
    queries = load_environment("release-manager-production.example", ROOT).metrics.queries
    for name, metric in [
        ("error_ratio", "release_manager_errors_total"),
        ("error_ratio", "release_manager_requests_total"),
        ("latency_p99", "release_manager_request_duration_seconds_bucket"),
        ("db_connections", "release_manager_db_connections_active"),
        ("request_rate", "release_manager_requests_total"),
    ]:
        assert metric in queries.get(name), (name, metric)


def test_summit_asks_ga_6_3_s_series_and_granter_rolls_back_in_its_runbook_s_order() -> None:
    summit = load_environment("summit-production.example", ROOT)
    assert 'status=~"5.."' in summit.metrics.queries.error_ratio
    assert "http_request_duration_seconds_bucket" in summit.metrics.queries.latency_p95
    assert (summit.migrate.timeout_s, summit.rollback.timeout_s, summit.rollback.database_timeout_s) == (
        300,
        180,
        600,
    )
    granter = load_environment("granter-production.example", ROOT)
    assert granter.rollback.maintenance and granter.rollback.database == "restore"
    assert granter.platform.kubernetes.maintenance is not None, "rollback.maintenance scales these to 0"
    assert [(s.every_s, s.until_s) for s in granter.metrics.observe.schedule] == [
        (300, 1800),
        (600, 3600),
        (1800, 14400),
    ]
