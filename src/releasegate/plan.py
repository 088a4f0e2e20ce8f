"""What a dry run prints, and whether a stopped run may be resumed.

The plan is read from the same places a real run acts on: the gate modules (their docstrings
and ``threshold`` markers), the environment (thresholds, policies) and, read-only, the target
(the release serving now, the migrations still pending). Nothing here changes anything.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from releasegate.actions.migrate import expected_version_of, pending_migrations
from releasegate.analysis.detection import RequestsNeeded
from releasegate.analysis.histogram import requests_for
from releasegate.config import Environment, Phase, SloCheck
from releasegate.errors import ReleasegateError
from releasegate.ledger import RunRecord
from releasegate.pipeline import ABORTING_PHASES
from releasegate.platforms import commits_of, make_platform, strategy_of
from releasegate.platforms.local_canary import canary_count, overload
from releasegate.probes.postgres import Postgres
from releasegate.redaction import redact
from releasegate.release_names import fill, needs_commits
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


def identifiers(env: Environment, release: str) -> list[tuple[str, str]]:
    """What each system calls this release, each derived from it by the environment's templates:
    the version its health endpoint reports, the image tags, the git ref, the policy bundle. An
    image named by the release's commit (``prod-{sha}``) is looked up as the run looks it up."""
    found: list[tuple[str, str]] = []
    contract = env.verify.health
    where = contract.version_header or contract.version_field
    found.append(
        (
            "health",
            f"{contract.expected_version(release)} ({where} of {env.verify.health_path})"
            if contract.reports_version
            else f"no version in {env.verify.health_path}: the platform's release is the truth",
        )
    )
    k8s = env.platform.kubernetes
    if k8s is not None:
        commits = commits_of(env)

        def named(template: str) -> str:
            try:
                return fill(template, release, commits)
            except ReleasegateError as exc:
                return f"{template} (the release's commit is unknown: {exc})"

        images = [named(d.image) for d in k8s.deployments]
        if k8s.argo_rollout is not None:
            images.append(named(k8s.argo_rollout.image))
        if k8s.helm is not None:
            images += [f"--set {key}={named(value)}" for key, value in k8s.helm.set_values.items()]
        if images:
            found.append(("images", ", ".join(images)))
    if env.readiness is not None and env.readiness.github is not None:
        found.append(("git ref", fill(env.readiness.github.ref, release)))
    bundle = env.policy.bundle if env.policy is not None else None
    if bundle is not None:
        value = bundle.value if bundle.kind == "kubernetes-env" else bundle.file or ""
        found.append(("policy", fill(value, release)))
    return found


def render(
    env: Environment, release: str | None, items: list[pytest.Item], *, show_gates: bool = False
) -> list[str]:
    """The plan: phases in order, each action with what it would change, each check with its
    threshold and source, the gates that will not run and why, and what happens when something
    fails. It is read from the collected gates, so it lists what the run will execute."""
    facts = _Facts(env, release or "?")
    lines = [
        f"releasegate plan (dry run: nothing is changed): {release} to {env.name} ({env.environment.tier})",
        f"  serving now: {facts.serving}",
        f"  strategy:    {_strategy(facts)}",
        *(f"  {name + ':':<12} {value}" for name, value in identifiers(env, release or "?")),
        "",
    ]
    shown: set[str] = set()
    by_phase: dict[Phase, list[pytest.Item]] = {}
    for item in items:
        by_phase.setdefault(phase_of(item), []).append(item)
    for phase, phase_items in by_phase.items():
        planned = env.planned_minutes.get(phase)
        lines.append(f"{phase}" + (f" (runbook: {planned:g} min)" if planned else ""))
        not_run: dict[tuple[str, str], list[pytest.Item]] = {}
        for item in phase_items:
            why = not_run_reason(item, env, initial=facts.initial)
            if why is not None:
                not_run.setdefault((title(item, env), why), []).append(item)
                continue
            for fixture in getattr(item, "fixturenames", []):
                describe = _ACTIONS.get(fixture)
                if describe and fixture not in shown:
                    shown.add(fixture)
                    lines.extend(f"  action  {line}" for line in describe(facts))
            lines.extend(_check(item, facts))
            if show_gates:
                lines.append(f"          gate      {item.nodeid}")
        for (name, why), skipped in not_run.items():
            count = f" ({len(skipped)} gates)" if len(skipped) > 1 else ""
            lines.append(f"  not run {name.rstrip('.')}{count}: {why}")
            if show_gates:
                lines.extend(f"          gate      {item.nodeid}" for item in skipped)
        lines.append("")
    lines.extend(_on_failure(facts, [p for p in by_phase if p is not None]))
    return lines


def title(item: pytest.Item, env: Environment | None = None) -> str:
    """A gate's title: the first line of its docstring (the runbook line it implements), with
    ``{section.key}`` filled from the environment (``{migrate.version_query}``: the query this
    environment configures), and the parameter of a parametrized gate (which SLO, journey...)."""
    doc = getattr(getattr(item, "function", None), "__doc__", None)
    text = " ".join(doc.strip().split("\n\n")[0].split()) if doc else item.name
    if env is not None:
        text = _PLACEHOLDER.sub(lambda m: _filled(env, m.group(1)), text)
    callspec = getattr(item, "callspec", None)
    if callspec is not None and callspec.id not in ("", "NOTSET") and "canary_weight" not in callspec.params:
        text = f"{text} [{callspec.id}]"
    return text


_PLACEHOLDER = re.compile(r"\{([a-z_]+(?:\.[a-z_]+)+)\}")


def _filled(env: Environment, dotted: str) -> str:
    value = _lookup(env, dotted)
    return dotted if value is _MISSING else str(value)


def not_run_reason(item: pytest.Item, env: Environment, *, initial: bool = False) -> str | None:
    """Why this gate will be skipped in a run of ``env`` (it is collected, then skips), or None
    when it runs. The plan lists such gates as "not run", never as checks."""
    for marker in item.iter_markers("skip"):
        reason = str(marker.kwargs.get("reason", marker.args[0] if marker.args else "skipped"))
        explain = _EMPTY_PARAMETERS.get(_empty_parameter(reason) or "")
        return explain(env) if explain else reason
    for marker in item.iter_markers("skipif"):
        if marker.args and all(isinstance(c, bool) and c for c in marker.args):
            return str(marker.kwargs.get("reason", "skipif"))
    function = getattr(item, "function", None)
    check = _NOT_RUN_GATES.get(getattr(function, "__name__", ""))
    if check is not None and (why := check(env)):
        return why
    for fixture in getattr(item, "fixturenames", []):
        check = _NOT_RUN_FIXTURES.get(fixture)
        if check is not None and (why := check(env)):
            return why
    if initial:
        for name in [getattr(function, "__name__", ""), *getattr(item, "fixturenames", [])]:
            if name in _NEEDS_A_SERVING_RELEASE:
                return _NEEDS_A_SERVING_RELEASE[name]
    return None


def _empty_parameter(reason: str) -> str | None:
    """``got empty parameter set ['slo_name'], ...``: pytest's skip of a parametrize with no values."""
    match = re.search(r"empty parameter set (?:\['|for \()(\w+)", reason)
    return match.group(1) if match else None


_EMPTY_PARAMETERS: dict[str, Callable[[Environment], str]] = {
    "canary_weight": lambda e: "no [metrics.canary] steps in the environment",
    "slo_name": lambda e: "no SLO checks for the verify phase ([metrics.slo], [metrics.verify] checks)",
    "watched": lambda e: "no SLO checks for the observe phase ([metrics.slo], [metrics.observe] checks)",
    "journey_name": lambda e: (
        "no [smoke] journeys in the environment"
        if e.smoke is None or not e.smoke.journeys
        else "smoke.on_verify = false: the journeys run alone (pytest smoke/), not as gates"
    ),
}
"""Why a gate parametrized from the environment has nothing to run, by its parameter."""

_NO_STRATEGY = "initial release: no stable release to compare with, it goes out on every instance at once"
_NO_MIGRATE = "the environment has no [migrate] section: this service has no migrations"
_NO_METRICS = "the environment has no [metrics] section: no SLOs from Prometheus"

_NOT_RUN_FIXTURES: dict[str, Callable[[Environment], str | None]] = {
    "redis": lambda e: None if e.redis else "the environment has no [redis] section",
    "migration": lambda e: None if e.migrate else _NO_MIGRATE,
    "rehearsal": lambda e: (
        _NO_MIGRATE
        if e.migrate is None
        else None
        if e.migrate.rehearse
        else "migrate.rehearse = false in the environment"
    ),
    "prometheus": lambda e: None if e.metrics else _NO_METRICS,
    "policy_engine": lambda e: None if e.policy else "the environment has no [policy] section",
    "policy_bundle": lambda e: (
        None if e.policy and e.policy.bundle else "no [policy.bundle]: the release ships no bundle"
    ),
    "deployments": lambda e: (
        None
        if e.platform.kubernetes and e.platform.kubernetes.deployments
        else "no [[platform.kubernetes.deployments]]"
    ),
}
"""Fixtures that skip the gates using them when the environment lacks their section (the same
conditions as releasegate.fixtures; tests/test_plan.py holds the plan to the run)."""

_NOT_RUN_GATES: dict[str, Callable[[Environment], str | None]] = {
    "test_migration_scripts_ready": lambda e: None if e.migrate else _NO_MIGRATE,
    "test_sbom_and_provenance_ship_with_the_release": lambda e: (
        None
        if e.compliance is None or e.compliance.sbom or e.compliance.provenance
        else "[compliance] names neither an SBOM nor a provenance file"
    ),
    "test_helm_is_installed": lambda e: (
        None
        if e.platform.kubernetes and e.platform.kubernetes.helm
        else "no [platform.kubernetes.helm] section"
    ),
}
"""Gates that decide in their own body to skip, by the same conditions."""

_NEEDS_A_SERVING_RELEASE: dict[str, str] = {
    "canary_started": _NO_STRATEGY,
    "green_started": _NO_STRATEGY,
    "test_current_release_is_healthy": "initial release: nothing serves yet",
    "test_every_query_answers_for_the_serving_release": "initial release: nothing serves yet",
    "test_baseline_of_the_serving_release": "initial release: held to the absolute thresholds alone",
    "test_users_were_served_during_the_migration": "initial release: no users during the migration",
    "test_no_request_failed_during_the_rollout": "initial release: nothing served before it, no downtime",
}
"""Gates and fixtures that have nothing to work on on an empty platform (a first deployment)."""


def _check(item: pytest.Item, facts: _Facts) -> list[str]:
    """A check's lines: its title, each threshold it judges against, and where it reads from."""
    env = facts.env
    weight = getattr(getattr(item, "callspec", None), "params", {}).get("canary_weight")
    if weight is not None:
        return _canary_step(item, facts, weight)
    lines = [f"  check   {title(item, env)}"]
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
    return lines


class _Facts:
    """What the plan needs to know about the target, read once and read-only."""

    def __init__(self, env: Environment, release: str) -> None:
        self.env = env
        self.release = release
        self.postgres = Postgres(env.database)
        self.strategy = strategy_of(env)
        current: str | None = None
        try:
            current = make_platform(env).current_release()
            self.serving = current or "nothing: initial release (a first deployment onto an empty platform)"
            self.initial = current is None
        except (ReleasegateError, OSError) as exc:
            self.serving = f"unknown ({exc})"
            self.initial = False
        self.current = current or "the release serving now"
        self.pending = self._pending() if env.migrate else "no migrations"

    def _pending(self) -> str:
        m = self.env.migrate
        assert m is not None
        if m.runner == "sql":
            return self._read(
                lambda: ", ".join(pending_migrations(self.postgres, m, self.release)) or "none pending"
            )
        now = self._read(lambda: str(self.postgres.schema_version(query=m.version_query) or "no version yet"))
        return f"from {now} ({m.version_query}), {self._read(self._expected)}"

    def _expected(self) -> str:
        """The version the release expects, read as the run reads it (the command only reads)."""
        m = self.env.migrate
        assert m is not None
        command = m.expected_version_command and not m.expected_version
        env = {**self.postgres.client_env(), m.dsn_env: self.postgres.url()} if command else None
        expected = expected_version_of(m, self.release, env)
        if expected.version is None:
            return "expecting the version the rehearsal reaches (no expected version set)"
        return f"expecting {expected.version} ({expected.source})"

    @staticmethod
    def _read(question: Callable[[], str]) -> str:
        try:
            return question()
        except (ReleasegateError, OSError) as exc:
            return f"unknown ({exc})"


def _image(template: str, release: str) -> str:
    """The image a step sets; one named by the release's commit as its template (the commit is
    looked up once, in the plan's header)."""
    return template.replace("{release}", release) if needs_commits(template) else fill(template, release)


def _strategy(facts: _Facts) -> str:
    """How the release takes the traffic, as the run will do it."""
    env, release = facts.env, facts.release
    where = f"on the {env.platform.kind} platform"
    if facts.initial:
        return (
            f"initial release: nothing serves yet, so {release} goes out to every instance at once "
            f"{where} (no canary: nothing to compare it with); there is no previous release to roll back to"
        )
    local, k8s = env.platform.local, env.platform.kubernetes
    if facts.strategy == "canary":
        steps = env.metrics.canary.steps if env.metrics else [100]
        beside = _local_canary_size(local, steps) if local is not None else "canary beside stable"
        return (
            f"canary {where}: {beside}, traffic at {', '.join(str(s) for s in steps)} %, judged against "
            f"{facts.current} at each step, then promoted"
        )
    if facts.strategy == "blue-green":
        warm = f", kept warm {local.keep_warm_s:g} s after the switch" if local is not None else ""
        return (
            f"blue-green {where}: green started beside blue, asked directly, then the traffic switched{warm}"
        )
    if facts.strategy == "argo-rollout":
        return f"Argo Rollout {where}: the Rollout's own steps, followed one by one"
    if local is not None:
        return (
            f"rolling update {where}: {local.instances} instance(s), max surge {local.max_surge}, "
            f"max unavailable {local.max_unavailable}"
        )
    if k8s is not None:
        return f"{facts.strategy} {where}: " + ", ".join(d.name for d in k8s.deployments)
    return f"{facts.strategy} {where}"


def _canary_step(item: pytest.Item, facts: _Facts, weight: int) -> list[str]:
    """One canary step: its percentage, pause, what is judged against which limits, what rolls back."""
    env = facts.env
    metrics = env.metrics
    assert metrics is not None
    canary = metrics.canary
    index = canary.steps.index(weight)
    head = f"  check   canary at {weight} % of requests to {facts.release}"
    if weight == 100:
        return [
            f"{head}: every request on the canary, no comparison left to make (the verify phase judges "
            "it alone); then the canary is promoted",
        ]
    judged = []
    for name in metrics.check_names("canary"):
        slo = metrics.slo[name]
        limit = f"{slo.comparator} {slo.threshold:g} {slo.unit}".rstrip()
        if slo.relative_points is not None:
            relative = f"at most {slo.relative_points:g} worse than stable"
        else:
            relative = f"at most {canary.max_relative_degradation * 100:g} % worse than stable"
        counted = _counted_how(slo, metrics.confidence)
        if counted:
            counted += ", Fisher's exact test"
        if slo.histogram is not None and slo.quantile is not None:
            counted += (
                f"; each group of its buckets on its own once it has {requests_for(slo.quantile)} requests "
                "a side, the step waiting for a group that can have them in time"
            )
        judged.append(f"{name} {limit}, {relative}" + (f" ({counted})" if counted else ""))
    mw = canary.mann_whitney
    needed = RequestsNeeded.from_settings(canary, metrics.slo, metrics.confidence)
    return [
        head,
        f"          health    each canary instance asked {env.verify.health_path} (healthy, version "
        f"{facts.release}) before the weight moves",
        f"          pause     {canary.pause_for(index):g} s; canary and stable ({facts.current}) sampled every "
        f"{canary.interval_s:g} s over {canary.window or metrics.window}; at least {canary.min_samples} samples "
        f"and {needed.why}; it waits up to {canary.max_step_for(index):g} s for them, then no data: rollback",
        f"          judged    {'; '.join(judged)}; Mann-Whitney U (alpha {mw.alpha:g}, Cliff's delta "
        f">= {mw.min_effect_size:g})",
        *(
            f"          threshold {key} = {value}"
            for key, value in ((k, _lookup(env, k)) for k in _threshold_keys(item))
            if value is not _MISSING
        ),
        f"          source    {_prometheus(facts)}, by release label",
        "          if it fails the canary is taken out of the load balancer at once, then the rollback "
        f"(below); {facts.current} keeps serving",
    ]


def _backup(facts: _Facts) -> list[str]:
    b = facts.env.backup
    tables = "; ".join(f"{db}: {', '.join(t)}" for db, t in b.verify_tables.items()) or "none configured"
    m = facts.env.migrate
    rehearsed = m is not None and m.rehearse and facts.postgres.dbname in b.databases
    when = (
        f"{b.scratch_prefix}_{facts.postgres.dbname} is dropped right after the migration rehearsal, the others "
        "right after their rows are compared"
        if rehearsed
        else "dropped right after their rows are compared"
    )
    return [
        f"pg_dump -Fc {', '.join(b.databases)} into {b.dir} (new files only; the databases are read)",
        f"verify: pg_restore --list, restore into scratch database(s) {b.scratch_prefix}_<db>, "
        f"compare row counts ({tables}); {when}; any left are dropped when the run ends",
    ]


def _rehearsal(facts: _Facts) -> list[str]:
    m = facts.env.migrate
    assert m is not None
    scratch = f"{facts.env.backup.scratch_prefix}_{facts.postgres.dbname}"
    return [
        f"rehearse the migration on the scratch copy {scratch} ({_how(facts)}): {facts.pending}; "
        f"{scratch} is dropped right after"
    ]


def _how(facts: _Facts) -> str:
    """The migration runner as it will run: the built-in one, or the command with {release} filled."""
    m = facts.env.migrate
    assert m is not None
    if m.runner == "sql":
        return f"built-in SQL runner, files of {fill(m.directory or '', facts.release)}"
    where = f" in {m.workdir}" if m.workdir else ""
    command = " ".join(fill(part, facts.release) for part in m.command or [])
    return f"`{command}`{where}, the database in ${m.dsn_env}"


def _database_undo(facts: _Facts) -> str:
    m = facts.env.migrate
    assert m is not None
    if m.on_failure == "restore":
        return "the database is restored from this run's backup"
    return "the down-migrations run"


def _migration(facts: _Facts) -> list[str]:
    m = facts.env.migrate
    assert m is not None
    lines = [
        f"migrate {facts.postgres.dbname}: {facts.pending} ({_how(facts)}; lock_timeout {m.lock_timeout}, "
        f"statement_timeout {m.statement_timeout}, stopped after migrate.timeout_s = {m.timeout_s:g} s)",
        f"if it fails: {_database_undo(facts)}, then ABORTED (exit 10)",
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


def _local_readiness(facts: _Facts) -> str:
    local = facts.env.platform.local
    assert local is not None
    return (
        f"each new instance ready on {local.readiness_path} within {local.readiness_timeout_s:g} s and held "
        f"{local.min_ready_s:g} s before it joins nginx"
    )


def _local_canary_size(local: Any, steps: list[int]) -> str:
    """How many canary instances run at the steps, and a step a pinned count refuses."""
    n = local.instances
    if local.canary_instances is None:
        counts = ", ".join(str(canary_count(step, n)) for step in steps)
        return (
            f"canary instances follow the weight (ceil(p × {n} / 100): {counts} at the steps) "
            f"beside {n} stable"
        )
    refused = next(
        (why for why in (overload(step, local.canary_instances, n) for step in steps) if why), None
    )
    return f"{local.canary_instances} canary instance(s) beside {n} stable" + (
        f" (refused: {refused})" if refused else ""
    )


def _canary_start(facts: _Facts) -> list[str]:
    local = facts.env.platform.local
    if local is None:
        return [f"start the canary {facts.release} beside {facts.current}, no traffic yet"]
    count = local.canary_instances or 1
    more = "" if local.canary_instances else " (more as the weight grows)"
    return [
        f"start {count} canary instance(s) of {facts.release}{more} beside the {local.instances} "
        f"of {facts.current}, no traffic yet; {_local_readiness(facts)}"
    ]


def _green_start(facts: _Facts) -> list[str]:
    local = facts.env.platform.local
    count = f"{local.instances} instance(s)" if local is not None else "a full set of instances"
    return [
        f"start green {facts.release} on {count} beside blue {facts.current}, taking no traffic; "
        "each green instance is asked directly before the switch"
    ]


def _rollout(facts: _Facts) -> list[str]:
    env, release = facts.env, facts.release
    local, k8s = env.platform.local, env.platform.kubernetes
    lines: list[str] = []
    if facts.initial:
        count = f"{local.instances} instance(s)" if local is not None else "every replica"
        lines.append(
            f"start {release} on {count} at once on the {env.platform.kind} platform (initial release)"
        )
    elif facts.strategy == "canary":
        count = f"all {local.instances} instances" if local is not None else "every instance"
        surge = f", max surge {local.max_surge}" if local is not None else ""
        lines.append(
            f"after the 100 % step: promote the canary {release} to {count}{surge}, {facts.current} stopped"
        )
    elif facts.strategy == "blue-green":
        warm = f"{local.keep_warm_s:g} s" if local is not None else "the warm period"
        lines.append(
            f"switch the traffic from blue {facts.current} to green {release}; blue stays warm {warm} (a "
            "rollback is a switch back), then finalize retires it"
        )
    elif local is not None:
        lines.append(
            f"rolling update: replace {facts.current} with {release} on {local.instances} instance(s), max surge "
            f"{local.max_surge}, max unavailable {local.max_unavailable}; {_local_readiness(facts)}"
        )
    else:
        lines.append(f"roll out {release} replacing {facts.current} on the {env.platform.kind} platform")
    if k8s is not None:
        helm = f" (Helm release {k8s.helm.release})" if k8s.helm else ""
        lines.append(f"strategy {k8s.strategy} in namespace {k8s.namespace}{helm}")
        for number, deployment in enumerate(k8s.deployments, 1):
            lines.append(
                f"{number}. set image {deployment.name}/{deployment.container}={_image(deployment.image, release)}, "
                f"max surge {deployment.max_surge}, max unavailable {deployment.max_unavailable}; wait for the "
                "rollout, then health, restarts and ERROR log lines before the next"
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
            f"{bundle.env_var}={fill(bundle.value, facts.release)}, then its rollout"
        )
        kept = "the variable's value of now is kept in the ledger first"
    else:
        how = (
            f"activate policy bundle {fill(bundle.file or '', facts.release)} "
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
    "canary_started": _canary_start,
    "green_started": _green_start,
    "rollout": _rollout,
}


def _baseline_source(f: _Facts) -> str:
    """Which baseline the relative limits are judged against ([metrics.baseline])."""
    baseline = f.env.metrics.baseline if f.env.metrics else None
    if baseline is None or baseline.source == "before":
        return ", the serving release before the change"
    return (
        f", the serving release at this time {', '.join(baseline.offsets)} ago, asked again at every sample"
    )


_SOURCES: dict[str, Callable[[_Facts], str]] = {  # the most specific first: a check shows one source
    "observation": lambda f: _prometheus(f) + ", on the observe schedule",
    "slo_verdicts": lambda f: _prometheus(f) + ", by release label",
    "baseline": lambda f: _prometheus(f) + _baseline_source(f),
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
    ref = fill(github.ref, release)
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


def _on_failure(facts: _Facts, phases: list[Phase]) -> list[str]:
    """What the decision tree does when a gate of each phase of this run fails."""
    env = facts.env
    changes = [str(p) for p in phases if p not in ABORTING_PHASES]
    lines = ["if a gate fails:"]
    before = [str(p) for p in phases if p in (Phase.PREFLIGHT, Phase.BACKUP)]
    if before:
        lines.append(f"  in {', '.join(before)}: ABORTED (exit 10), nothing was changed")
    if Phase.MIGRATE in phases and env.migrate is not None:
        undo = _database_undo(facts)
        k8s = env.platform.kubernetes
        if k8s is not None and k8s.maintenance is not None:
            undo += ", then maintenance mode ends"
        lines.append(f"  in migrate: {undo}; ABORTED (exit 10)")
    if changes:
        database = {
            "never": "the database is kept as migrated (rollback.database = never)",
            "restore": "the database is restored from this run's backup (writes since are lost)",
            "down-migrations": "the down-migrations run",
        }[env.rollback.database]
        if env.migrate is None:
            database = "no database change to undo"
        policy = "; the policy bundle active before is put back" if env.policy and env.policy.bundle else ""
        if facts.initial:
            application = f"{facts.release} is stopped; nothing to go back to (no release served before)"
            verified = "its instances gone"
        else:
            application = f"roll back to {facts.current}"
            verified = f"{facts.current} verified ready and healthy" + (
                ", smoke journeys on it" if env.smoke is not None and env.smoke.journeys else ""
            )
        lines.append(
            f"  in {', '.join(changes)}: no further gate runs; {application}{policy}; {database}; "
            f"{verified}; ROLLED_BACK (exit 11)"
        )
    rollback = env.rollback
    if rollback.maintenance and env.rollback.database != "never" and changes:
        lines.append(
            "  rollback order (rollback.maintenance): maintenance mode, the database, then the previous "
            "release brought back onto it"
        )
    limits = f"rollback.timeout_s = {rollback.timeout_s:g} s"
    if rollback.database_timeout_s is not None:
        limits += f" (a database undo alone: rollback.database_timeout_s = {rollback.database_timeout_s:g} s)"
    lines.append(
        "  in the rollback or its verification, or a rollback that takes longer than "
        f"{limits}: ROLLBACK_FAILED (exit 12), with what is left to do by hand"
    )
    return lines


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
        leak_check = settings.leak_check_path.replace("{prefix}", "rg-smoke-<id>")
        text += f"; test data rg-smoke-<id>, removed at the end, leak check {leak_check}"
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
    counted = _counted_how(slo, metrics.confidence)
    if counted:
        text += f"; {counted}, everything since the phase began, failing on the first sample that shows it"
    no_data = "fails" if slo.on_no_data == "fail" else "is inconclusive"
    # a counted check fails on its evidence: only samples without data count "in a row"
    in_a_row = "samples without data" if counted else "failures"
    if observe:
        schedule = ", ".join(f"every {s.every_s:g} s until {s.until_s:g} s" for s in metrics.observe.schedule)
        failures = metrics.observe.consecutive_failures
        return f"{text}; {schedule}; {failures} {in_a_row} in a row fail it; no data {no_data}"
    return (
        f"{text}; {slo.count} samples {slo.interval_s:g} s apart, {slo.failure_limit} {in_a_row} in a row "
        f"fail it; no data {no_data}"
    )


def _counted_how(slo: SloCheck, confidence: float) -> str:
    """``on the counts error_count of request_count, 99% confidence`` ("" when judged on its value)."""
    if slo.events is not None:
        return f"on the counts {slo.events} of {slo.total}, {confidence * 100:.4g} % confidence"
    if slo.histogram is not None:
        floor = f", noise floor {slo.noise_floor:g} {slo.unit}".rstrip() if slo.noise_floor else ""
        return f"on the buckets of {slo.histogram}, {confidence * 100:.4g} % confidence{floor}"
    return ""


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
