"""Maintenance mode around the migration, on the simulated cluster, through a whole gate run.

The gates run as an SRE runs them (a pytest subprocess) against a sandbox's real PostgreSQL and
the simulated cluster's API over HTTP: the service goes into maintenance before the migration,
and when the migration fails it comes out again after the database is restored.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import tomli_w
from gate_runs import database, run_gates, runs
from k8s_cluster import Cluster

DEMO = [{"name": "demo", "container": "demo", "image": "demo/service:{release}", "max_surge": 1}]


def kubernetes_env(sandbox_env: Path, cluster: Cluster, **maintenance: object) -> Path:
    """The sandbox's database, backup and migrations; the simulated cluster as the platform. The
    sandbox's nginx (serving 1.0.0) stands in for the service's URL."""
    raw = tomllib.loads(sandbox_env.read_text(encoding="utf-8"))
    settings = cluster.settings(DEMO, maintenance={"drain_s": 0, **maintenance})
    raw["platform"] = {
        "kind": "kubernetes",
        "url": raw["platform"]["url"],
        "kubernetes": settings.model_dump(mode="json", exclude_none=True),
    }
    sandbox = raw.pop("sandbox")  # the gates must not manage the sandbox's instances here
    # ...but its paths stay where they are (backups, the TLS listener's CA)
    raw = tomllib.loads(tomli_w.dumps(raw).replace("{sandbox}", sandbox["dir"]))
    raw["migrate"]["rehearse"] = False  # a failing rehearsal would stop before maintenance mode
    path = sandbox_env.parent / "kubernetes-env.toml"
    path.write_text(tomli_w.dumps(raw), encoding="utf-8")
    return path


def test_a_failed_migration_takes_the_service_out_of_maintenance_after_the_restore(sandbox_env, cluster):
    cluster.add_deployment("demo", "demo/service:1.0.0", replicas=3)
    env_file = kubernetes_env(sandbox_env, cluster, mode="scale-to-zero")
    before = database(env_file)

    run = run_gates(env_file, "2.0.0-bad-migration")

    assert run.code == 10, run.output
    assert "kubectl scale deployment/demo --replicas=0 (was 3)" in run.output
    assert "kubectl scale deployment/demo --replicas=3" in run.output
    deployment = cluster.deployment("demo")
    assert deployment.spec.replicas == 3
    assert cluster.image("demo", "demo") == "demo/service:1.0.0"
    assert database(env_file) == before  # restored from the run's backup
    actions = [i.action for i in runs(env_file)[0].intents]
    assert actions.index("maintenance") < actions.index("migrate")
    report = (env_file.parent / "reports" / "deployment-report.md").read_text(encoding="utf-8")
    assert "maintenance mode left" in report


def test_the_plan_shows_maintenance_mode_around_the_migration(sandbox_env, cluster):
    cluster.add_deployment("demo", "demo/service:1.0.0", replicas=3)
    env_file = kubernetes_env(sandbox_env, cluster, mode="env")

    run = run_gates(env_file, "2.0.0", "--dry-run")

    assert run.code == 0, run.output
    assert "maintenance mode first: set MAINTENANCE_MODE=true on demo" in run.output
    assert "after the migration: MAINTENANCE_MODE=false" in run.output
    assert cluster.deployment("demo").spec.replicas == 3  # a plan changes nothing
