"""Maintenance mode around the migration, through a whole gate run, on a real control plane.

The gates run as an SRE runs them (a pytest subprocess) against a sandbox's real PostgreSQL and
Redis and the real API server; the service is the sandbox's demo service itself, its pods run by
the node agent and reached through the Service's ClusterIP. The service goes into maintenance
before the migration (seen in the API while the gates run), and when the migration fails it
comes out again after the database is restored.
"""

from __future__ import annotations

import threading
import tomllib
from pathlib import Path

import tomli_w
from gate_runs import database, run_gates, runs
from kubernetes import watch
from real_cluster import DEMO, Cluster

DEPLOYMENTS = [{"name": "demo", "container": "demo", "image": f"{DEMO}:{{release}}", "max_surge": 1}]


def kubernetes_env(sandbox_env: Path, kube: Cluster, **maintenance: object) -> Path:
    """The sandbox's database, backup and migrations; the demo service deployed on the control
    plane at 1.0.0 against that database, its Service the platform's URL."""
    raw = tomllib.loads(sandbox_env.read_text(encoding="utf-8"))
    kube.add_deployment("demo", f"{DEMO}:1.0.0", replicas=3, env=raw["platform"]["local"]["env"])
    url = f"http://{kube.add_service('demo', {'app': 'demo'})}"
    settings = kube.settings(
        DEPLOYMENTS,
        maintenance={"drain_s": 0, **maintenance},
        # no metrics-server on the sandbox's control plane yet: node usage is inconclusive, said so
        preflight={"require_node_metrics": False},
    )
    raw["platform"] = {
        "kind": "kubernetes",
        "url": url,
        "kubernetes": settings.model_dump(mode="json", exclude_none=True),
    }
    sandbox = raw.pop("sandbox")  # the gates must not manage the sandbox's instances here
    # ...but its paths stay where they are (backups, the TLS listener's CA)
    raw = tomllib.loads(tomli_w.dumps(raw).replace("{sandbox}", sandbox["dir"]))
    raw["migrate"]["rehearse"] = False  # a failing rehearsal would stop before maintenance mode
    path = sandbox_env.parent / "kubernetes-env.toml"
    path.write_text(tomli_w.dumps(raw), encoding="utf-8")
    return path


def replicas_seen(kube: Cluster, name: str, stop: threading.Event) -> list[int]:
    """Every spec.replicas the API server reports for the deployment until ``stop`` (a watch)."""
    seen: list[int] = []

    def follow() -> None:
        while not stop.is_set():
            for event in watch.Watch().stream(
                kube.apps.list_namespaced_deployment, kube.namespace, field_selector=f"metadata.name={name}",
                timeout_seconds=2,
            ):  # fmt: skip
                replicas = event["object"].spec.replicas
                if not seen or seen[-1] != replicas:
                    seen.append(replicas)

    threading.Thread(target=follow, daemon=True).start()
    return seen


def test_a_failed_migration_takes_the_service_out_of_maintenance_after_the_restore(sandbox_env, kube):
    env_file = kubernetes_env(sandbox_env, kube, mode="scale-to-zero")
    before = database(env_file)
    stop = threading.Event()
    seen = replicas_seen(kube, "demo", stop)

    run = run_gates(env_file, "2.0.0-bad-migration")
    stop.set()

    assert run.code == 10, run.output
    assert "kubectl scale deployment/demo --replicas=0 (was 3)" in run.output
    assert "kubectl scale deployment/demo --replicas=3" in run.output
    assert seen[:3] == [3, 0, 3], "scaled to 0 in the API during the migration, then back"
    assert kube.deployment("demo").spec.replicas == 3
    assert kube.image("demo", "demo") == f"{DEMO}:1.0.0"
    kube.settle(lambda: kube.rolled_out("demo"), "the demo's 3 pods serve again")
    assert database(env_file) == before  # restored from the run's backup
    actions = [i.action for i in runs(env_file)[0].intents]
    assert actions.index("maintenance") < actions.index("migrate")
    report = (env_file.parent / "reports" / "deployment-report.md").read_text(encoding="utf-8")
    assert "maintenance mode left" in report


def test_the_plan_shows_maintenance_mode_around_the_migration(sandbox_env, kube):
    env_file = kubernetes_env(sandbox_env, kube, mode="env")

    run = run_gates(env_file, "2.0.0", "--dry-run")

    assert run.code == 0, run.output
    assert "maintenance mode first: set MAINTENANCE_MODE=true on demo" in run.output
    assert "after the migration: MAINTENANCE_MODE=false" in run.output
    assert kube.deployment("demo").spec.replicas == 3  # a plan changes nothing
