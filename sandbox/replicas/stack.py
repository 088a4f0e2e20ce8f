"""The replicas' stacks: an example environment (environments/*-production.example.toml) loaded with
its replica's override file (sandbox/replicas/<system>.toml, or <system>-kubernetes.toml), and
what runs behind it: PostgreSQL, Redis and Prometheus as the sandbox starts them, the stable
release's schema migrated by the system's own tool, some rows, the stable release deployed and
users sending it requests.

``local`` serves the stable release from local processes behind nginx (releasegate's local
platform); ``kubernetes`` from pods on the sandbox's control plane (sandbox.cluster), installed
the example's own way (its Helm chart, its Rollout), with Prometheus finding the pods through
the API server. Both are context managers that always tear down what they started. The tests
(tests/replicas_stack.py) run them on free ports; ``python -m sandbox.replicas.demo`` runs the
Kubernetes one for ``make demo-kubernetes``.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
import yaml
from kubernetes import client, utils

from releasegate.actions.load import LoadGenerator
from releasegate.actions.migrate import command_argv, command_workdir
from releasegate.config import Environment
from releasegate.platforms import make_platform
from releasegate.platforms.base import Progress
from releasegate.platforms.local import LocalPlatform
from releasegate.probes.prometheus import Prometheus as PrometheusProbe
from releasegate.probes.prometheus import Sample
from releasegate.release_names import SHORT_SHA, fill
from sandbox.cluster import Cluster
from sandbox.common import SandboxError, wait_for
from sandbox.control_plane import FIXED_SERVICE_CIDR, tool
from sandbox.github_double import GitHubDouble
from sandbox.nginx import Nginx
from sandbox.postgres import Postgres
from sandbox.prometheus import PodDiscovery, Prometheus
from sandbox.redis import Redis
from sandbox.replicas import release_manager
from sandbox.replicas.summit import policy_bundle

HERE = Path(__file__).resolve().parent
TOKEN = "replica-admin-token-0123456789"
SECRETS = {
    "SUMMIT_ADMIN_TOKEN": TOKEN,
    "SUMMIT_SMOKE_ADMIN_TOKEN": TOKEN,
    "GRANTER_SMOKE_ADMIN_TOKEN": TOKEN,
    "GRANTER_ADMIN_TOKEN": TOKEN,
}
"""The tokens the examples name (${SUMMIT_ADMIN_TOKEN}, ...): one value, which the replicas are
given as their admin token (platform.local.secret_env, or a Secret on Kubernetes)."""


@dataclass(frozen=True)
class System:
    example: str
    override: str
    stable: str
    seed: Callable[[psycopg.Connection], None]
    after_deploy: Callable[[Environment], None] = lambda env: None
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    """On Kubernetes: the Secrets its pods read (name -> key -> value), as its team created them."""
    manifests: str | None = None
    """On Kubernetes without a chart: sandbox/replicas/<file>.yaml, what its team applied before
    releasegate ({stable} and {stable_sha}, its tag's short commit, filled in); with a chart
    ([platform.kubernetes.helm]) Helm installs it."""
    commits: dict[str, str] = field(default_factory=dict)
    """Its repository's tags (release -> commit), which GitHub answers for on Kubernetes when
    the example names images by the release's commit (Release Manager's prod-<sha>)."""


def _seed_release_manager(conn: psycopg.Connection) -> None:
    conn.execute("INSERT INTO releases (name) SELECT 'v2023.12.' || n FROM generate_series(10, 29) AS n")
    conn.execute(
        "INSERT INTO deployments (release_id, environment, status) "
        "SELECT id, 'production', 'succeeded' FROM releases"
    )
    conn.execute("INSERT INTO audit_log (actor, action) SELECT 'ci', 'deploy' FROM generate_series(1, 20)")


def _seed_granter(conn: psycopg.Connection) -> None:
    conn.execute(
        "INSERT INTO granter_users (email, name, password_hash) "
        "SELECT 'user' || n || '@example.test', 'User ' || n, 'x$y' FROM generate_series(1, 12) AS n"
    )


def _seed_summit(conn: psycopg.Connection) -> None:
    conn.execute(
        "INSERT INTO summit_users (id, password_hash, clearances, roles) "
        "SELECT 'analyst-' || n, 'x$y', ARRAY['S'], ARRAY[]::text[] FROM generate_series(1, 5) AS n"
    )
    conn.execute(
        "INSERT INTO summit_entities (id, name, classification, created_by) "
        "SELECT 'entity-' || n, 'Entity ' || n, (ARRAY['U', 'C', 'S', 'TS'])[n % 4 + 1], 'analyst-1' "
        "FROM generate_series(1, 30) AS n"
    )


def _activate_summit_policy(env: Environment) -> None:
    """GA 4.1: the stable release's bundle on the policy engine, as the release that put it there did."""
    answer = httpx.put(
        f"{env.platform.url}/v1/policy/bundles/main",
        content=policy_bundle(SYSTEMS["summit"].stable).read_bytes(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        timeout=10,
    )
    if answer.status_code != 200:
        raise SandboxError(f"activating Summit's policy bundle: {answer.status_code} {answer.text[:200]}")


SYSTEMS = {
    "release-manager": System(
        example="release-manager-production.example",
        override="release-manager.toml",
        stable="2024.01.08",
        seed=_seed_release_manager,
        manifests="release-manager-kubernetes.yaml",
        commits=release_manager.COMMITS,
    ),
    "granter": System(
        example="granter-production.example",
        override="granter.toml",
        stable="1.9.0",
        seed=_seed_granter,
        secrets={"granter-admin": {"token": TOKEN}},
        manifests="granter-kubernetes.yaml",
    ),
    "summit": System(
        example="summit-production.example",
        override="summit.toml",
        stable="3.0.0",
        seed=_seed_summit,
        after_deploy=_activate_summit_policy,
        secrets={"summit-admin": {"token": TOKEN}},
    ),
}


@contextmanager
def secrets_exported(**more: str) -> Iterator[None]:
    """The examples' ${VAR} tokens in this process's environment, as a CI job exports them (and
    ``more`` variables: the tools' PATH)."""
    before = {name: os.environ.get(name) for name in (*SECRETS, *more)}
    os.environ.update(SECRETS | more)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def local(system: System, env: Environment, state: Path) -> Iterator[None]:
    """The stable release as local processes behind nginx; always torn down."""
    platform_settings = env.platform.local
    if platform_settings is None:
        raise SandboxError(f"{env.source}: a local replica needs [platform.local]")
    nginx = Nginx(state, env.platform.url, platform_settings)
    platform = LocalPlatform(platform_settings, env.platform.url)
    with ExitStack() as stack, secrets_exported():
        _database_and_redis(stack, system, env, state)
        nginx.start()
        stack.callback(nginx.stop)
        stack.callback(lambda: platform.stop_all() if platform.state_dir.exists() else None)
        result = platform.deploy(system.stable)
        if not result.ok:
            raise SandboxError(f"deploying {system.stable}: {result.reason}")
        system.after_deploy(env)
        if env.metrics is not None:
            prometheus = Prometheus(
                state, env.metrics, platform_settings.targets_file or "", env.environment.service
            )
            _serving_users(stack, env, system, prometheus)
        yield


@contextmanager
def kubernetes(system: System, env: Environment, progress: Progress = print) -> Iterator[Cluster]:
    """The stable release as pods on the sandbox's Kubernetes, installed the example's way (its
    chart, its Rollout), found by Prometheus through the API server; always torn down. The
    cluster lives next to the kubeconfig the override names (``<state>/kubernetes/kubeconfig``)."""
    kube = env.platform.kubernetes
    if kube is None or not kube.kubeconfig:
        raise SandboxError(f"{env.source}: a Kubernetes replica needs platform.kubernetes.kubeconfig")
    cluster_dir = Path(kube.kubeconfig).parent
    state = cluster_dir.parent
    # The Argo Rollouts controller only where the example has a Rollout: it costs CPU all along.
    cluster = Cluster(cluster_dir, service_cidr=FIXED_SERVICE_CIDR, argo=kube.argo_rollout is not None)
    helm_on_path = f"{tool('helm').parent}{os.pathsep}{os.environ.get('PATH', '')}"  # as an SRE has it
    with ExitStack() as stack, secrets_exported(PATH=helm_on_path):
        _database_and_redis(stack, system, env, state)
        _github(stack, system, env)
        stack.callback(cluster.stop, lambda _line: None)
        progress(f"kubernetes  {cluster.start(progress)}")
        _namespace_with_config(cluster, env, system.secrets)
        if system.manifests is not None:
            manifests = (
                (HERE / system.manifests)
                .read_text()
                .replace("{stable_sha}", system.commits.get(system.stable, "")[:SHORT_SHA])
            )
            _apply(cluster, kube.namespace, manifests, system.stable)
        else:
            result = make_platform(env).deploy(system.stable, progress)
            if not result.ok:
                raise SandboxError(f"installing {system.stable}: {result.reason}")
        system.after_deploy(env)
        if env.metrics is not None:
            discovery = PodDiscovery(cluster.kubeconfig, kube.namespace)
            prometheus = Prometheus(state, env.metrics, None, env.environment.service, pods=discovery)
            _serving_users(stack, env, system, prometheus)
        yield cluster


def _database_and_redis(stack: ExitStack, system: System, env: Environment, state: Path) -> None:
    postgres = Postgres(state, env.database.dsn)
    postgres.start()
    stack.callback(postgres.stop)
    postgres.ensure_database()
    if env.redis is not None:
        redis = Redis(state, env.redis.url)
        redis.start()
        stack.callback(redis.stop)
    migrate_to(env, system.stable)
    with psycopg.connect(env.database.dsn, autocommit=True) as conn:
        system.seed(conn)


def _github(stack: ExitStack, system: System, env: Environment) -> None:
    """GitHub's API for the system's repository, with its release tags, when the example asks it
    on loopback ([readiness.github] api_url): GitHub itself cannot be reached from here."""
    github = env.readiness.github if env.readiness else None
    if github is None or not system.commits:
        return
    address = urlsplit(github.api_url)
    if address.hostname != "127.0.0.1" or address.port is None:
        raise SandboxError(f"{env.source}: readiness.github.api_url must be http://127.0.0.1:PORT here")
    double = GitHubDouble(repo=github.repo, port=address.port)
    stack.callback(double.close)
    for release, sha in system.commits.items():
        double.tag(fill(github.ref, release), sha)


def _namespace_with_config(cluster: Cluster, env: Environment, secrets: dict[str, dict[str, str]]) -> None:
    """The namespace, the system's Secrets, and the ConfigMap ``replica-config``: where its
    database and cache are (DATABASE_URL, REDIS_URL), from the environment."""
    assert env.platform.kubernetes is not None
    namespace = env.platform.kubernetes.namespace
    core = client.CoreV1Api(cluster.api())
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    for name, data in secrets.items():
        core.create_namespaced_secret(
            namespace, client.V1Secret(metadata=client.V1ObjectMeta(name=name), string_data=data)
        )
    config = {"DATABASE_URL": env.database.dsn} | ({"REDIS_URL": env.redis.url} if env.redis else {})
    core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="replica-config"), data=config)
    )


def _apply(cluster: Cluster, namespace: str, manifests: str, stable: str, timeout_s: float = 90.0) -> None:
    """``kubectl apply -f`` of the system's manifests, then until every Deployment is available."""
    api = cluster.api()
    documents = [d for d in yaml.safe_load_all(manifests.replace("{stable}", stable)) if d]
    for document in documents:
        utils.create_from_dict(api, document, namespace=namespace)
    apps = client.AppsV1Api(api)
    names = [d["metadata"]["name"] for d in documents if d["kind"] == "Deployment"]

    def available() -> bool:
        for name in names:
            status = apps.read_namespaced_deployment_status(name, namespace).status
            if (status.available_replicas or 0) < (
                status.replicas or 1
            ) or status.updated_replicas != status.replicas:
                return False
        return True

    if not wait_for(available, timeout_s, 0.5):
        raise SandboxError(f"deployments {', '.join(names)} not available within {timeout_s:g} s")


def _serving_users(stack: ExitStack, env: Environment, system: System, prometheus: Prometheus) -> None:
    prometheus.start()
    stack.callback(prometheus.stop)
    users_now = users(env)
    stack.callback(users_now.stop)
    until_every_query_answers(env, system.stable)


def users(env: Environment) -> LoadGenerator:
    """The replica's users, for as long as its stack runs: a production service has a history of
    traffic when a deployment starts, which its preflight reads (every query answers, the baseline)."""
    assert env.metrics is not None and env.metrics.load is not None
    paths = env.metrics.load.paths
    return LoadGenerator(env.platform.url, paths, rps=5, concurrency=1, duration_s=3600, timeout_s=3).start()


def until_every_query_answers(env: Environment, release: str, timeout_s: float = 60.0) -> None:
    """Wait until Prometheus has every series the gates will ask of the serving release."""
    assert env.metrics is not None
    prometheus = PrometheusProbe.from_settings(env.metrics, env.environment.service)
    histograms = env.metrics.histogram_queries()
    for name, window in env.metrics.queries_in_use().items():
        if name in histograms:  # bucket counts by le: the sample's value is the requests counted
            sample = _wait_for_buckets(prometheus, name, release, window, timeout_s)
        else:
            sample = prometheus.wait_for_data(name, release=release, timeout_s=timeout_s, window=window)
        if sample.value is None:
            raise SandboxError(f"the replica gives {name} no data: {sample.source}")


def _wait_for_buckets(
    prometheus: PrometheusProbe, name: str, release: str, window: str | None, timeout_s: float
) -> Sample:
    deadline = time.monotonic() + timeout_s
    while True:
        _groups, sample = prometheus.histograms(name, release=release, window=window)
        if sample.value or time.monotonic() >= deadline:
            return sample
        time.sleep(0.5)


def migrate_to(env: Environment, release: str) -> None:
    """The environment's own migration command (the system's tool), as its team would run it."""
    if env.migrate is None:
        raise SandboxError(f"{env.source}: no [migrate]: the replica's schema cannot be made")
    proc = subprocess.run(
        command_argv(env.migrate, release),
        cwd=command_workdir(env.migrate, release),
        env={**os.environ, env.migrate.dsn_env: env.database.dsn},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise SandboxError(f"migrating to {release}: {(proc.stdout + proc.stderr).strip()[-400:]}")
