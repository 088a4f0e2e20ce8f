"""Preflight on Kubernetes: is the cluster fit to take the rollout? Nothing here changes anything.

Summit GA 2.2 "Verify infrastructure": ``kubectl get nodes`` (all Ready), ``kubectl top nodes``
(< 70 % CPU, < 80 % memory), "sufficient capacity for rollout"; Granter checklist 2 "All
services healthy"; Release Manager "Target environment health verified" and the RollingUpdate
maxSurge 1 / maxUnavailable 0 it patches in. Collected only when platform.kind = "kubernetes".
A failure here ABORTS the run (exit 10).
"""

import pytest

from releasegate.errors import ProbeError
from releasegate.platforms.argo import ArgoRollout
from releasegate.platforms.helm import Helm
from releasegate.platforms.kubernetes import KubernetesPlatform
from releasegate.platforms.kubernetes_deployments import Deployments
from releasegate.probes.kubernetes import (
    Kubernetes,
    disruption_budgets,
    failing_pods,
    node_usage,
    nodes_not_ready,
    surge_room,
)

pytestmark = [pytest.mark.phase("preflight"), pytest.mark.platform("kubernetes")]


@pytest.fixture(scope="module")
def kubernetes(env):
    """The connection the environment describes (context, namespace, timeouts, retries)."""
    if env.platform.kind != "kubernetes":
        pytest.skip("platform.kind is not kubernetes")
    connection = Kubernetes(env.platform.kubernetes)
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def deployments(env, kubernetes):
    settings = env.platform.kubernetes.deployments
    if not settings:
        pytest.skip("no [[platform.kubernetes.deployments]]: nothing to check per deployment")
    return settings


def test_every_node_is_ready(kubernetes, check):
    """kubectl get nodes: all nodes Ready."""
    count, not_ready = nodes_not_ready(kubernetes)
    check.at_least("nodes in the cluster", count, 1, source=f"{kubernetes.component} GET /api/v1/nodes")
    check.equals(
        "nodes not Ready", len(not_ready), 0, detail="; ".join(not_ready[:5]), source="GET /api/v1/nodes"
    )


def test_node_cpu_and_memory_below_the_limits(kubernetes, env, check):
    """kubectl top nodes: < 70 % CPU, < 80 % memory (of allocatable)."""
    limits = env.platform.kubernetes.preflight
    source = "GET /apis/metrics.k8s.io/v1beta1/nodes"
    no_data = "fail" if limits.require_node_metrics else "inconclusive"
    try:
        usage = node_usage(kubernetes)
    except ProbeError as exc:
        check.that(
            "node metrics", None, "present", None, source=source, detail=exc.problem, on_no_data=no_data
        )
        return
    if not usage:
        check.that(
            "node metrics",
            None,
            "present",
            None,
            source=source,
            detail="no node reported",
            on_no_data=no_data,
        )
    for node in usage:
        check.at_most(
            f"node {node.name} CPU",
            round(node.cpu_ratio * 100, 1),
            limits.max_node_cpu_ratio * 100,
            unit="%",
            source=source,
            detail=f"{node.cpu_cores:.2f} of {node.cpu_allocatable:g} cores",
        )
        check.at_most(
            f"node {node.name} memory",
            round(node.memory_ratio * 100, 1),
            limits.max_node_memory_ratio * 100,
            unit="%",
            source=source,
            detail=f"{node.memory_bytes / 2**30:.1f} of {node.memory_allocatable / 2**30:.1f} GiB",
        )


def test_room_for_the_surge_pods(kubernetes, deployments, check):
    """Sufficient capacity for the rollout: each deployment's surge pods fit on a node's free room."""
    for room in surge_room(kubernetes, deployments):
        check.holds(
            f"room for {room.pods} surge pod(s) of {room.deployment}",
            room.fits,
            detail=room.detail,
            source="node allocatable minus pod requests",
        )


def test_no_pod_of_the_release_is_failing(kubernetes, deployments, check):
    """All services healthy: no pod in CrashLoopBackOff, ImagePullBackOff, OOMKilled ..."""
    failing = failing_pods(kubernetes, [d.name for d in deployments])
    check.equals(
        "pods failing (CrashLoopBackOff, ImagePullBackOff, OOMKilled ...)",
        len(failing),
        0,
        detail="; ".join(failing[:3]),
        source=f"pods of {', '.join(d.name for d in deployments)}",
    )


def test_disruption_budgets_allow_the_rollout(kubernetes, deployments, check):
    """A PodDisruptionBudget already at its minimum would be broken by any pod the rollout takes down."""
    budgets = disruption_budgets(kubernetes, deployments)
    if not budgets:
        check.record("PodDisruptionBudgets over the release's pods", "none")
    for budget in budgets:
        check.holds(
            f"PodDisruptionBudget {budget.name} allows the rollout of {budget.deployment}",
            budget.allows_rollout,
            detail=budget.line(),
            source="policy/v1 poddisruptionbudgets",
        )


def test_rolling_update_strategy(kubernetes, env, deployments, check):
    """Rolling update: 0 unavailable, 1 surge (GA 4.2; Release Manager patches it in when told to)."""
    ops = Deployments(kubernetes, env.platform.kubernetes)
    for spec in deployments:
        mismatch = ops.strategy_mismatch(spec, kubernetes.deployment(spec.name))
        if spec.enforce_strategy:
            check.record(
                f"deployment {spec.name} strategy",
                mismatch or "as the environment says",
                detail="enforce_strategy: set before the rollout" if mismatch else "",
            )
        else:
            check.holds(
                f"deployment {spec.name} strategy is RollingUpdate maxSurge {spec.max_surge}, "
                f"maxUnavailable {spec.max_unavailable}",
                mismatch is None,
                detail=mismatch or "",
            )


@pytest.mark.configured("platform.kubernetes.argo_rollout")
def test_argo_rollouts_controller_handles_the_rollout(env, kubernetes, check):
    """The Argo Rollouts controller and its CRDs are installed (optimisation summary, migration to
    Argo Rollouts): a Rollout nobody reconciles would take the new template and wait out its deadline."""
    platform = KubernetesPlatform(env.platform.kubernetes, env.platform.url, kube=kubernetes)
    handled, seen = ArgoRollout(platform).controller_state()
    check.holds(
        f"an Argo Rollouts controller handles rollout {env.platform.kubernetes.argo_rollout.name}",
        handled,
        detail=seen,
        source="argoproj.io/v1alpha1 rollouts",
    )


def test_helm_is_installed(env, check):
    """helm upgrade needs the helm command: without it, say so before anything changes."""
    if env.platform.kind != "kubernetes" or env.platform.kubernetes.helm is None:
        pytest.skip("no [platform.kubernetes.helm] section")
    try:
        version = Helm(env.platform.kubernetes.helm, env.platform.kubernetes).version()
    except ProbeError as exc:
        check.fail("helm version", str(exc), source="helm version --short")
    else:
        check.present("helm version", version, source="helm version --short")
