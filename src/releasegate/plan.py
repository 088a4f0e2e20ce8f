"""What a dry run prints, and whether a stopped run may be resumed.

The plan is read from the same places a real run acts on: the gate modules (their docstrings
and ``threshold`` markers), the environment (thresholds, policies) and, read-only, the target
(the release serving now, the migrations still pending). Nothing here changes anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from releasegate.actions.migrate import pending_migrations
from releasegate.config import Environment, Phase
from releasegate.errors import ReleasegateError
from releasegate.ledger import RunRecord
from releasegate.platforms import make_platform
from releasegate.probes.postgres import Postgres
from releasegate.redaction import redact
from releasegate.state import phase_of


def last_phase(record: RunRecord) -> str | None:
    """The last deployment phase a run started (where it stopped, if it was killed)."""
    phases = [p["phase"] for p in record.phases if p["phase"] in {str(ph) for ph in Phase}]
    return phases[-1] if phases else None


def resume_refusal(record: RunRecord, env: Environment) -> str | None:
    """Why ``--resume`` must not continue this run, or None when it may."""
    if record.failed_phase:
        return f"it had failed ({record.failed_gate}): its undo is due, not a resume"
    if record.undo_started_at:
        return "its rollback had started"
    intent = record.intent("migrate")
    command = env.migrate is not None and env.migrate.runner == "command"
    if intent is not None and intent.done_at is None and command:
        # The built-in runner's files are each one transaction; a killed command left what only it knows.
        return "it was killed while a migration command ran, and only that command knows what it left"
    return None


def render(env: Environment, release: str | None, items: list[pytest.Item]) -> list[str]:
    """The plan: phases in order, each action with what it would change, each check with its
    threshold and source, and what happens when something fails."""
    facts = _Facts(env, release or "?")
    lines = [
        f"releasegate plan (dry run: nothing is changed): {release} to {env.name} ({env.environment.tier})",
        f"  serving now: {facts.current}",
        "",
    ]
    shown: set[str] = set()
    by_phase: dict[Phase, list[pytest.Item]] = {}
    for item in items:
        by_phase.setdefault(phase_of(item), []).append(item)
    for phase, phase_items in by_phase.items():
        planned = env.planned_minutes.get(phase)
        lines.append(f"{phase}" + (f" (runbook: {planned:g} min)" if planned else ""))
        for item in phase_items:
            for fixture in getattr(item, "fixturenames", []):
                describe = _ACTIONS.get(fixture)
                if describe and fixture not in shown:
                    shown.add(fixture)
                    lines.extend(f"  action  {line}" for line in describe(facts))
            lines.append(f"  check   {_title(item)}")
            for key in _threshold_keys(item):
                value = _lookup(env, key)
                if value is not _MISSING:
                    lines.append(f"          threshold {key} = {value}")
            slo_name = _slo_of(item)
            if slo_name and env.metrics is not None:
                watched = "watched" in getattr(getattr(item, "callspec", None), "params", {})
                lines.append(f"          threshold {_describe_slo(slo_name, env, observe=watched)}")
            used = getattr(item, "fixturenames", [])
            source = (
                _journey_source(item, env)
                or _section_source(item, facts)
                or next((describe(facts) for name, describe in _SOURCES.items() if name in used), None)
            )
            if source:
                lines.append(f"          source    {source}")
        lines.append("")
    lines.extend(_on_failure(facts))
    return lines


class _Facts:
    """What the plan needs to know about the target, read once and read-only."""

    def __init__(self, env: Environment, release: str) -> None:
        self.env = env
        self.release = release
        self.postgres = Postgres(env.database)
        self.current = self._read(lambda: make_platform(env).current_release() or "nothing deployed")
        self.pending = (
            self._read(
                lambda: ", ".join(pending_migrations(self.postgres, env.migrate, release)) or "none pending"
            )
            if env.migrate
            else "no migrations"
        )

    @staticmethod
    def _read(question: Callable[[], str]) -> str:
        try:
            return question()
        except (ReleasegateError, OSError) as exc:
            return f"unknown ({exc})"


def _backup(facts: _Facts) -> list[str]:
    b = facts.env.backup
    tables = "; ".join(f"{db}: {', '.join(t)}" for db, t in b.verify_tables.items()) or "none configured"
    return [
        f"pg_dump -Fc {', '.join(b.databases)} into {b.dir} (new files only; the databases are read)",
        f"verify: pg_restore --list, restore into scratch database(s) {b.scratch_prefix}_<db>, "
        f"compare row counts ({tables}); dropped when the run ends",
    ]


def _rehearsal(facts: _Facts) -> list[str]:
    return [f"rehearse migrations on the scratch copy: {facts.pending}"]


def _migration(facts: _Facts) -> list[str]:
    m = facts.env.migrate
    assert m is not None
    how = "built-in SQL runner" if m.runner == "sql" else f"`{' '.join(m.command or [])}`"
    undo = "restore from this run's backup" if m.on_failure == "restore" else "run the down-migrations"
    lines = [
        f"migrate {facts.postgres.dbname}: {facts.pending} ({how}; lock_timeout {m.lock_timeout}, "
        f"statement_timeout {m.statement_timeout})",
        f"if it fails: {undo}, then ABORTED (exit 10)",
    ]
    k8s = facts.env.platform.kubernetes
    if k8s is not None and k8s.maintenance is not None:
        mm = k8s.maintenance
        names = ", ".join(mm.deployments or [d.name for d in k8s.deployments])
        if mm.mode == "scale-to-zero":
            before = f"maintenance mode first: scale {names} to 0, wait {mm.drain_s:g} s to drain"
            after = "the rollout brings the replicas back with the new release"
        else:
            before = f"maintenance mode first: set {mm.env_var}={mm.on_value} on {names}"
            after = f"after the migration: {mm.env_var}={mm.off_value}"
        lines[:0] = [before]
        lines.insert(2, f"{after}; if the migration fails, maintenance mode ends after the database undo")
    return lines


def _rollout(facts: _Facts) -> list[str]:
    env = facts.env
    lines = [f"roll out {facts.release} replacing {facts.current} on the {env.platform.kind} platform"]
    local = env.platform.local
    if local is not None:
        lines.append(
            f"{local.instances} instances, max surge {local.max_surge}, max unavailable {local.max_unavailable}; "
            f"each new one ready on {local.readiness_path} within {local.readiness_timeout_s:g} s and held "
            f"{local.min_ready_s:g} s before it joins nginx"
        )
    k8s = env.platform.kubernetes
    if k8s is not None:
        helm = f" (Helm release {k8s.helm.release})" if k8s.helm else ""
        lines.append(f"strategy {k8s.strategy} in namespace {k8s.namespace}{helm}")
        for number, deployment in enumerate(k8s.deployments, 1):
            image = deployment.image.replace("{release}", facts.release)
            lines.append(
                f"{number}. set image {deployment.name}/{deployment.container}={image}, max surge "
                f"{deployment.max_surge}, max unavailable {deployment.max_unavailable}; wait for the rollout, "
                "then health, restarts and ERROR log lines before the next"
            )
    v = env.verify
    lines.append(
        f"probe traffic meanwhile: GET {env.platform.url.rstrip('/')}{v.traffic_path} at {v.traffic_rps:g}/s"
    )
    return lines


def _policy_bundle(facts: _Facts) -> list[str]:
    policy = facts.env.policy
    assert policy is not None and policy.bundle is not None
    bundle = policy.bundle
    if bundle.kind == "kubernetes-env":
        namespace = bundle.namespace or (k8s.namespace if (k8s := facts.env.platform.kubernetes) else "")
        how = (
            f"kubectl set env deployment/{bundle.deployment} -n {namespace} "
            f"{bundle.env_var}={bundle.value.replace('{release}', facts.release)}, then its rollout"
        )
        kept = "the variable's value of now is kept in the ledger first"
    else:
        how = (
            f"activate policy bundle {(bundle.file or '').replace('{release}', facts.release)} "
            f"(PUT {policy.base(facts.env.platform.url)}{bundle.path})"
        )
        kept = "the active bundle is kept in the ledger first"
    return [
        f"{how} before the application changes; {kept}",
        f"wait until {policy.version_path} reports its version (at most {bundle.activation_timeout_s:g} s); "
        "if a later gate fails, the kept bundle is put back after the application",
    ]


_ACTIONS: dict[str, Callable[[_Facts], list[str]]] = {
    "backup": _backup,
    "rehearsal": _rehearsal,
    "migration": _migration,
    "policy_bundle": _policy_bundle,
    "rollout": _rollout,
}
_SOURCES: dict[str, Callable[[_Facts], str]] = {  # the most specific first: a check shows one source
    "observation": lambda f: _prometheus(f) + ", on the observe schedule",
    "slo_verdicts": lambda f: _prometheus(f) + ", by release label",
    "baseline": lambda f: _prometheus(f) + ", the serving release before the change",
    "prometheus": lambda f: _prometheus(f),
    "kubernetes": lambda f: (
        f"kubernetes API (context {f.env.platform.kubernetes.context or 'default'}, "
        f"namespace {f.env.platform.kubernetes.namespace})"
        if f.env.platform.kubernetes
        else "kubernetes API"
    ),
    "postgres": lambda f: redact(f"postgresql://{f.postgres.host}:{f.postgres.port}/{f.postgres.dbname}"),
    "redis": lambda f: redact(f.env.redis.url) if f.env.redis else "no redis",
    "policy_engine": lambda f: (
        f"policy engine at {f.env.policy.base(f.env.platform.url)}" if f.env.policy else "no [policy]"
    ),
    "service": lambda f: f"{f.env.platform.url} (through the load balancer)",
    "platform": lambda f: f"{f.env.platform.kind} platform state and each instance directly",
    "rollout": lambda f: f"the {f.env.platform.kind} platform's rollout result",
}


def _github(readiness: Any, release: str) -> str:
    """``GitHub API at https://api.github.com, repo o/r, commit of v2.0.0, token from $GITHUB_TOKEN``"""
    github = readiness.github
    token = f"token from ${github.token.variable}" if github.token else "no token"
    ref = github.ref.replace("{release}", release)
    return redact(f"GitHub API at {github.api_url}, repo {github.repo}, commit of {ref}, {token}")


def _staging_ledger(staging: Any, env: Environment) -> str:
    """The ledger [readiness.staging] reads: its own, else this environment's [ledger]."""
    named = staging.ledger
    ledger = named if named and (named.path or named.dsn) else env.ledger
    where = redact(ledger.dsn) if ledger.dsn else ledger.path or f"{env.report.dir}/ledger.sqlite"
    return f"ledger {where}, runs of environment {staging.environment}"


def _tls(tls: Any) -> str:
    trust = f"trusting {tls.ca_file}" if tls.ca_file else "the system's trust store"
    return f"TLS handshakes with {', '.join(tls.hosts)}, {trust}"


_SECTION_SOURCES: dict[str, Callable[[Any, _Facts], str]] = {
    "readiness.ci": lambda r, f: f"{_github(r, f.release)}: runs of {r.ci.workflow}",
    "readiness.approvals": lambda r, f: f"{_github(r, f.release)}: its pull request's reviews",
    "readiness.staging": lambda r, f: _staging_ledger(r.staging, f.env),
    "readiness.staging.drill": lambda r, f: _staging_ledger(r.staging, f.env) + ", kind drill",
    "readiness.tls": lambda r, f: _tls(r.tls),
}
"""Checks whose source is their [readiness] section (given as ``r``), not a fixture."""


def _section_source(item: pytest.Item, facts: _Facts) -> str | None:
    """Only checks of sections the environment has are collected, so ``readiness`` is there."""
    marker = item.get_closest_marker("configured")
    describe = _SECTION_SOURCES.get(marker.args[0]) if marker else None
    return describe(facts.env.readiness, facts) if describe else None


def _prometheus(facts: _Facts) -> str:
    metrics = facts.env.metrics
    return f"Prometheus at {metrics.prometheus_url}" if metrics else "no [metrics]"


def _on_failure(facts: _Facts) -> list[str]:
    env = facts.env
    database = {
        "never": "kept as migrated",
        "restore": "restored from this run's backup (writes since are lost)",
        "down-migrations": "down-migrations run",
    }[env.rollback.database]
    policy = ", then the policy bundle active before" if env.policy and env.policy.bundle else ""
    return [
        "if a gate fails:",
        "  preflight, backup  ABORTED (exit 10): nothing was changed",
        "  migrate            the database is undone (see above), ABORTED (exit 10)",
        f"  deploy, verify     roll back to {facts.current}{policy}; database {database}; verified; "
        "ROLLED_BACK (exit 11)",
        "  the rollback       ROLLBACK_FAILED (exit 12), with what is left to do by hand",
    ]


def _slo_of(item: pytest.Item) -> str | None:
    """The SLO a parametrized gate judges (``test_slo_holds...[latency_p95]``), if any."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    return params.get("slo_name") or params.get("watched")


def _journey_source(item: pytest.Item, env: Environment) -> str | None:
    """``journey granter at http://.../granter, 3 health probes; test data rg-smoke-<id>, ...``"""
    name = getattr(getattr(item, "callspec", None), "params", {}).get("journey_name")
    settings = env.smoke.journeys.get(name) if name and env.smoke is not None else None
    if settings is None:
        return None
    text = f"journey {name} at {settings.base(env.platform.url)}"
    if settings.leak_check_path:
        text += f"; test data rg-smoke-<id>, removed at the end, leak check {settings.leak_check_path}"
    return text


def _describe_slo(name: str, env: Environment, *, observe: bool = False) -> str:
    """``metrics.slo.latency_p95: <= 200 ms, at most +25 % of the baseline; 5 samples 2 s apart...``"""
    metrics = env.metrics
    assert metrics is not None
    slo = metrics.slo[name]
    text = f"metrics.slo.{name}: {slo.comparator} {slo.threshold:g} {slo.unit}".rstrip()
    if slo.relative_ratio is not None:
        text += f", within {slo.relative_ratio:.0%} of the baseline"
    elif slo.relative_points is not None:
        text += f", within {slo.relative_points:g} of the baseline"
    no_data = "fails" if slo.on_no_data == "fail" else "is inconclusive"
    if observe:
        schedule = ", ".join(f"every {s.every_s:g} s until {s.until_s:g} s" for s in metrics.observe.schedule)
        failures = metrics.observe.consecutive_failures
        return f"{text}; {schedule}; {failures} failures in a row fail it; no data {no_data}"
    return (
        f"{text}; {slo.count} samples {slo.interval_s:g} s apart, {slo.failure_limit} failures in a row "
        f"fail it; no data {no_data}"
    )


def _title(item: pytest.Item) -> str:
    doc = getattr(getattr(item, "function", None), "__doc__", None)
    return doc.strip().splitlines()[0] if doc else item.name


def _threshold_keys(item: pytest.Item) -> list[str]:
    return [key for marker in item.iter_markers("threshold") for key in marker.args]


_MISSING = object()


def _lookup(env: Environment, dotted: str) -> Any:
    """The value at a dotted key, or _MISSING when this environment has no such section."""
    value: Any = env
    for part in dotted.split("."):
        value = value.get(part, _MISSING) if isinstance(value, dict) else getattr(value, part, _MISSING)
        if value is _MISSING or value is None:
            return _MISSING
    return value
