"""Environment files (``environments/NAME.toml``) as validated pydantic models.

An environment says where a service runs and what "good" means there: endpoints, thresholds,
policies. Thresholds live here and never in gate code. Secrets are ``${ENV_VAR}`` references
that stay references until the moment they are used, so they cannot leak into evidence.

Placeholders expanded when the file is loaded: ``{root}`` (the suite's root directory),
``{tmp}`` (the system temp directory), ``{python}`` (this interpreter) and ``{sandbox}`` (the
sandbox directory). ``{release}`` and ``{port}`` are filled in later, by whoever runs the
command or reads the path.
"""

from __future__ import annotations

import math
import os
import re
import sys
import tempfile
import tomllib
from collections.abc import Sequence
from datetime import date
from datetime import time as dt_time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from releasegate.errors import ConfigError
from releasegate.redaction import register_secret
from releasegate.release_names import check_template, fill, needs_commits

SECRET_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_LOAD_PLACEHOLDER = re.compile(r"(?<!\$)\{(root|tmp|python|sandbox)\}")


class Phase(StrEnum):
    """The phases of a deployment, in the order they run."""

    PREFLIGHT = "preflight"
    BACKUP = "backup"
    MIGRATE = "migrate"
    DEPLOY = "deploy"
    VERIFY = "verify"
    OBSERVE = "observe"
    FINALIZE = "finalize"


class Tier(StrEnum):
    SANDBOX = "sandbox"
    STAGING = "staging"
    PRODUCTION = "production"


class SecretRef(str):
    """A ``${ENV_VAR}`` reference. Its value is read only when used, and never printed."""

    @property
    def variable(self) -> str:
        match = SECRET_REF.match(self)
        assert match is not None
        return match.group(1)

    def resolve(self) -> str:
        value = os.environ.get(self.variable)
        if value is None:
            raise ConfigError(f"secret {self} is not set: export {self.variable} before running the gates")
        register_secret(value)
        return value


def _secret_ref(value: str) -> SecretRef:
    if not SECRET_REF.match(value):
        raise ValueError("a secret must be an ${ENV_VAR} reference, never the value itself")
    return SecretRef(value)


Secret = Annotated[str, AfterValidator(_secret_ref)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_SECRET_REFUSALS = ("a secret must be", "the URL carries a password")


def _no_inline_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password and not SECRET_REF.match(parts.password):
        raise ValueError("the URL carries a password: put it in `password` as an ${ENV_VAR} reference")
    return url


RELEASE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
"""What a release may be called anywhere: it is put into paths, image tags and argv templates."""


def _compiles(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
    return value


class EnvironmentInfo(Model):
    name: str
    tier: Tier = Tier.STAGING
    service: str = Field(description="the service being released, as named in reports")
    description: str = ""
    release_pattern: Annotated[str | None, AfterValidator(_compiles)] = Field(
        None, description=r'what --release must look like here, e.g. "^\d+\.\d+\.\d+$" (a version)'
    )


def check_release(release: str, env: Environment | None = None) -> str:
    """``release`` when it is a name releasegate can put into paths, tags and argv (and matches the
    environment's release_pattern); ConfigError, one line, otherwise: a usage error, exit 4."""
    if not RELEASE_NAME.match(release) or ".." in release:
        raise ConfigError(
            f"--release {release!r} is not a release name: letters, digits and . _ - + only, starting "
            "with a letter or digit, no '..', at most 128 characters (e.g. 2.0.0, v4.0.0-ga)"
        )
    pattern = env.environment.release_pattern if env is not None else None
    if pattern is not None and not re.search(pattern, release):
        raise ConfigError(
            f"--release {release!r} does not match {env.environment.name}'s environment.release_pattern {pattern!r}"
        )
    return release


class SandboxSettings(Model):
    """Present only in environments that target the embedded sandbox."""

    autostart: bool = True
    dir: str
    tls_port: int | None = Field(
        None, gt=0, lt=65536, description="nginx also serves TLS here, with a certificate the sandbox makes"
    )


class LocalPlatformSettings(Model):
    """N processes of a release behind nginx, replaced one at a time (or by canary, blue-green)."""

    instances: int = Field(3, ge=1)
    strategy: Literal["rolling", "canary", "blue-green"] = Field(
        "rolling",
        description="rolling: deploy() replaces instances; canary, blue-green: the gates drive the "
        "strategy's steps (start_canary ... promote; start_green, switch_traffic, retire)",
    )
    canary_instances: int | None = Field(
        None,
        ge=1,
        description="canary: how many processes run the canary; unset, they follow the weight "
        "(ceil(p × instances / 100) at p %, as Argo Rollouts scales canary replicas)",
    )
    keep_warm_s: float = Field(
        300.0, ge=0, description="blue-green: how long the old color keeps running after the switch"
    )
    ports: tuple[int, int] = Field(description="inclusive range of ports for instances")
    command: list[str] = Field(min_length=1, description="argv; {release} and {port} are filled in")
    workdir: str = "{root}"
    env: dict[str, str] = Field(default_factory=dict)
    secret_env: dict[str, Secret] = Field(default_factory=dict)
    state_dir: str
    nginx_upstream_file: str
    nginx_pid_file: str
    targets_file: str | None = Field(
        None, description="Prometheus file_sd JSON of the running instances, rewritten on every change"
    )
    readiness_path: str = "/health/live"
    readiness_timeout_s: float = Field(30.0, gt=0)
    min_ready_s: float = Field(0.0, ge=0)
    drain_s: float = Field(1.0, ge=0)
    stop_timeout_s: float = Field(10.0, gt=0)
    max_surge: int = Field(1, ge=1)
    max_unavailable: int = Field(0, ge=0)
    rollback_max_surge: int | None = Field(
        None, ge=1, description="instances a rollback starts at once; default all of them: back fast"
    )

    @model_validator(mode="after")
    def _ports_fit(self) -> LocalPlatformSettings:
        """Enough ports for the most instances that run at once: a surge or a rollback beside the
        N; a canary beside the N plus a surge while it is promoted; both colors of blue-green."""
        if self.canary_instances is not None and self.canary_instances > self.instances:
            raise ValueError(
                f"canary_instances {self.canary_instances}: at most the {self.instances} instances"
            )
        low, high = self.ports
        extra = max(self.max_surge, self.rollback_max_surge or self.instances)
        why = f"max_surge {self.max_surge}"
        if self.strategy == "canary" and self.canary_instances is None:
            extra = max(extra, self.instances)  # at 100 % as many canary instances as stable ones
            why = f"a canary that follows the weight (up to {self.instances} instances)"
        elif self.strategy == "canary" and self.canary_instances is not None:
            extra = max(extra, self.canary_instances + self.max_surge)
            why = f"{self.canary_instances} canary instance(s) and max_surge {self.max_surge}"
        elif self.strategy == "blue-green":
            extra = max(extra, self.instances)
            why = "blue-green (two colors)"
        needed = self.instances + extra
        if high - low + 1 < needed:
            raise ValueError(
                f"ports {low}-{high} hold {high - low + 1} instances; "
                f"{self.instances} instances with {why} need {needed}"
            )
        return self


_SURGE = re.compile(r"^(\d+|\d+%)$")
_KUBE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def _surge_value(value: int | str) -> int | str:
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must be 0 or more")
        return value
    if not _SURGE.match(value):
        raise ValueError('expected a count (1) or a percentage ("25%")')
    return value


def _kube_name(value: str) -> str:
    if not _KUBE_NAME.match(value) or len(value) > 253:
        raise ValueError("expected a Kubernetes object name (lowercase letters, digits, '-' and '.')")
    return value


KubeName = Annotated[str, AfterValidator(_kube_name)]
Surge = Annotated[int | str, AfterValidator(_surge_value)]
ImageTemplate = Annotated[str, AfterValidator(check_template)]
"""``granter/backend-core:v{release}``, or ``release-manager:prod-{sha}``: the release's commit."""


class KubernetesDeploymentSettings(Model):
    """One Deployment the release updates, in the order the list gives (Granter 3.1-3.5)."""

    name: KubeName
    container: str = Field(description="the container whose image carries the release")
    image: ImageTemplate = Field(
        description='e.g. "granter/backend-core:v{release}"; {sha} is the commit of the release\'s git '
        "tag ([readiness.github] ref), as git rev-parse --short prints it"
    )
    health_url: str | None = Field(None, description="GET must answer 200 before the next deployment starts")
    health_timeout_s: float = Field(60.0, gt=0)
    max_surge: Surge = 1
    max_unavailable: Surge = 0
    enforce_strategy: bool = Field(
        False, description="patch the RollingUpdate strategy to max_surge/max_unavailable before the rollout"
    )


class KubernetesPreflightSettings(Model):
    """`kubectl get nodes` / `kubectl top nodes` thresholds (Summit GA 2.2)."""

    max_node_cpu_ratio: float = Field(0.7, gt=0, le=1)
    max_node_memory_ratio: float = Field(0.8, gt=0, le=1)
    require_node_metrics: bool = Field(
        True, description="no metrics.k8s.io answer is a failure (False: the check is inconclusive)"
    )


class KubernetesMaintenanceSettings(Model):
    """Around migrations: scale to 0 (Granter 1.3, Summit GA 3.3) or an env var (Summit runbook)."""

    mode: Literal["scale-to-zero", "env"] = "scale-to-zero"
    deployments: list[KubeName] = Field(
        default_factory=list,
        description="which deployments; empty means all of platform.kubernetes.deployments",
    )
    env_var: str = "MAINTENANCE_MODE"
    on_value: str = "true"
    off_value: str = "false"
    drain_s: float = Field(30.0, ge=0, description="Granter 1.3: wait for graceful shutdown (30 seconds)")


class KubernetesBlueGreenSettings(Model):
    """Two Deployments and a Service whose selector is switched (Summit GA 8.1)."""

    service: KubeName
    blue: KubeName
    green: KubeName
    selector_key: str = "version"
    selector_value: Literal["color", "release"] = Field(
        "color", description="what the Service selects on: the color's name, or the release (a pod label)"
    )
    scale_down_previous: bool = Field(False, description="scale the old color to 0 after the switch")
    preview_url: str | None = Field(
        None,
        description="where green answers before the switch (a preview Service or Ingress, as Argo "
        "Rollouts' previewService); without it green's pods are asked directly, from inside the cluster",
    )


class KubernetesCanarySettings(Model):
    """A canary by replica ratio: stable N replicas, canary k, both behind the same Service."""

    stable: KubeName
    canary: KubeName
    steps: list[Annotated[int, Field(gt=0, le=100)]] = Field(default_factory=lambda: [10, 50, 100])
    step_pause_s: float = Field(0.0, ge=0, description="how long each step is observed before the next")

    @field_validator("steps")
    @classmethod
    def _ascending(cls, steps: list[int]) -> list[int]:
        if not steps or steps != sorted(set(steps)):
            raise ValueError("steps must be distinct percentages in ascending order")
        return steps


class ArgoRolloutSettings(Model):
    """An Argo Rollout (argoproj.io/v1alpha1) whose steps and AnalysisRuns are followed."""

    name: KubeName
    container: str
    image: ImageTemplate
    promote_paused: bool = Field(
        False, description="promote an indefinite pause step (`kubectl argo rollouts promote`)"
    )
    abort_on_failure: bool = Field(True, description="abort the Rollout when an AnalysisRun fails")
    analysis: Literal["argo", "releasegate"] = Field(
        "argo",
        description="who judges each canary step: 'argo', the Rollout's own AnalysisRuns; "
        "'releasegate', the gates' [metrics.canary] checks (canary against stable, on their counts) "
        "at each indefinite pause (`pause: {}`) after a setWeight, each step promoted only when it "
        "passed; the Rollout's setWeight steps are then [metrics.canary] steps",
    )


class HelmSettings(Model):
    """`helm upgrade --install --wait`, `helm history`, `helm rollback` (Summit GA 4.2, 7.1)."""

    release: str = Field(description="the Helm release name")
    chart: str
    binary: str = "helm"
    values_files: list[str] = Field(default_factory=list)
    set_values: dict[str, str] = Field(
        default_factory=lambda: {"image.tag": "{release}"},
        description="--set KEY=VALUE, {release} (and {sha}, as in an image) filled in",
    )
    timeout_s: float = Field(600.0, gt=0, description="--timeout (GA 4.2: 10m)")
    wait: Literal["yes", "watcher", "legacy", "hookOnly"] = Field(
        "yes",
        description="`--wait` (yes) or Helm 4's `--wait=STRATEGY`: 'legacy' waits as Helm 3 did, for "
        "Deployments and pods only; Helm 4's 'watcher' cannot tell when an Argo Rollout is ready and "
        "times out on it, so a chart that renders one needs 'legacy' (releasegate follows the Rollout)",
    )

    extra_args: list[str] = Field(
        default_factory=list,
        description="more arguments for helm upgrade and helm rollback, e.g. --server-side=false: "
        "Helm 4's server-side apply conflicts with Argo Rollouts, which owns the selectors of a "
        "canary's Services",
    )

    @property
    def wait_flag(self) -> str:
        return "--wait" if self.wait == "yes" else f"--wait={self.wait}"


class KubernetesPlatformSettings(Model):
    """A release on Kubernetes through the official client (kubeconfig context or in-cluster)."""

    context: str | None = Field(None, description="kubeconfig context; default: the current context")
    kubeconfig: str | None = Field(
        None, description="kubeconfig path; default: $KUBECONFIG or ~/.kube/config"
    )
    in_cluster: bool = False
    token: Secret | None = Field(
        None, description="a bearer token that replaces the kubeconfig's credentials"
    )
    namespace: KubeName
    request_timeout_s: float = Field(10.0, gt=0, description="every API call's timeout")
    retries: int = Field(3, ge=0, le=10, description="retries of refused connections, timeouts and 5xx")
    retry_backoff_s: float = Field(0.5, ge=0)
    rollout_timeout_s: float = Field(
        600.0, gt=0, description="`kubectl rollout status --timeout`, per deployment"
    )
    poll_interval_s: float = Field(2.0, gt=0)
    strategy: Literal["rolling", "blue-green", "canary", "argo-rollout"] = "rolling"
    deployments: list[KubernetesDeploymentSettings] = Field(default_factory=list)
    rollback: Literal["revision", "image"] = Field(
        "revision", description="revision: `kubectl rollout undo`; image: set the previous image tag"
    )
    max_restarts: int = Field(0, ge=0, description="container restarts allowed in a new pod")
    log_error_pattern: str = r"\bERROR\b"
    max_error_log_lines: int = Field(0, ge=0, description="ERROR lines allowed in new pods' logs")
    log_tail_lines: int = Field(500, gt=0)
    preflight: KubernetesPreflightSettings = KubernetesPreflightSettings()
    maintenance: KubernetesMaintenanceSettings | None = None
    blue_green: KubernetesBlueGreenSettings | None = None
    canary: KubernetesCanarySettings | None = None
    argo_rollout: ArgoRolloutSettings | None = None
    helm: HelmSettings | None = None

    @field_validator("log_error_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _strategy_is_configured(self) -> KubernetesPlatformSettings:
        names = [d.name for d in self.deployments]
        if len(set(names)) != len(names):
            raise ValueError("deployments: each name once")
        sections = {"blue-green": self.blue_green, "canary": self.canary, "argo-rollout": self.argo_rollout}
        for strategy, section in sections.items():
            key = strategy.replace("-", "_")
            if strategy == self.strategy and section is None:
                raise ValueError(f"strategy = '{strategy}' needs a [platform.kubernetes.{key}] section")
            if strategy != self.strategy and section is not None:
                raise ValueError(f"[platform.kubernetes.{key}] is set but strategy = '{self.strategy}'")
        if self.strategy != "argo-rollout" and not self.deployments:
            raise ValueError(
                f"strategy = '{self.strategy}' needs at least one [[platform.kubernetes.deployments]]"
            )
        wanted = []
        if self.blue_green:
            wanted = [self.blue_green.blue, self.blue_green.green]
        if self.canary:
            wanted = [self.canary.stable, self.canary.canary]
        if self.maintenance:
            wanted += self.maintenance.deployments
        missing = [name for name in wanted if name not in names]
        if missing:
            raise ValueError(f"{', '.join(missing)}: not in [[platform.kubernetes.deployments]]")
        if self.in_cluster and (self.context or self.kubeconfig):
            raise ValueError("in_cluster = true takes no context or kubeconfig")
        return self

    def deployment(self, name: str) -> KubernetesDeploymentSettings:
        return next(d for d in self.deployments if d.name == name)


class PlatformSettings(Model):
    kind: Literal["local", "kubernetes"] = "local"
    url: Annotated[str, AfterValidator(_no_inline_password)] = Field(
        description="where users reach the service (the load balancer)"
    )
    local: LocalPlatformSettings | None = None
    kubernetes: KubernetesPlatformSettings | None = None

    @model_validator(mode="after")
    def _kind_has_settings(self) -> PlatformSettings:
        if self.kind == "local" and self.local is None:
            raise ValueError("platform.kind = 'local' needs a [platform.local] section")
        if self.kind == "kubernetes" and self.kubernetes is None:
            raise ValueError("platform.kind = 'kubernetes' needs a [platform.kubernetes] section")
        return self


class DatabaseSettings(Model):
    dsn: Annotated[str, AfterValidator(_no_inline_password)] = Field(
        description="postgresql://user@host:port/dbname of the application database"
    )
    password: Secret | None = None
    connect_timeout_s: float = Field(5.0, gt=0)
    max_transaction_age_s: float = Field(300.0, gt=0)
    max_blocking_locks: int = Field(0, ge=0)

    @field_validator("dsn")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("postgresql", "postgres") or not parts.path.strip("/"):
            raise ValueError("expected postgresql://user@host:port/dbname")
        return value


class RedisSettings(Model):
    url: Annotated[str, AfterValidator(_no_inline_password)]
    password: Secret | None = None
    timeout_s: float = Field(3.0, gt=0)


class BackupSettings(Model):
    databases: list[str] = Field(min_length=1)
    dir: str
    verify_tables: dict[str, list[str]] = Field(
        default_factory=dict, description="per database, the tables whose row counts must survive"
    )
    free_space_factor: float = Field(
        1.5, gt=0, description="free disk at the backup dir must be this many times the databases' size"
    )
    scratch_prefix: str = "releasegate_scratch"
    pg_bin_dir: str | None = None
    timeout_s: float = Field(900.0, gt=0)


SQUAWK_STYLE_RULES = [
    "prefer-robust-stmts",
    "require-timeout-settings",
    "require-lock-timeout",
    "require-statement-timeout",
    "prefer-bigint-over-int",
    "prefer-bigint-over-smallint",
    "prefer-identity",
    "prefer-text-field",
    "prefer-timestamptz",
    "transaction-nesting",
]
"""squawk's rules about style, not about locking users out; and the timeouts releasegate sets
itself (migrate.lock_timeout, statement_timeout) on every migration session."""


class MigrationReviewSettings(Model):
    """Release Manager production 3 (``alembic upgrade --sql``, for review): the exact SQL the
    release will run, kept with the run's evidence and linted for what would lock users out."""

    lint: Literal["off", "warn", "fail"] = Field(
        "warn",
        description="squawk's findings on the SQL: off (not linted), warn (recorded), fail (the run "
        "ABORTS before the rehearsal)",
    )
    exclude: list[str] = Field(
        default_factory=lambda: list(SQUAWK_STYLE_RULES),
        description="squawk rules that do not count (default: style, and the timeouts releasegate sets)",
    )
    sql_command: list[str] | None = Field(
        None,
        description="command runner: an argv that prints the SQL the release will run, without running "
        "it ({release} and {from}, the schema version now, are filled), e.g. alembic's upgrade {from}:head --sql",
    )


class MigrateSettings(Model):
    runner: Literal["sql", "command"] = "sql"
    directory: str | None = Field(
        None, description="sql runner: directory of NNNN_name.sql, may use {release}"
    )
    command: list[str] | None = Field(None, description="command runner: argv run with the DSN in dsn_env")
    workdir: str | None = Field(
        None, description="command runner: the directory it runs in (a relative alembic.ini); default: here"
    )
    dsn_env: str = "DATABASE_URL"
    version_query: str = "SELECT version FROM schema_migrations ORDER BY version DESC LIMIT 1"
    expected_version: str | None = Field(
        None,
        description="command runner: the version the release expects, set by hand (may use {release}); "
        "it wins over expected_version_command",
    )
    expected_version_command: list[str] | None = Field(
        None,
        min_length=1,
        description="command runner: an argv that prints the version the release ships, run in workdir "
        "with {release} filled into each element (as the migration command); the first word of its "
        "stdout's last non-empty line is the version: `alembic heads` prints `3f9d4b6a2c10 (head)`. "
        "It must only read (the dry run runs it too). Without it or expected_version, the version "
        "the rehearsal reached is expected",
    )
    lock_timeout: str = "5s"
    statement_timeout: str = "5min"
    rehearse: bool = True
    review: MigrationReviewSettings = MigrationReviewSettings()
    on_failure: Literal["restore", "down-migrations"] = "restore"
    timeout_s: float = Field(900.0, gt=0)
    max_lock_s: float = Field(
        5.0,
        gt=0,
        description="the longest a migration may hold a lock users wait on (pg_locks, sampled); "
        "the rehearsal over it stops the run before production",
    )
    traffic_paths: list[str] | None = Field(
        None,
        min_length=1,
        description="user routes the probe traffic requests while the migration runs; "
        "default: verify.traffic_path",
    )
    max_failed_requests: int = Field(
        0, ge=0, description="user requests that may fail (5xx or no answer in time) during the migration"
    )

    @field_validator("traffic_paths")
    @classmethod
    def _paths(cls, value: list[str] | None) -> list[str] | None:
        if value and any(not p.startswith("/") for p in value):
            raise ValueError("each path starts with /")
        return value

    @model_validator(mode="after")
    def _runner_is_configured(self) -> MigrateSettings:
        if self.runner == "sql" and not self.directory:
            raise ValueError("runner = 'sql' needs `directory`")
        if self.runner == "command" and not self.command:
            raise ValueError("runner = 'command' needs `command`")
        if self.runner == "sql" and (self.expected_version_command or self.expected_version):
            raise ValueError(
                "the sql runner expects its newest file: expected_version(_command) is for 'command'"
            )
        return self


class RollbackSettings(Model):
    database: Literal["restore", "down-migrations", "never"] = "never"
    timeout_s: float = Field(
        300.0,
        gt=0,
        description="the longest a rollback may take, from its first step to the end of its verification: "
        "one over it runs to its end (never stopped half way) and is ROLLBACK_FAILED (exit 12)",
    )
    database_timeout_s: float | None = Field(
        None,
        gt=0,
        description="the same limit for an undo that is the database alone (a failed migration's restore "
        "or down-migrations); default: timeout_s",
    )
    maintenance: bool = Field(
        False,
        description="when the database is undone after the release went out: maintenance mode "
        "(platform.kubernetes.maintenance) first, then the database, then the previous release brought "
        "back onto it (Granter's rollback steps 2-4); default: the application first (Summit GA 7.1-7.3)",
    )


# -- metrics: Prometheus, SLO checks, canary analysis, the watch after release ----------------
#
# PromQL templates may use three placeholders, filled in when a query runs: {service}
# (environment.service, the scrape job), {release} and {window} (a range such as 30s or 5m).
# Only those exact tokens are replaced, so label matchers such as {job="a"} stay as written.

PROMQL_PLACEHOLDERS = ("service", "release", "window")
_PROMQL_TOKEN = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DURATION = re.compile(r"^(?:\d+(?:ms|s|m|h|d|w|y))+$")
_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_DURATION_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def duration_seconds(text: str) -> float:
    """``90s`` -> 90.0, ``1h30m`` -> 5400.0: a Prometheus duration in seconds."""
    if not _DURATION.match(text):
        raise ValueError(f"{text!r} is not a Prometheus duration (e.g. 30s, 5m, 1h30m)")
    return float(sum(int(n) * _DURATION_UNIT_S[unit] for n, unit in _DURATION_PART.findall(text)))


def _duration(value: str) -> str:
    duration_seconds(value)
    return value


def _promql_template(value: str) -> str:
    unknown = sorted({m.group(1) for m in _PROMQL_TOKEN.finditer(value)} - set(PROMQL_PLACEHOLDERS))
    if unknown:
        raise ValueError(
            f"unknown placeholder {{{unknown[0]}}}: PromQL templates may use only "
            + ", ".join(f"{{{name}}}" for name in PROMQL_PLACEHOLDERS)
        )
    if not value.strip():
        raise ValueError("an empty query")
    return value


Duration = Annotated[str, AfterValidator(_duration)]
PromQL = Annotated[str, AfterValidator(_promql_template)]

_SELECTOR = 'job="{service}",release="{release}"'
_USER_ROUTES = 'route!~"/metrics|/health.*"'  # what users request, not scrapes and probes
_REQUESTS = f"http_requests_total{{{_SELECTOR},{_USER_ROUTES}}}"
_LATENCY_BUCKETS = f"http_request_duration_seconds_bucket{{{_SELECTOR},{_USER_ROUTES}}}"


def _quantile_ms(q: float, buckets: str) -> str:
    return f"1000 * histogram_quantile({q}, sum by (le) (rate({buckets}[{{window}}])))"


class MetricQueries(Model):
    """The PromQL behind each SLO, by name. Defaults fit the sandbox's demo service.

    Every query answers for one release of one service: a single number, or nothing (no
    traffic, no target) which the checks treat as no data, never as zero.
    """

    error_ratio: PromQL = (
        f'(sum(rate({_REQUESTS[:-1]},status=~"5.."}}[{{window}}])) or vector(0))'
        f" / sum(rate({_REQUESTS}[{{window}}]))"
    )
    latency_p95: PromQL = _quantile_ms(0.95, _LATENCY_BUCKETS)
    """Milliseconds."""
    latency_p99: PromQL = _quantile_ms(0.99, _LATENCY_BUCKETS)
    db_query_p99: PromQL = _quantile_ms(0.99, f"db_query_duration_seconds_bucket{{{_SELECTOR}}}")
    cpu: PromQL = f"max(rate(process_cpu_seconds_total{{{_SELECTOR}}}[{{window}}]))"
    """The busiest instance's CPU, as a fraction of one core."""
    memory: PromQL = f"max(process_resident_memory_bytes{{{_SELECTOR}}}) / (256 * 1024 * 1024)"
    """The largest instance's resident memory as a fraction of what it is allocated (256 MiB)."""
    memory_growth: PromQL = f"max(deriv(process_resident_memory_bytes{{{_SELECTOR}}}[{{window}}]))"
    """Bytes per second: a leak shows as steady growth long before a limit is reached."""
    restarts: PromQL = f"sum(changes(process_start_time_seconds{{{_SELECTOR}}}[{{window}}]))"
    db_connections: PromQL = f"sum(db_connections_in_use{{{_SELECTOR}}})"
    cache_hit_ratio: PromQL = (
        f"sum(rate(cache_hits_total{{{_SELECTOR}}}[{{window}}])) / (sum(rate(cache_hits_total{{{_SELECTOR}}}"
        f"[{{window}}])) + sum(rate(cache_misses_total{{{_SELECTOR}}}[{{window}}])))"
    )
    error_count: PromQL = f'sum(increase({_REQUESTS[:-1]},status=~"5.."}}[{{window}}])) or vector(0)'
    """Failed requests over the window: with ``request_count``, what an error ratio is judged on."""
    request_count: PromQL = f"sum(increase({_REQUESTS}[{{window}}]))"
    latency_histogram: PromQL = f"sum by (le, route) (increase({_LATENCY_BUCKETS}[{{window}}]))"
    """Requests by latency bucket (seconds) and route over the window: each route judged on its own."""
    db_query_histogram: PromQL = (
        f"sum by (le) (increase(db_query_duration_seconds_bucket{{{_SELECTOR}}}[{{window}}]))"
    )
    cache_hit_count: PromQL = f"sum(increase(cache_hits_total{{{_SELECTOR}}}[{{window}}]))"
    cache_lookup_count: PromQL = (
        f"sum(increase(cache_hits_total{{{_SELECTOR}}}[{{window}}])) + sum(increase(cache_misses_total"
        f"{{{_SELECTOR}}}[{{window}}]))"
    )
    """With ``cache_hit_count``, what a cache hit ratio is judged on."""
    request_rate: PromQL = f"sum(rate({_REQUESTS}[{{window}}]))"
    """Requests per second: whether the release gets traffic at all (and its share in a canary)."""
    targets_up: PromQL = f"count(up{{{_SELECTOR}}} == 1)"
    """How many of the release's instances Prometheus scrapes successfully."""
    custom: dict[str, PromQL] = Field(default_factory=dict, description="more named queries")

    @model_validator(mode="after")
    def _custom_names_are_new(self) -> MetricQueries:
        clash = sorted(set(self.custom) & set(type(self).model_fields))
        if clash:
            raise ValueError(f"custom query {clash[0]!r} has the name of a built-in query: set it directly")
        return self

    def names(self) -> list[str]:
        return [name for name in type(self).model_fields if name != "custom"] + list(self.custom)

    def get(self, name: str) -> str:
        """The template of the query called ``name``."""
        if name in self.custom:
            return self.custom[name]
        if name == "custom" or name not in type(self).model_fields:
            raise KeyError(f"no query named {name!r} (known: {', '.join(self.names())})")
        return str(getattr(self, name))


class SloCheck(Model):
    """One SLO: a query, an absolute threshold, maybe a limit relative to a baseline, and how
    often to sample it before deciding (Argo Rollouts' interval, count and failure limit)."""

    query: str = Field(description="the name of a query in [metrics.queries]; default: the check's name")
    description: str = Field("", description="the runbook line this check implements")
    max: float | None = Field(None, description="the value must stay at or below this")
    min: float | None = Field(None, description="the value must stay at or above this")
    unit: str = ""
    max_increase_ratio: float | None = Field(
        None, ge=0, description="at most this much worse than the baseline, as a fraction of it"
    )
    max_increase_points: float | None = Field(
        None, ge=0, description="at most this much above the baseline, in the value's units"
    )
    max_decrease_ratio: float | None = Field(None, ge=0, le=1)
    max_decrease_points: float | None = Field(None, ge=0)
    window: Duration | None = Field(
        None, description="the {window} of this check's query; default metrics.window"
    )
    interval_s: float = Field(30.0, gt=0)
    count: int = Field(10, ge=1, description="samples taken when nothing fails")
    failure_limit: int = Field(3, ge=1, description="this many consecutive failed samples fail the check")
    on_no_data: Literal["fail", "inconclusive"] = "fail"
    events: str | None = Field(
        None,
        description="a ratio judged on its counts: the query counting its events over {window} "
        "(failed requests), with `total`; the check then fails only when the counts show the limit "
        "broken with metrics.confidence",
    )
    total: str | None = Field(None, description="the query counting every event over {window} (requests)")
    histogram: str | None = Field(
        None,
        description="a quantile judged on its buckets: the query giving the bucket counts over {window} "
        "by `le` (and by any label that splits it, e.g. the route: each judged on its own)",
    )
    quantile: float | None = Field(None, gt=0, lt=1, description="with `histogram`: which quantile (0.95)")
    histogram_scale: float = Field(
        1000.0, gt=0, description="from the histogram's unit to the check's (seconds to milliseconds)"
    )
    noise_floor: float = Field(
        0.0,
        ge=0,
        description="in the check's unit: a difference from the baseline or stable smaller than this "
        "is never a regression (a few ms against a 200 ms SLO)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> SloCheck:
        if (self.max is None) == (self.min is None):
            raise ValueError("set exactly one of `max` or `min`")
        increase = (self.max_increase_ratio, self.max_increase_points)
        decrease = (self.max_decrease_ratio, self.max_decrease_points)
        if self.max is not None and any(v is not None for v in decrease):
            raise ValueError("a `max` check gets worse by increasing: use max_increase_ratio or _points")
        if self.min is not None and any(v is not None for v in increase):
            raise ValueError("a `min` check gets worse by decreasing: use max_decrease_ratio or _points")
        if all(v is not None for v in increase) or all(v is not None for v in decrease):
            raise ValueError("set a relative limit as a ratio or in points, not both")
        if self.failure_limit > self.count:
            raise ValueError(
                f"failure_limit {self.failure_limit} can never be reached in {self.count} samples"
            )
        if (self.events is None) != (self.total is None):
            raise ValueError("a ratio judged on its counts needs both `events` and `total`")
        if (self.histogram is None) != (self.quantile is None):
            raise ValueError("a quantile judged on its buckets needs both `histogram` and `quantile`")
        if self.events is not None and self.histogram is not None:
            raise ValueError("a check is a ratio (`events`, `total`) or a quantile (`histogram`), not both")
        return self

    @property
    def counted(self) -> bool:
        """Judged on counts (a ratio's events and total, or a histogram's buckets), with confidence."""
        return self.events is not None or self.histogram is not None

    @property
    def direction(self) -> Literal["max", "min"]:
        """``max``: higher is worse (latency, errors); ``min``: lower is worse (cache hits)."""
        return "max" if self.max is not None else "min"

    @property
    def threshold(self) -> float:
        value = self.max if self.max is not None else self.min
        assert value is not None
        return value

    @property
    def comparator(self) -> str:
        return "<=" if self.direction == "max" else ">="

    @property
    def relative_ratio(self) -> float | None:
        return self.max_increase_ratio if self.direction == "max" else self.max_decrease_ratio

    @property
    def relative_points(self) -> float | None:
        return self.max_increase_points if self.direction == "max" else self.max_decrease_points


class VerifySloSettings(Model):
    """Which SLOs the verify phase samples right after the rollout. A slow leak or a budget
    that burns slowly shows only over time: leave those to the observe phase."""

    checks: list[str] = Field(default_factory=list, description="SLO checks sampled in verify; default: all")


class MannWhitneySettings(Model):
    alpha: float = Field(0.05, gt=0, lt=1, description="one-sided p-value below which the canary is worse")
    min_effect_size: float = Field(
        0.3,
        ge=0,
        le=1,
        description="Cliff's delta below which a significant difference is too small to act on",
    )


class CanarySettings(Model):
    """Progressive traffic to the new release, judged against the stable one at every step."""

    steps: list[int] = Field(default_factory=lambda: [5, 10, 25, 50, 75, 100], min_length=1)
    pause_s: float | list[float] = Field(300.0, description="after each step: one value, or one per step")
    interval_s: float = Field(30.0, gt=0, description="how often canary and stable are sampled in a pause")
    window: Duration | None = Field(
        None,
        description="the {window} of each sample; default metrics.window. About interval_s keeps the "
        "samples independent, which the Mann-Whitney test assumes",
    )
    min_samples: int = Field(5, ge=2, description="samples of each side before any verdict")
    min_requests: int | None = Field(
        None,
        ge=0,
        description="requests the canary must have served in a step before the step can pass; default "
        "(None): derived, enough to see an error ratio at the error check's max with `confidence`",
    )
    confidence: float = Field(
        0.95,
        gt=0,
        lt=1,
        description="the probability that a step sees at least one error of a canary failing at the "
        "threshold: ceil(ln(1 - confidence) / ln(1 - max)) requests (max 0.02: 149)",
    )
    error_check: str = Field(
        "error_ratio", description="the [metrics.slo] check (an error ratio) whose max sets the requests"
    )
    detect_error_ratio: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="the error ratio each step must be able to see, when not the error check's max "
        "(a max of 0.001 needs 2995 requests a step)",
    )
    max_step_s: float | None = Field(
        None,
        gt=0,
        description="how long a step may run on waiting for its requests (from its weight change), then "
        "it is no data and the canary is rolled back; default: three pauses, or the pause and twice "
        "min_samples intervals, whichever is longer",
    )
    max_relative_degradation: float = Field(
        0.2, ge=0, description="the canary may be this much worse (0.2 = 20 %)"
    )
    checks: list[str] = Field(default_factory=list, description="SLO checks compared; default: all")
    warmup_s: float = Field(
        0.0,
        ge=0,
        description="left out of each step's judgement from its start: the first requests of freshly "
        "started canary instances (imports, connection pools) are not the release's latency",
    )
    mann_whitney: MannWhitneySettings = MannWhitneySettings()

    @model_validator(mode="after")
    def _steps_climb_to_100(self) -> CanarySettings:
        if any(not 0 < s <= 100 for s in self.steps) or self.steps != sorted(set(self.steps)):
            raise ValueError("steps must be increasing percentages between 1 and 100")
        if self.steps[-1] != 100:
            raise ValueError("the last step must be 100")
        if isinstance(self.pause_s, list):
            if len(self.pause_s) != len(self.steps):
                raise ValueError(f"pause_s has {len(self.pause_s)} values for {len(self.steps)} steps")
            if any(p < 0 for p in self.pause_s):
                raise ValueError("a pause cannot be negative")
        elif self.pause_s < 0:
            raise ValueError("a pause cannot be negative")
        return self

    def pause_for(self, step_index: int) -> float:
        """The pause after step ``step_index`` (0-based)."""
        return self.pause_s[step_index] if isinstance(self.pause_s, list) else self.pause_s

    @model_validator(mode="after")
    def _a_step_can_end(self) -> CanarySettings:
        if self.max_step_s is None:
            return self
        judged = [self.pause_for(i) for i, step in enumerate(self.steps) if step < 100]
        if judged and self.max_step_s < max(judged):
            raise ValueError(f"max_step_s {self.max_step_s:g} is shorter than a pause ({max(judged):g} s)")
        if self.max_step_s < self.min_samples * self.interval_s:
            raise ValueError(
                f"max_step_s {self.max_step_s:g} leaves no time for min_samples {self.min_samples} "
                f"samples interval_s {self.interval_s:g} apart"
            )
        return self

    def looks(self) -> int:
        """How many times a step's counts may be judged at most (every interval up to the longest
        step): a failure needs its confidence over all of them, not over one look."""
        longest = max(self.max_step_for(i) for i in range(len(self.steps)))
        return max(1, math.ceil(longest / self.interval_s))

    def max_step_for(self, step_index: int) -> float:
        """How long step ``step_index`` may run waiting for its samples and requests before it is no data."""
        if self.max_step_s is not None:
            return self.max_step_s
        pause = self.pause_for(step_index)
        return max(pause + 2 * self.min_samples * self.interval_s, 3 * pause)


class ObserveStep(Model):
    every_s: float = Field(gt=0)
    until_s: float = Field(gt=0, description="seconds since the watch started")


def _offsets(observe: ObserveSettings) -> list[float]:
    from releasegate.analysis.slo import schedule_offsets

    return schedule_offsets([(step.every_s, step.until_s) for step in observe.schedule])


class ObserveSettings(Model):
    """The watch after release: sample often at first, then less (Granter: every 5 min for
    30 min, every 10 min to 1 h, every 30 min to 4 h)."""

    schedule: list[ObserveStep] = Field(
        default_factory=lambda: [
            ObserveStep(every_s=300, until_s=1800),
            ObserveStep(every_s=600, until_s=3600),
            ObserveStep(every_s=1800, until_s=14400),
        ],
        min_length=1,
    )
    consecutive_failures: int = Field(3, ge=1)
    checks: list[str] = Field(default_factory=list, description="SLO checks watched; default: all")

    @model_validator(mode="after")
    def _schedule_moves_forward(self) -> ObserveSettings:
        ends = [step.until_s for step in self.schedule]
        if ends != sorted(set(ends)):
            raise ValueError("schedule: each until_s must be later than the one before")
        return self

    @property
    def duration_s(self) -> float:
        return self.schedule[-1].until_s


def _burn_window(value: tuple[str, str, float]) -> tuple[str, str, float]:
    long, short, factor = value
    if duration_seconds(long) <= duration_seconds(short):
        raise ValueError(f"the long window {long} must be longer than the short one {short}")
    if factor <= 0:
        raise ValueError("a burn-rate factor must be positive")
    return value


class BurnRateSettings(Model):
    """The SRE workbook's multi-window, multi-burn-rate alert: page when both windows of a
    pair burn the error budget faster than the pair's factor."""

    objective: float = Field(0.999, gt=0, lt=1, description="the SLO, e.g. 0.999 = 99.9 % good requests")
    query: str = Field("error_ratio", description="the query giving the bad-request ratio over {window}")
    events: str | None = Field(
        None,
        description="with `total`: queries counting failed and all requests over {window}; a window then "
        "burns too fast only when its lower bound at metrics.confidence does",
    )
    total: str | None = None
    windows: list[Annotated[tuple[Duration, Duration, float], AfterValidator(_burn_window)]] = Field(
        default_factory=lambda: [("1h", "5m", 14.4), ("6h", "30m", 6.0)],
        min_length=1,
        description="[long window, short window, burn-rate factor]",
    )


class BaselineSettings(Model):
    """What the new release is compared with in verify and observe, where no stable release
    serves beside it (rolling, blue-green): ``before``, the serving release measured in
    preflight, minutes before, on a machine that may have changed since; or ``history``, the
    previous release's own numbers over the same window at the same time of previous days
    (``offsets``), asked at every sample. A counted check (events and total, a histogram) is
    then compared count by count and route by route, as a canary is with stable."""

    source: Literal["before", "history"] = Field(
        "before",
        description="before: measured in preflight; history: the previous release at the same time of "
        "previous days, from Prometheus",
    )
    offsets: list[Duration] = Field(
        default_factory=lambda: ["1d", "7d"],
        min_length=1,
        description="with source = history: how far back, e.g. 1d (yesterday) and 7d (a week ago); "
        "their counts are added, and an offset without data is left out",
    )


def _loopback_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("a path starts with /")
    return value


class LoadSettings(Model):
    """Synthetic traffic the canary and observe phases can switch on (loopback targets only)."""

    paths: list[Annotated[str, AfterValidator(_loopback_path)]] = Field(min_length=1)
    rps: float = Field(20.0, gt=0, le=500)
    concurrency: int = Field(4, ge=1, le=32)
    duration_s: float = Field(600.0, gt=0, le=3600, description="it stops by itself after this")
    timeout_s: float = Field(5.0, gt=0)


class MetricsSettings(Model):
    """Where Prometheus is, what to ask it, and what the answers must be."""

    prometheus_url: Annotated[str, AfterValidator(_no_inline_password)]
    timeout_s: float = Field(5.0, gt=0)
    retries: int = Field(2, ge=0, le=10, description="retries of a query that could not connect or got a 5xx")
    scrape_interval_s: float = Field(15.0, gt=0, description="how often Prometheus scrapes the service")
    window: Duration = Field("5m", description="the default {window} of every query")
    confidence: float = Field(
        0.99,
        gt=0.5,
        lt=1,
        description="how sure the counts must be before a ratio or quantile check fails: its one-sided "
        "bound at this confidence past the limit; canary against stable, a p-value below 1 - this",
    )
    queries: MetricQueries = MetricQueries()
    slo: dict[str, SloCheck] = Field(default_factory=dict)
    verify: VerifySloSettings = VerifySloSettings()
    canary: CanarySettings = CanarySettings()
    observe: ObserveSettings = ObserveSettings()
    burn_rate: BurnRateSettings = BurnRateSettings()
    baseline: BaselineSettings = BaselineSettings()
    load: LoadSettings | None = None

    @field_validator("prometheus_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected http://host:port of the Prometheus server")
        return value.rstrip("/")

    @field_validator("slo", mode="before")
    @classmethod
    def _query_defaults_to_the_check_name(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: {"query": k, **v} if isinstance(v, dict) else v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _names_resolve(self) -> MetricsSettings:
        known = self.queries.names()
        for name, check in self.slo.items():
            for key in ("query", "events", "total", "histogram"):
                wanted = getattr(check, key)
                if wanted is not None and wanted not in known:
                    raise ValueError(f"slo.{name}.{key}: no query named {wanted!r} in [metrics.queries]")
        sections = (
            ("verify", self.verify.checks),
            ("canary", self.canary.checks),
            ("observe", self.observe.checks),
        )
        for section, names in sections:
            missing = [n for n in names if n not in self.slo]
            if missing:
                raise ValueError(f"{section}.checks: {missing[0]!r} is not a [metrics.slo] check")
        for key in ("query", "events", "total"):
            wanted = getattr(self.burn_rate, key)
            if wanted is not None and wanted not in known:
                raise ValueError(f"burn_rate.{key}: no query named {wanted!r}")
        if (self.burn_rate.events is None) != (self.burn_rate.total is None):
            raise ValueError("burn_rate: counts need both `events` and `total`")
        return self

    @model_validator(mode="after")
    def _failures_in_a_row_can_happen(self) -> MetricsSettings:
        """Failures count "in a row" only in windows that do not overlap (analysis.slo): a check
        whose series is too short for ``failure_limit`` such windows could never fail."""
        for name, check in self.slo.items():
            if check.counted or "{window}" not in self.queries.get(check.query):
                continue
            window_s = duration_seconds(check.window or self.window)
            span = (check.count - 1) * check.interval_s
            if (check.failure_limit - 1) * window_s > span + 1e-9:
                raise ValueError(
                    f"slo.{name}: {check.failure_limit} failures in windows of {window_s:g} s that do not "
                    f"overlap need {(check.failure_limit - 1) * window_s:g} s between the first and the last, "
                    f"and {check.count} samples {check.interval_s:g} s apart span {span:g} s: shorten its "
                    "window, or sample it longer (count)"
                )
            if name not in self.check_names("observe"):
                continue
            offsets = _offsets(self.observe)
            limit = min(self.observe.consecutive_failures, len(offsets))
            if (limit - 1) * window_s > offsets[-1] - offsets[0] + 1e-9:
                raise ValueError(
                    f"slo.{name}: the observe schedule's {limit} failures in a row in windows of {window_s:g} s "
                    f"that do not overlap need {(limit - 1) * window_s:g} s, and the schedule spans "
                    f"{offsets[-1] - offsets[0]:g} s: shorten the check's window"
                )
        return self

    @model_validator(mode="after")
    def _canary_requests_derive(self) -> MetricsSettings:
        """A [metrics.canary] section must say how many requests a step needs: explicitly, or by a
        check the canary compares whose max is an error ratio (see analysis.detection)."""
        if "canary" not in self.model_fields_set:
            return self
        from releasegate.analysis.detection import RequestsNeeded

        canary = self.canary
        try:
            RequestsNeeded.from_settings(canary, self.slo, self.confidence)
        except ValueError as exc:
            raise ValueError(f"canary.{exc}") from None
        derived = canary.min_requests is None and canary.detect_error_ratio is None
        if derived and canary.error_check not in self.check_names("canary"):
            raise ValueError(
                f"canary.error_check: {canary.error_check!r} is not among the checks the canary compares "
                "(canary.checks): the requests it needs would see errors nobody judges"
            )
        return self

    def check_names(self, section: Literal["verify", "canary", "observe"]) -> list[str]:
        """The SLO checks a phase uses: its own list, or every check."""
        names = {"verify": self.verify.checks, "canary": self.canary.checks, "observe": self.observe.checks}[
            section
        ]
        return list(names) or list(self.slo)

    def queries_in_use(self) -> dict[str, str | None]:
        """Every query a run asks (name -> the window it is asked over, None: metrics.window):
        each SLO check's, ``request_rate`` (traffic waits and the canary's request count) and
        the burn rate's."""
        used: dict[str, str | None] = {"request_rate": None}
        for check in self.slo.values():
            for name in (check.query, check.events, check.total, check.histogram):
                if name is not None:
                    used.setdefault(name, check.window)
        for name in (self.burn_rate.query, self.burn_rate.events, self.burn_rate.total):
            if name is not None:
                used.setdefault(name, None)
        return used

    def histogram_queries(self) -> set[str]:
        """The queries asked for bucket counts (by ``le``), not for one number."""
        return {check.histogram for check in self.slo.values() if check.histogram is not None}


HealthValue = str | bool | int


class HealthContract(Model):
    """What this service's health endpoint answers when it is healthy, in its own shape: the
    runbooks' ``{"status": "healthy", "version": "v4.0.0-ga"}``, Spring Boot's ``{"status": "UP"}``,
    a boolean, or nothing but HTTP 200. Dotted paths reach into nested JSON (``build.version``);
    an empty one means the answer has no such field."""

    status_field: str = Field(
        "status", description='where the status is ("" = no status field: an HTTP 2xx answer is healthy)'
    )
    healthy: list[HealthValue] = Field(
        default_factory=lambda: ["healthy"],
        min_length=1,
        description='the status values that mean healthy: ["healthy"], ["UP"], [true]',
    )
    version_field: str = Field(
        "version", description='where the version is ("" = none: the platform\'s release is the truth)'
    )
    version_header: str = Field("", description="a response header that carries the version instead")
    version: str = Field(
        "{release}", description='the version a release reports, from its {release}: "v{release}-ga"'
    )
    checks_field: str = Field("checks", description='a map of named checks, each passing or not ("" = none)')
    check_ok: list[HealthValue] = Field(
        default_factory=lambda: ["ok", "up", "pass", "passing", "healthy", "connected", True],
        description="values of a passing check (text compared without case); a check that is an object is "
        "read at its status_field",
    )

    @model_validator(mode="after")
    def _one_version_source(self) -> HealthContract:
        if self.version_field and self.version_header:
            raise ValueError("the version is read from version_field or version_header, not both")
        if self.reports_version and "{release}" not in self.version:
            raise ValueError('version must derive from the release: it needs {release} (e.g. "v{release}")')
        return self

    @property
    def reports_version(self) -> bool:
        """Whether the answer names a version at all (Granter's does not)."""
        return bool(self.version_field or self.version_header)

    def expected_version(self, release: str) -> str:
        return fill(self.version, release)


class VerifySettings(Model):
    health_path: str = "/health"
    health: HealthContract = HealthContract()
    health_db_path: str | None = Field(
        None,
        description="a database health endpoint (none: the database is asked directly, a timed SELECT 1)",
    )
    health_db_latency_field: str = Field(
        "latency_ms",
        description='where /health/db puts its latency: a number of ms, or text with units ("<5ms", "4 ms")',
    )
    health_probes: int = Field(10, ge=1, description="the runbook's `for i in {1..10}`")
    health_interval_s: float = Field(2.0, ge=0)
    max_db_latency_ms: float = Field(100.0, gt=0)
    max_failed_requests_during_rollout: int = Field(0, ge=0)
    traffic_path: str = Field(
        "/health/live", description="what the probe traffic requests during the rollout"
    )
    traffic_rps: float = Field(10.0, gt=0, le=200, description="probe requests per second during the rollout")
    traffic_max_s: float = Field(
        900.0, gt=0, description="the probe traffic stops after this, rollout or not"
    )
    request_timeout_s: float = Field(5.0, gt=0)


class ReportSettings(Model):
    dir: str = "reports"


class LedgerSettings(Model):
    """Where runs are recorded: a SQLite file (default ``<reports>/ledger.sqlite``) or a
    PostgreSQL database shared by a team's CI runners."""

    path: str | None = None
    dsn: Annotated[str | None, AfterValidator(lambda v: v and _no_inline_password(v))] = None
    password: Secret | None = None

    @model_validator(mode="after")
    def _one_place(self) -> LedgerSettings:
        if self.path and self.dsn:
            raise ValueError("a ledger is either `path` (SQLite) or `dsn` (PostgreSQL), not both")
        return self


class LeaseSettings(Model):
    """One run changes the environment at a time: a lease row in the application's database,
    renewed every ``duration_s / 3`` while its run lives, free ``duration_s`` after its last
    renewal when its holder is gone (at once when it died on the same machine)."""

    duration_s: float = Field(
        30.0, ge=1, le=3600, description="a holder that stops renewing loses it after this"
    )
    name: str | None = Field(
        None, description="what is leased; default: the environment's name (files sharing a target share it)"
    )
    store: Literal["auto", "database", "kubernetes"] = Field(
        "auto",
        description="where it is held: a row in the application's [database], or a coordination.k8s.io "
        "Lease in platform.kubernetes.namespace; auto: the Lease for a Kubernetes environment",
    )


# -- smoke: user journeys (smoke/, e2e/, and the verify phase) --------------------------------

_JOURNEY_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
JourneyParam = str | int | float | bool | list[str]


class JourneySettings(Model):
    """One journey of [smoke.journeys.NAME]: where its system answers and what it must show.

    URLs and paths may use ``{url}`` (platform.url); a path is relative to ``base_url``;
    ``cleanup_path`` and ``leak_check_path`` contain ``{prefix}``, the run's test-data prefix."""

    base_url: str = Field("{url}", description="where the journey's system answers; {url} = platform.url")
    timeout_s: float = Field(10.0, gt=0, description="each request's timeout")
    username: str | None = Field(None, description="an existing account, for journeys that log in as one")
    password: Secret | None = None
    token: Secret | None = Field(None, description="bearer token for the journey's own calls (test data)")
    health_paths: list[str] = Field(default_factory=list, description="every health probe: paths or URLs")
    health_checks: list[str] = Field(
        default_factory=list, description="names /health must report under its checks"
    )
    metrics_path: str = "/metrics"
    metrics: list[str] = Field(default_factory=list, description="metric names /metrics must expose")
    cleanup_path: str | None = Field(None, description="DELETE removes what carries {prefix}")
    leak_check_path: str | None = Field(
        None, description="GET lists what still carries {prefix} after cleanup; anything listed leaked"
    )
    after_rollback: bool = Field(
        True, description="run it in the rollback's verification (journeys that need no new feature)"
    )
    params: dict[str, JourneyParam] = Field(default_factory=dict, description="the journey's own settings")

    @field_validator("cleanup_path", "leak_check_path")
    @classmethod
    def _names_the_prefix(cls, value: str | None) -> str | None:
        if value is not None and "{prefix}" not in value:
            raise ValueError("test data is found by {prefix}, e.g. /test-data?prefix={prefix}")
        return value

    def base(self, platform_url: str) -> str:
        return self.base_url.replace("{url}", platform_url.rstrip("/")).rstrip("/")


class SmokeSettings(Model):
    """User journeys: ``pytest smoke/`` runs them alone; the verify phase runs them with
    ``on_verify``, and a rollback's verification runs those marked ``after_rollback``."""

    on_verify: bool = True
    journeys: dict[str, JourneySettings] = Field(default_factory=dict)

    @field_validator("journeys")
    @classmethod
    def _journey_names(cls, value: dict[str, JourneySettings]) -> dict[str, JourneySettings]:
        bad = [name for name in value if not _JOURNEY_NAME.match(name)]
        if bad:
            raise ValueError(f"journey name {bad[0]!r}: lowercase letters, digits and '-'")
        return value


# -- policy: the engine the release's authorisation decisions come from (Summit GA 4.1, 5, 7.2) --


class PolicyDecision(Model):
    """One line of the decision table (GA 5.1 "Test cases passing"): who does what to which
    resource, and what the policy must answer."""

    name: str = Field(description="how the case reads in the reports")
    action: str
    user: dict[str, Any] = Field(
        default_factory=dict, description='e.g. {id = "test-user", clearances = ["TS"]}'
    )
    resource: dict[str, Any] = Field(default_factory=dict, description='e.g. {classification = "S"}')
    expect: str | bool = Field(description='the decision: "ALLOW", "DENY", ... (or true/false for OPA rules)')


class PolicyBundleSettings(Model):
    """The release's policy bundle, activated before the application rolls out (GA 4.1 "Deploy
    OPA policies first") and the previous one put back when a later gate fails (GA 7.2).

    ``kind = "http"``: the bundle document the release ships is PUT to the engine (``path``);
    ``kind = "kubernetes-env"``: the engine's Deployment is told which bundle to pull, as GA 7.2
    does it (``kubectl set env deployment/opa -n governance BUNDLE_VERSION=v3.0.0-ga``); the
    change of its pod template restarts it."""

    kind: Literal["http", "kubernetes-env"] = "http"
    file: str | None = Field(None, description="http: the bundle document (JSON); {release} is filled in")
    path: str = Field(
        "/v1/policy/bundles/main", description="http: GET reads the active bundle, PUT activates one"
    )
    version_field: str = Field("version", description="http: where the bundle document names its version")
    deployment: str | None = Field(None, description="kubernetes-env: the policy engine's Deployment")
    namespace: str | None = Field(None, description="kubernetes-env: its namespace (default: the platform's)")
    container: str | None = Field(None, description="kubernetes-env: the container that reads the variable")
    env_var: str = Field("BUNDLE_VERSION", description="kubernetes-env: the variable naming the bundle")
    value: str = Field("v{release}", description="kubernetes-env: its value for the release")
    activation_timeout_s: float = Field(30.0, gt=0, description="until the engine reports the new version")

    @model_validator(mode="after")
    def _kind_has_its_keys(self) -> PolicyBundleSettings:
        if self.kind == "http" and self.file is None:
            raise ValueError('kind "http" activates the file the release ships: set file')
        if self.kind == "kubernetes-env" and (self.deployment is None or self.container is None):
            raise ValueError(
                'kind "kubernetes-env" sets a variable on a Deployment: set deployment and container'
            )
        return self


class PolicySettings(Model):
    """The policy engine: its health and version, the decision table, and optionally the bundle
    this run activates. Paths are relative to ``url`` ({url} = platform.url); fields are dotted
    paths into the JSON answers (``result.allow`` for OPA's data API)."""

    url: str = Field("{url}", description="the policy engine's base URL; {url} = platform.url")
    token: Secret | None = Field(None, description="bearer token, e.g. ${POLICY_ADMIN_TOKEN}")
    timeout_s: float = Field(5.0, gt=0)
    evaluate_path: str = "/v1/policy/evaluate"
    input_key: str | None = Field(None, description='wrap the request as {KEY: case}: "input" for OPA')
    decision_field: str = "decision"
    answer_version_field: str | None = Field(
        "policyVersion", description="where an evaluation names the policy version that decided"
    )
    version_path: str = Field("/health/policy", description="where the active bundle's version is read")
    version_field: str = "bundleVersion"
    status_field: str | None = Field("status", description="must say healthy (None: not checked)")
    expected_version: str | None = Field(
        None, description='the version the release expects, e.g. "v{release}"; default: the bundle\'s'
    )
    decisions: list[PolicyDecision] = Field(default_factory=list)
    bundle: PolicyBundleSettings | None = None

    @model_validator(mode="after")
    def _knows_the_version(self) -> PolicySettings:
        if self.expected_version is None and self.bundle is None:
            raise ValueError(
                'say which policy version the release expects: expected_version = "v{release}", '
                "or a [policy.bundle] whose version is read from its file"
            )
        names = [d.name for d in self.decisions]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate is not None:
            raise ValueError(f"decision {duplicate!r} appears twice: each case is its own gate")
        return self

    def base(self, platform_url: str) -> str:
        return self.url.replace("{url}", platform_url.rstrip("/")).rstrip("/")


class SecurityScanReadiness(Model):
    """GA 1.1 "Security scan passed (0 critical vulnerabilities)": Trivy JSON or SARIF files."""

    reports: list[str] = Field(min_length=1, description="paths; {release} is filled in")
    max_critical: int = Field(0, ge=0)


class AcceptanceReadiness(Model):
    """GA 1.1 "Acceptance score: 100 %": a JUnit XML report of the acceptance suite."""

    junit: str = Field(description="path; {release} is filled in")
    min_pass_ratio: float = Field(1.0, gt=0, le=1)


class PerformanceReadiness(Model):
    """GA 1.1 "Performance tests passed": k6's summary JSON, every threshold met."""

    k6_summary: str = Field(description="path; {release} is filled in")


class FreezeSettings(Model):
    start: date
    end: date
    reason: str = "change freeze"


class WindowReadiness(Model):
    """The deployment window: allowed days and hours in a time zone, outside any freeze."""

    timezone: str = "UTC"
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(
        default_factory=lambda: ["mon", "tue", "wed", "thu"], min_length=1
    )
    start: dt_time = dt_time(9, 0)
    end: dt_time = dt_time(17, 0)
    freeze: list[FreezeSettings] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (e.g. Europe/Berlin, UTC)") from None
        return value

    @model_validator(mode="after")
    def _start_before_end(self) -> WindowReadiness:
        if self.start >= self.end:
            raise ValueError("start must be before end")
        return self


class MonitoringReadiness(Model):
    """Monitoring active (Release Manager, GA 2.2): targets up, alert rules loaded, nothing
    critical firing, on the environment's Prometheus ([metrics])."""

    min_rules: int = Field(1, ge=0, description="alerting rules Prometheus must have loaded")
    blocking_severities: list[str] = Field(default_factory=lambda: ["critical"])


class ChecklistReadiness(Model):
    """The runbooks' people items, confirmed by name in a signed file or with --confirm."""

    items: list[str] = Field(min_length=1)
    file: str | None = Field(None, description='a TOML checklist: [items."NAME"] confirmed_by, at')


_GITHUB_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


def _github_repo(value: str) -> str:
    if not _GITHUB_REPO.match(value):
        raise ValueError('expected "owner/name", e.g. "summit/summit"')
    return value


class GitHubReadiness(Model):
    """The release's repository on GitHub (or GitHub Enterprise, by its API URL): the connection
    that [readiness.ci] and [readiness.approvals] read through; not a check by itself."""

    repo: Annotated[str, AfterValidator(_github_repo)] = Field(description='"owner/name"')
    ref: str = Field(
        "v{release}", description="the release's commit: a tag, a branch or a sha; {release} is filled in"
    )
    api_url: Annotated[str, AfterValidator(_no_inline_password)] = Field(
        "https://api.github.com", description="GitHub Enterprise: https://HOST/api/v3"
    )
    token: Secret | None = Field(
        None,
        description="e.g. ${GITHUB_TOKEN}; without one GitHub answers 60 requests an hour, public repos only",
    )
    timeout_s: float = Field(10.0, gt=0, le=60)
    retries: int = Field(
        2, ge=0, le=5, description="retries of a 5xx answer, a timeout or a refused connection"
    )


class CiReadiness(Model):
    """Summit GA 1.1 "MVP-4 gate workflow passed" (`gh run list --workflow=mvp4-gate.yml`): the
    workflow's latest run for the release's commit completed with conclusion success."""

    workflow: str = Field(min_length=1, description='the workflow\'s file name ("mvp4-gate.yml") or its id')


class ApprovalsReadiness(Model):
    """ "Code review approved by at least 2 reviewers" (Summit), "Code review completed and
    approved" (Release Manager): distinct approving reviewers on the release's pull request."""

    min_approvals: int = Field(2, ge=1)
    pull_request: str | int | None = Field(
        None,
        description="its number, or a template of it with {release}; default: the pull request of the "
        "release's commit",
    )
    stale_approvals: Literal["ignore", "count"] = Field(
        "ignore",
        description="approvals given before the pull request's last commit: ignored (they approved other "
        "code), or counted as GitHub does unless its 'dismiss stale approvals' is on",
    )


class StagingReadiness(Model):
    """ "Staging deployment successful" and "Rollback tested in staging" (Summit GA 1.1, Granter 6,
    Release Manager): read from the ledger staging records its runs in."""

    environment: str = Field("staging", description="the staging environment's name in the ledger")
    within_days: float = Field(7.0, gt=0, description="how recent the staging run must be")
    drill: bool = Field(True, description="a `pytest rollback/ --drill` of the release passed there too")
    ledger: LedgerSettings | None = Field(
        None, description="the ledger staging writes to; default: this environment's [ledger]"
    )


def _host_port(value: str) -> str:
    host, port = split_host_port(value)
    if not host or not 0 < port < 65536:
        raise ValueError('expected "HOST:PORT" (or "HOST" for port 443)')
    return value


def split_host_port(value: str) -> tuple[str, int]:
    """``api.internal:8443`` -> (api.internal, 8443); ``api.internal`` -> port 443; ``[::1]:443``."""
    host, sep, port = value.rpartition(":")
    if not sep or "]" in port or (":" in host and not host.startswith("[")):
        host, port = value, "443"
    try:
        number = int(port)
    except ValueError:
        number = 0
    return host.strip("[]"), number


class TlsReadiness(Model):
    """TLS certificates valid for more than `min_days`, and trusted, on every host users reach."""

    hosts: list[Annotated[str, AfterValidator(_host_port)]] = Field(min_length=1)
    min_days: float = Field(30.0, ge=0)
    ca_file: str | None = Field(None, description="a PEM bundle to trust; default: the system's trust store")
    timeout_s: float = Field(5.0, gt=0, le=60)


class ReadinessSettings(Model):
    """The pre-deployment checklist as preflight gates; each sub-section present is a check
    (``github`` is the connection ``ci`` and ``approvals`` use)."""

    security_scan: SecurityScanReadiness | None = None
    acceptance: AcceptanceReadiness | None = None
    performance: PerformanceReadiness | None = None
    window: WindowReadiness | None = None
    monitoring: MonitoringReadiness | None = None
    checklist: ChecklistReadiness | None = None
    github: GitHubReadiness | None = None
    ci: CiReadiness | None = None
    approvals: ApprovalsReadiness | None = None
    staging: StagingReadiness | None = None
    tls: TlsReadiness | None = None

    @model_validator(mode="after")
    def _github_checks_need_github(self) -> ReadinessSettings:
        for name in ("ci", "approvals"):
            if getattr(self, name) is not None and self.github is None:
                raise ValueError(
                    f"readiness.{name} asks GitHub: it needs a [readiness.github] section (repo, ref, token)"
                )
        return self


NotifyEvent = Literal["start", "rollback_started", "success", "aborted", "rolled_back", "rollback_failed"]


class NotifySettings(Model):
    """A Slack-compatible webhook told when a deployment starts, when a rollback begins (Granter's
    "IN PROGRESS"), and how it ended."""

    slack_webhook: Secret = Field(description="the incoming webhook's URL, e.g. ${SLACK_WEBHOOK_URL}")
    channel: str | None = None
    username: str | None = "releasegate"
    events: list[NotifyEvent] = Field(
        default_factory=lambda: [
            "start",
            "rollback_started",
            "success",
            "aborted",
            "rolled_back",
            "rollback_failed",
        ]
    )
    templates: dict[NotifyEvent, str] = Field(
        default_factory=dict, description="override a message; {release}, {environment}, {failure}, ..."
    )
    timeout_s: float = Field(5.0, gt=0, le=30)
    retries: int = Field(2, ge=0, le=5)


class ComplianceSettings(Model):
    """The deployment logged for compliance (one JSON line per run), and the release's SBOM and
    provenance required before it goes out (the optimisation summary's "Trivy scanning + SBOM")."""

    log: str = Field(description="an append-only JSON Lines file; relative: in the reports directory")
    sbom: str | None = Field(None, description="CycloneDX or SPDX JSON; {release} is filled in")
    provenance: str | None = Field(None, description="in-toto / SLSA provenance JSON; {release} is filled in")


class Environment(Model):
    environment: EnvironmentInfo
    sandbox: SandboxSettings | None = None
    platform: PlatformSettings
    database: DatabaseSettings
    redis: RedisSettings | None = None
    metrics: MetricsSettings | None = None
    backup: BackupSettings
    migrate: MigrateSettings | None = None
    rollback: RollbackSettings = RollbackSettings()
    verify: VerifySettings = VerifySettings()
    readiness: ReadinessSettings | None = None
    notify: NotifySettings | None = None
    compliance: ComplianceSettings | None = None
    report: ReportSettings = ReportSettings()
    ledger: LedgerSettings = LedgerSettings()
    lease: LeaseSettings = LeaseSettings()
    smoke: SmokeSettings | None = None
    policy: PolicySettings | None = None
    planned_minutes: dict[Phase, float] = Field(
        default_factory=dict, description="each phase's planned duration, from the runbook"
    )
    source: Path = Field(Path("."), exclude=True)

    @model_validator(mode="after")
    def _monitoring_needs_prometheus(self) -> Environment:
        if self.readiness and self.readiness.monitoring and self.metrics is None:
            raise ValueError("readiness.monitoring asks Prometheus: it needs a [metrics] section")
        if self.lease.store == "kubernetes" and self.platform.kubernetes is None:
            raise ValueError(
                'lease.store = "kubernetes" is a Lease in platform.kubernetes.namespace: no such section'
            )
        argo = self.platform.kubernetes.argo_rollout if self.platform.kubernetes else None
        if argo is not None and argo.analysis == "releasegate" and self.metrics is None:
            raise ValueError(
                'platform.kubernetes.argo_rollout.analysis = "releasegate" judges each step with '
                '[metrics.canary]: it needs a [metrics] section (or analysis = "argo")'
            )
        if self.image_templates_need_commits and not (self.readiness and self.readiness.github):
            raise ValueError(
                "an image template names the release's commit ({sha}): it is the commit of "
                "[readiness.github] ref, which this environment does not have"
            )
        bundle = self.policy.bundle if self.policy else None
        if bundle is not None and bundle.kind == "kubernetes-env" and self.platform.kubernetes is None:
            raise ValueError(
                'policy.bundle kind "kubernetes-env" needs the kubernetes platform\'s connection'
            )
        return self

    @property
    def name(self) -> str:
        return self.environment.name

    @property
    def image_templates_need_commits(self) -> bool:
        """Whether an image is named by the release's commit (``prod-{sha}``), not the release."""
        k8s = self.platform.kubernetes
        if k8s is None:
            return False
        templates = [d.image for d in k8s.deployments]
        templates += [k8s.argo_rollout.image] if k8s.argo_rollout else []
        templates += list(k8s.helm.set_values.values()) if k8s.helm else []
        return any(needs_commits(t) for t in templates)

    @property
    def is_production(self) -> bool:
        return self.environment.tier == Tier.PRODUCTION


def configured(env: Environment, dotted: str) -> bool:
    """Whether the environment has the section ``dotted`` (``readiness.window``), or the switch
    (``readiness.staging.drill = false`` is off): a check that is not configured is off, not passed."""
    node: Any = env
    for part in dotted.split("."):
        node = getattr(node, part, None)
        if node is None or node is False:
            return False
    return True


def resolve_env_path(name_or_path: str, root: Path) -> Path:
    """``--env`` takes a name (``environments/NAME.toml`` under root) or a path to a file."""
    if name_or_path.endswith(".toml") or os.sep in name_or_path:
        path = Path(name_or_path)
        return path if path.is_absolute() else (Path.cwd() / path)
    path = root / "environments" / f"{name_or_path}.toml"
    if not path.exists():
        known = sorted(p.name.removesuffix(".toml") for p in (root / "environments").glob("*.toml"))
        raise ConfigError(
            f"environment '{name_or_path}' not found: no {_shown(path, root)} "
            f"(known: {', '.join(known) or 'none'})"
        )
    return path


def load_environment(name_or_path: str, root: Path, overrides: Sequence[str | Path] = ()) -> Environment:
    """Read, expand and validate an environment file, with each override file (``--env-override``)
    merged onto it in order; errors are one line naming the file (the override's when the key
    came from it) and the key."""
    path = resolve_env_path(name_or_path, root)
    shown = _shown(path, root)
    raw = _read_toml(path, shown)
    from_override: dict[str, Any] = {}
    override_shown = shown_with = shown
    for override in overrides:
        override_path = Path(override) if Path(override).is_absolute() else Path.cwd() / override
        override_shown = _shown(override_path, root)
        layer = _read_toml(override_path, override_shown)
        try:
            raw = merge_override(raw, layer)
        except ValueError as exc:
            raise ConfigError(f"{override_shown}: {exc}") from None
        from_override = merge_override(from_override, {k: v for k, v in layer.items() if k != OVERRIDE_TABLE})
        shown_with = f"{shown} with {override_shown}"
    placeholders = _load_placeholders(raw, root)
    unset = _unset_placeholder(raw, placeholders)
    if unset:
        raise ConfigError(f"{shown_with}: {unset}")
    raw = _expand(raw, placeholders)
    try:
        return Environment.model_validate({**raw, "source": path})
    except ValidationError as exc:
        loc = exc.errors(include_url=False)[0]["loc"]
        where = override_shown if overrides and _sets(from_override, loc) else shown_with
        raise ConfigError(f"{where}: {_describe(exc)}") from None


def _read_toml(path: Path, shown: str) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{shown}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{shown}: not valid TOML: {exc}") from None


OVERRIDE_TABLE = "override"
"""An override file's own table: ``[override] remove = ["notify", "readiness.github"]``."""


def merge_override(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` merged onto ``base`` (neither is changed), so that one file can point an
    environment elsewhere and leave the rest as its authors wrote it. The rules:

    - first, every dotted key listed in ``[override] remove`` is taken out of ``base`` (a key
      that is not there is an error: a typo would otherwise remove nothing, silently);
    - then tables merge key by key, recursively; any other value (a string, a number, an array,
      an array of tables) replaces the one in ``base``.

    A section removed and set again in the same file is thereby replaced whole."""
    meta = override.get(OVERRIDE_TABLE, {})
    if not isinstance(meta, dict):
        raise ValueError(f"{OVERRIDE_TABLE}: expected a table with `remove`")
    unknown = sorted(set(meta) - {"remove"})
    if unknown:
        raise ValueError(f"{OVERRIDE_TABLE}.{unknown[0]}: unknown key (known: remove)")
    remove = meta.get("remove", [])
    if not isinstance(remove, list) or not all(isinstance(k, str) and k for k in remove):
        raise ValueError(f'{OVERRIDE_TABLE}.remove: expected a list of dotted keys, e.g. ["notify"]')
    merged = _deep_copy(base)
    for dotted in remove:
        parent: Any = merged
        *path, last = dotted.split(".")
        for part in path:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if not isinstance(parent, dict) or last not in parent:
            raise ValueError(f"{OVERRIDE_TABLE}.remove: {dotted!r} is not in the environment")
        del parent[last]
    return _merge(merged, {k: v for k, v in override.items() if k != OVERRIDE_TABLE})


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = _merge(base[key], value)
        else:
            base[key] = _deep_copy(value)
    return base


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def _sets(raw: dict[str, Any], loc: tuple[int | str, ...]) -> bool:
    """Whether the override set the key at ``loc`` (or the section holding it)."""
    node: Any = raw
    for part in loc:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
        if not isinstance(node, dict):
            return True
    return True


def _load_placeholders(raw: dict[str, Any], root: Path) -> dict[str, str]:
    values = {"root": str(root.resolve()), "tmp": tempfile.gettempdir(), "python": sys.executable}
    sandbox_dir = raw.get("sandbox", {}).get("dir") if isinstance(raw.get("sandbox"), dict) else None
    if isinstance(sandbox_dir, str):
        values["sandbox"] = _expand(sandbox_dir, values)
    return values


def _unset_placeholder(value: Any, values: dict[str, str], key: str = "") -> str | None:
    """``{sandbox}`` without a ``[sandbox] dir`` would be taken literally, as a folder named
    ``{sandbox}`` wherever the gates run: say which key uses it instead."""
    if isinstance(value, str):
        for match in _LOAD_PLACEHOLDER.finditer(value):
            if match.group(1) not in values:
                return f"{key}: uses {{{match.group(1)}}}, but the file has no [{match.group(1)}] section with a dir"
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for name, item in items:
        found = _unset_placeholder(item, values, f"{key}.{name}" if key else str(name))
        if found:
            return found
    return None


def _expand(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        return _LOAD_PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), value)
    if isinstance(value, list):
        return [_expand(v, values) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, values) for k, v in value.items()}
    return value


def _describe(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        text = f"{key}: unknown key"
    elif first["type"] == "missing":
        text = f"{key}: required key is missing"
    else:
        message = first["msg"].removeprefix("Value error, ")
        if message.startswith(_SECRET_REFUSALS) or isinstance(first["input"], dict):
            # the value is the secret, or a whole section: never repeat it
            text = f"{key}: {message}"
        else:
            text = f"{key}: {message} (got {first['input']!r})"
    if len(errors) > 1:
        others = ", ".join(".".join(str(p) for p in e["loc"]) for e in errors[1:4])
        text += f"; {len(errors) - 1} more problem(s): {others}"
    return text


def _shown(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)
