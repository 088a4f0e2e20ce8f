"""Rolling updates on a real control plane: the API server, the Deployment and ReplicaSet
controllers and the scheduler of Kubernetes, pods run by the sandbox's node agent.

Granter phase 3 (three deployments in order, each checked before the next), Release Manager
(RollingUpdate 1/0, ``kubectl rollout undo``), and the failures a rollout must catch fast.
"""

from __future__ import annotations

import itertools
import time

import pytest
from real_cluster import Cluster

from releasegate.platforms.kubernetes import KubernetesPlatform

GRANTER = ["backend-core", "data-service", "web-frontend"]


def granter(kube: Cluster, **overrides) -> KubernetesPlatform:
    """Granter's three services at v1.9.0, and the platform that updates them in order."""
    for name in GRANTER:
        kube.add_deployment(name, f"granter/{name}:v1.9.0")
    deployments = [{"name": n, "container": n, "image": f"granter/{n}:v{{release}}"} for n in GRANTER]
    return KubernetesPlatform(kube.settings(deployments, **overrides), "http://granter.example")


def backend_core(kube: Cluster, **overrides) -> KubernetesPlatform:
    """Granter's backend-core alone (the harness's default deployment), with these settings."""
    return KubernetesPlatform(kube.settings(**overrides), "http://granter.example")


def test_three_deployments_roll_out_in_order_each_checked_before_the_next(kube):
    platform = granter(kube, rollback="image")
    assert platform.current_release() == "1.9.0"

    result = platform.deploy("2.0.0")

    assert result.ok, result.reason
    assert kube.image_changes() == [(n, f"granter/{n}:v2.0.0") for n in GRANTER]
    assert [kube.image(n) for n in GRANTER] == [f"granter/{n}:v2.0.0" for n in GRANTER]
    events = "\n".join(result.events)
    for before, after in itertools.pairwise(GRANTER):  # each finished before the next began
        assert events.index(f"deployment {before} successfully rolled out") < events.index(
            f"set image deployment/{after}"
        )
    assert platform.current_release() == "2.0.0"
    status = platform.status()
    assert status.release == "2.0.0" and status.previous_release == "1.9.0"
    assert len(status.instances) == status.desired == 9
    assert status.releases_serving == {"2.0.0"}


def test_the_revisions_before_a_change_are_what_the_ledger_keeps(kube):
    platform = granter(kube)
    before = platform.revisions_now()
    platform.deploy("2.0.0")

    assert before == [{"deployment": n, "revision": 1, "release": "1.9.0"} for n in GRANTER]
    assert platform.revisions_now() == [{"deployment": n, "revision": 2, "release": "2.0.0"} for n in GRANTER]


def test_the_container_is_found_by_name_and_nothing_else_in_it_changes(kube):
    platform = granter(kube)
    before = kube.deployment("backend-core").spec.template.spec.containers

    assert platform.deploy("2.0.0").ok

    after = kube.deployment("backend-core").spec.template.spec.containers
    assert [c.name for c in after] == ["log-shipper", "backend-core"]
    assert after[0].image == before[0].image == "fluent/fluent-bit:3.0"
    assert after[1].env == before[1].env and after[1].ports == before[1].ports
    assert after[1].resources == before[1].resources


def test_a_failing_deployment_stops_the_rollout_before_the_next_one(kube):
    platform = granter(kube)
    kube.behave("granter/data-service:v2.0.0", fault="CrashLoopBackOff")

    result = platform.deploy("2.0.0")

    assert not result.ok
    assert "deployment data-service" in result.reason and "CrashLoopBackOff" in result.reason
    assert kube.image("backend-core") == "granter/backend-core:v2.0.0"
    assert kube.image("web-frontend") == "granter/web-frontend:v1.9.0", "never touched"


def test_progress_deadline_exceeded_fails_with_the_reason(kube):
    kube.add_deployment("release-manager-prod", "release-manager:prod-1", progress_deadline_s=1)
    kube.behave("release-manager:prod-2", fault="NeverReady")
    platform = KubernetesPlatform(
        kube.settings(
            [
                {
                    "name": "release-manager-prod",
                    "container": "release-manager-prod",
                    "image": "release-manager:prod-{release}",
                }
            ]
        ),
        "http://rm.example",
    )

    result = platform.deploy("2")

    assert not result.ok
    assert (
        "deployment release-manager-prod exceeded its progress deadline (ProgressDeadlineExceeded)"
        in result.reason
    )
    assert "timed out progressing" in result.reason
    assert "1 new pod(s) not ready" in result.reason and "Running, not ready" in result.reason
    assert kube.image("release-manager-prod") == "release-manager:prod-2"
    assert len([p for p in kube.pods("release-manager-prod")]) == 4, (
        "max unavailable 0: the 3 old pods serve on"
    )


def test_crash_loop_is_caught_long_before_the_deadline(kube):
    kube.add_deployment("backend-core", "granter/backend-core:v1.9.0")
    kube.behave("granter/backend-core:v2.0.0", fault="CrashLoopBackOff", fault_after_s=0.2)
    timeout_s = 120.0
    platform = backend_core(kube, rollout_timeout_s=timeout_s)

    started = time.monotonic()
    result = platform.deploy("2.0.0")
    elapsed = time.monotonic() - started

    assert not result.ok
    assert elapsed < timeout_s / 8, f"took {elapsed:.1f} s of a {timeout_s:g} s deadline"
    assert (
        "container backend-core: CrashLoopBackOff (back-off 1s restarting failed container=backend-core"
        in result.reason
    )
    assert "last exit Error (code 1)" in result.reason


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("ErrImagePull", 'ErrImagePull (failed to pull and unpack image "granter/backend-core:v2.0.0"'),
        ("OOMKilled", "OOMKilled (exit code 137)"),
        ("CreateContainerConfigError", 'CreateContainerConfigError (secret "app-secrets" not found)'),
    ],
)
def test_pods_that_cannot_start_fail_the_rollout_with_their_reason(kube, fault, expected):
    """The first of a kubelet's reasons fails the rollout: ErrImagePull, before any back-off."""
    kube.add_deployment("backend-core", "granter/backend-core:v1.9.0", secret_env={"API_KEY": "app-secrets"})
    if fault == "CreateContainerConfigError":  # the Secret the pods read is gone
        kube.core.delete_namespaced_secret("app-secrets", kube.namespace)
    else:
        kube.behave("granter/backend-core:v2.0.0", fault=fault)
    platform = backend_core(kube)

    result = platform.deploy("2.0.0")

    assert not result.ok
    # caught as it happens, or in the back-off after it ("last exit OOMKilled (code 137)")
    assert expected in result.reason or (
        "last exit OOMKilled (code 137)" in result.reason and fault == "OOMKilled"
    )
    assert result.duration_s < 10, "long before the rollout's deadline"


def test_rollout_undo_goes_back_to_the_recorded_revision(kube):
    kube.add_deployment("release-manager-prod", "release-manager:prod-aaa")
    settings = kube.settings(
        [
            {
                "name": "release-manager-prod",
                "container": "release-manager-prod",
                "image": "release-manager:prod-{release}",
            }
        ],
        rollback="revision",
    )
    platform = KubernetesPlatform(settings, "http://rm.example")
    assert platform.deploy("bbb").ok  # revision 2
    assert platform.undo_records()[0].revision == 1
    kube.behave("release-manager:prod-ccc", fault="CrashLoopBackOff")
    assert not platform.deploy("ccc").ok  # revision 3, crash-looping
    assert platform.undo_records()[0].revision == 2

    result = platform.rollback()

    assert result.ok, result.reason
    assert "kubectl rollout undo deployment/release-manager-prod --to-revision=2" in result.events
    assert kube.image("release-manager-prod") == "release-manager:prod-bbb"
    assert platform.current_release() == "bbb" and result.release == "bbb"
    assert (
        kube.deployment("release-manager-prod").metadata.annotations["deployment.kubernetes.io/revision"]
        == "4"
    )
    assert {p.spec.containers[1].image for p in kube.pods("release-manager-prod")} == {
        "release-manager:prod-bbb"
    }
    assert "pod-template-hash" not in kube.deployment("release-manager-prod").spec.template.metadata.labels


def test_rollback_by_image_tag_goes_in_reverse_order(kube):
    platform = granter(kube, rollback="image")
    kube.behave("granter/web-frontend:v2.0.0", fault="ImagePullBackOff")
    assert not platform.deploy("2.0.0").ok

    result = platform.rollback("1.9.0")

    assert result.ok, result.reason
    rolled_back = kube.image_changes()[3:]
    assert rolled_back == [(n, f"granter/{n}:v1.9.0") for n in reversed(GRANTER)]
    assert [kube.image(n) for n in GRANTER] == [f"granter/{n}:v1.9.0" for n in GRANTER]
    assert platform.status().releases_serving == {"1.9.0"}


def test_restarts_above_the_limit_fail_the_rollout(kube):
    kube.add_deployment("backend-core", "granter/backend-core:v1.9.0")
    kube.behave("granter/backend-core:v2.0.0", restarts=1)  # exits once, restarted at once, then serves
    platform = backend_core(kube, max_restarts=0)  # Summit: "High pod restart counts" trigger a rollback

    result = platform.deploy("2.0.0")

    assert not result.ok
    assert "restarted 1 time(s) (at most 0 allowed)" in result.reason
    counts = platform.restart_counts()["backend-core"]
    assert max(counts.values()) == 1, "the new pod that restarted; the rollout stopped there"


def test_error_lines_in_the_new_pods_logs_fail_the_rollout(kube):
    kube.add_deployment("backend-core", "granter/backend-core:v1.9.0")
    kube.behave(
        "granter/backend-core:v2.0.0",
        logs=("INFO started", 'ERROR relation "grants" does not exist', "INFO ready"),
    )
    platform = backend_core(kube)

    result = platform.deploy("2.0.0")

    assert not result.ok
    assert "3 log line(s) match \\bERROR\\b since" in result.reason, "one line in each of the 3 new pods"
    assert 'ERROR relation "grants" does not exist' in result.reason
    assert all("ERROR relation" in line for line in platform.error_log_lines(since=None))


def test_the_rolling_update_strategy_is_set_when_the_environment_says_so(kube):
    kube.add_deployment(
        "release-manager-prod",
        "release-manager:prod-aaa",
        strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
    )
    platform = KubernetesPlatform(
        kube.settings(
            [
                {
                    "name": "release-manager-prod",
                    "container": "release-manager-prod",
                    "image": "release-manager:prod-{release}",
                    "max_surge": 1,
                    "max_unavailable": 0,
                    "enforce_strategy": True,
                }
            ],
        ),
        "http://rm.example",
    )

    result = platform.deploy("bbb")

    assert result.ok, result.reason
    strategy = kube.deployment("release-manager-prod").spec.strategy
    assert strategy.type == "RollingUpdate"
    assert (strategy.rolling_update.max_surge, strategy.rolling_update.max_unavailable) == (1, 0)
    assert any("RollingUpdate maxSurge 1, maxUnavailable 0" in e for e in result.events)


def test_maintenance_by_scaling_to_zero_and_back(kube):
    platform = granter(
        kube, maintenance={"mode": "scale-to-zero", "deployments": ["backend-core"], "drain_s": 0}
    )

    state = platform.enter_maintenance()

    assert state.before == {"backend-core": 3}
    assert kube.pods("backend-core") == []
    assert len(kube.pods("data-service")) == 3, "only the deployments named"
    # the migration runs here; then the deploy brings the replicas back at the new release
    result = platform.deploy("2.0.0")
    assert result.ok, result.reason
    pods = kube.pods("backend-core")
    assert len(pods) == 3 and {p.spec.containers[1].image for p in pods} == {"granter/backend-core:v2.0.0"}
    assert "releasegate.dev/maintenance-replicas" not in (
        kube.deployment("backend-core").metadata.annotations or {}
    )


def test_maintenance_by_environment_variable_and_back(kube):
    platform = granter(kube, maintenance={"mode": "env", "deployments": ["backend-core"]})

    state = platform.enter_maintenance()

    env = {e.name: e.value for e in kube.deployment("backend-core").spec.template.spec.containers[1].env}
    assert env == {"APP_ENV": "production", "MAINTENANCE_MODE": "true"}
    assert kube.rolled_out("backend-core")
    platform.leave_maintenance(state)
    env = {e.name: e.value for e in kube.deployment("backend-core").spec.template.spec.containers[1].env}
    assert env == {"APP_ENV": "production", "MAINTENANCE_MODE": "false"}
    assert kube.image("backend-core") == "granter/backend-core:v1.9.0"


def test_a_second_rollback_changes_nothing_and_the_next_deploy_records_afresh(kube):
    kube.add_deployment("release-manager-prod", "release-manager:prod-aaa")
    settings = kube.settings(
        [
            {
                "name": "release-manager-prod",
                "container": "release-manager-prod",
                "image": "release-manager:prod-{release}",
            }
        ]
    )
    platform = KubernetesPlatform(settings, "http://rm.example")
    assert platform.deploy("bbb").ok
    assert platform.rollback().ok  # revision 1 comes back as revision 3

    again = platform.rollback()

    assert again.ok, again.reason
    assert "deployment release-manager-prod: not changed by the last deploy, left as it is" in again.events
    assert platform.current_release() == "aaa"
    assert platform.deploy("bbb").ok
    assert platform.undo_records()[0].revision == 3, (
        "the record names the revision that serves, not the gone one"
    )
    back = platform.rollback()
    assert back.ok, back.reason
    assert platform.current_release() == "aaa"


def test_a_rollback_is_not_fooled_by_the_failing_pods_it_replaces(kube):
    """Until the controller has seen the undo, the current pods are the crash-looping ones."""
    kube.add_deployment("backend-core", "granter/backend-core:v1.9.0")
    kube.behave("granter/backend-core:v2.0.0", fault="CrashLoopBackOff")
    platform = backend_core(kube)
    assert not platform.deploy("2.0.0").ok

    result = platform.rollback()

    assert result.ok, result.reason
    assert platform.current_release() == "1.9.0"
    pods = kube.pods("backend-core")
    assert {p.spec.containers[1].image for p in pods} == {"granter/backend-core:v1.9.0"}
    assert all(s.ready for p in pods for s in p.status.container_statuses), "the pods serving are ready ones"


def test_a_rollback_leaves_alone_what_the_failed_deploy_never_reached(kube):
    platform = granter(kube)
    assert platform.deploy("1.9.1").ok  # every deployment carries a record of 1.9.0 -> 1.9.1
    kube.behave("granter/data-service:v2.0.0", fault="CrashLoopBackOff")
    assert not platform.deploy("2.0.0").ok  # backend-core and data-service changed, web-frontend not

    result = platform.rollback()

    assert result.ok, result.reason
    assert "deployment web-frontend: not changed by the last deploy, left as it is" in result.events
    assert [kube.image(n) for n in GRANTER] == [f"granter/{n}:v1.9.1" for n in GRANTER]
