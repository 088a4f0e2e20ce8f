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

import os
import re
import sys
import tempfile
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

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


def _no_inline_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password and not SECRET_REF.match(parts.password):
        raise ValueError("the URL carries a password: put it in `password` as an ${ENV_VAR} reference")
    return url


class EnvironmentInfo(Model):
    name: str
    tier: Tier = Tier.STAGING
    service: str = Field(description="the service being released, as named in reports")
    description: str = ""


class SandboxSettings(Model):
    """Present only in environments that target the embedded sandbox."""

    autostart: bool = True
    dir: str


class LocalPlatformSettings(Model):
    """N processes of a release behind nginx, replaced one at a time."""

    instances: int = Field(3, ge=1)
    ports: tuple[int, int] = Field(description="inclusive range of ports for instances")
    command: list[str] = Field(min_length=1, description="argv; {release} and {port} are filled in")
    workdir: str = "{root}"
    env: dict[str, str] = Field(default_factory=dict)
    secret_env: dict[str, Secret] = Field(default_factory=dict)
    state_dir: str
    nginx_upstream_file: str
    nginx_pid_file: str
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
        low, high = self.ports
        needed = self.instances + max(self.max_surge, self.rollback_max_surge or self.instances)
        if high - low + 1 < needed:
            raise ValueError(
                f"ports {low}-{high} hold {high - low + 1} instances; "
                f"{self.instances} instances with max_surge {self.max_surge} need {needed}"
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


def _release_template(value: str) -> str:
    if value.count("{release}") != 1:
        raise ValueError("an image template must contain {release} exactly once")
    return value


KubeName = Annotated[str, AfterValidator(_kube_name)]
Surge = Annotated[int | str, AfterValidator(_surge_value)]
ImageTemplate = Annotated[str, AfterValidator(_release_template)]


class KubernetesDeploymentSettings(Model):
    """One Deployment the release updates, in the order the list gives (Granter 3.1-3.5)."""

    name: KubeName
    container: str = Field(description="the container whose image carries the release")
    image: ImageTemplate = Field(description='e.g. "granter/backend-core:v{release}"')
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


class HelmSettings(Model):
    """`helm upgrade --install --wait`, `helm history`, `helm rollback` (Summit GA 4.2, 7.1)."""

    release: str = Field(description="the Helm release name")
    chart: str
    binary: str = "helm"
    values_files: list[str] = Field(default_factory=list)
    set_values: dict[str, str] = Field(
        default_factory=lambda: {"image.tag": "{release}"}, description="--set KEY=VALUE, {release} filled in"
    )
    timeout_s: float = Field(600.0, gt=0, description="--timeout (GA 4.2: 10m)")


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


class MigrateSettings(Model):
    runner: Literal["sql", "command"] = "sql"
    directory: str | None = Field(
        None, description="sql runner: directory of NNNN_name.sql, may use {release}"
    )
    command: list[str] | None = Field(None, description="command runner: argv run with the DSN in dsn_env")
    dsn_env: str = "DATABASE_URL"
    version_query: str = "SELECT version FROM schema_migrations ORDER BY version DESC LIMIT 1"
    expected_version: str | None = Field(None, description="command runner: the version the release expects")
    lock_timeout: str = "5s"
    statement_timeout: str = "5min"
    rehearse: bool = True
    on_failure: Literal["restore", "down-migrations"] = "restore"
    timeout_s: float = Field(900.0, gt=0)

    @model_validator(mode="after")
    def _runner_is_configured(self) -> MigrateSettings:
        if self.runner == "sql" and not self.directory:
            raise ValueError("runner = 'sql' needs `directory`")
        if self.runner == "command" and not self.command:
            raise ValueError("runner = 'command' needs `command`")
        return self


class RollbackSettings(Model):
    database: Literal["restore", "down-migrations", "never"] = "never"
    timeout_s: float = Field(300.0, gt=0)


class VerifySettings(Model):
    health_path: str = "/health"
    health_db_path: str = "/health/db"
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


class Environment(Model):
    environment: EnvironmentInfo
    sandbox: SandboxSettings | None = None
    platform: PlatformSettings
    database: DatabaseSettings
    redis: RedisSettings | None = None
    backup: BackupSettings
    migrate: MigrateSettings | None = None
    rollback: RollbackSettings = RollbackSettings()
    verify: VerifySettings = VerifySettings()
    report: ReportSettings = ReportSettings()
    ledger: LedgerSettings = LedgerSettings()
    planned_minutes: dict[Phase, float] = Field(
        default_factory=dict, description="each phase's planned duration, from the runbook"
    )
    source: Path = Field(Path("."), exclude=True)

    @property
    def name(self) -> str:
        return self.environment.name

    @property
    def is_production(self) -> bool:
        return self.environment.tier == Tier.PRODUCTION


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


def load_environment(name_or_path: str, root: Path) -> Environment:
    """Read, expand and validate an environment file; errors are one line naming file and key."""
    path = resolve_env_path(name_or_path, root)
    shown = _shown(path, root)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{shown}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{shown}: not valid TOML: {exc}") from None
    raw = _expand(raw, _load_placeholders(raw, root))
    try:
        return Environment.model_validate({**raw, "source": path})
    except ValidationError as exc:
        raise ConfigError(f"{shown}: {_describe(exc)}") from None


def _load_placeholders(raw: dict[str, Any], root: Path) -> dict[str, str]:
    values = {"root": str(root.resolve()), "tmp": tempfile.gettempdir(), "python": sys.executable}
    sandbox_dir = raw.get("sandbox", {}).get("dir") if isinstance(raw.get("sandbox"), dict) else None
    if isinstance(sandbox_dir, str):
        values["sandbox"] = _expand(sandbox_dir, values)
    return values


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
