"""Every environment file shipped in environments/ loads, and the Kubernetes ones say what their
runbooks say (the values a reviewer would check against the runbook lines)."""

from pathlib import Path

import pytest

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
    assert k8s.helm.chart == "./charts/summit" and k8s.helm.set_values == {"image.tag": "v{release}"}
    assert (k8s.preflight.max_node_cpu_ratio, k8s.preflight.max_node_memory_ratio) == (0.7, 0.8)


def test_the_production_examples_check_ci_code_review_staging_and_certificates():
    summit = load_environment("summit-production.example", ROOT).readiness
    assert (summit.github.repo, summit.github.ref, summit.ci.workflow) == (
        "summit/summit",
        "v{release}",
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
