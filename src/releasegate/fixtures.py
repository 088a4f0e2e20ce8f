"""The fixtures gate modules use. Actions are session fixtures that run once for the whole run
(``Run.once``): under pytest-xdist the first worker that needs a backup takes it, the others
wait and read its result from the ledger. Each mutation writes its intent first.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from releasegate.actions.backup import Dump, Restore, drop_scratch_copies, dump_database, restore_into_scratch
from releasegate.actions.migrate import MigrationResult, migrate, pending_migrations
from releasegate.actions.migration_review import Review, review_migration
from releasegate.actions.policy import bundle_switch
from releasegate.analysis.canary import CanaryRule
from releasegate.analysis.detection import RequestsNeeded
from releasegate.analysis.slo import SampleVerdict, SeriesVerdict, schedule_offsets
from releasegate.analysis.thresholds import Verdict
from releasegate.config import Environment, MigrateSettings, duration_seconds
from releasegate.errors import ActionError
from releasegate.evidence import Checker
from releasegate.instance_health import ask_health, instances_of
from releasegate.journeys import JourneyResult, run_journey
from releasegate.platforms import instances_reachable, strategy_of
from releasegate.platforms.base import Instance, Platform, RolloutResult
from releasegate.probes.http import Http
from releasegate.probes.policy import PolicyEngine
from releasegate.probes.postgres import Postgres
from releasegate.probes.prometheus import Prometheus, Sample
from releasegate.probes.redis import Redis
from releasegate.probes.traffic import TrafficProbe, TrafficStats
from releasegate.rollback import RollbackSession
from releasegate.run import Run
from releasegate.sampling import History, measure_history, sample_canary_step, sample_together, watch
from releasegate.state import ENV_KEY, EVIDENCE_KEY, ROLLBACK_KEY, RUN_KEY, is_worker, phase_of

NO_STRATEGY_FOR_INITIAL = (
    "initial release: no stable release to compare with, it goes out on every instance at once"
)


@dataclass
class Rollout:
    result: RolloutResult
    traffic: TrafficStats
    done_at: float = field(default_factory=time.monotonic)
    """When the release took every request (or this run resumed after it): where the watch's
    counts begin, so that observe judges every request since, verify's included."""


@pytest.fixture(scope="session")
def env(request: pytest.FixtureRequest) -> Environment:
    """The environment (``--env``) the suite runs against."""
    environment = request.config.stash.get(ENV_KEY, None)
    if environment is None:
        pytest.skip("no releasegate environment: run with --env NAME")
    return environment


@pytest.fixture(scope="session")
def run(request: pytest.FixtureRequest) -> Iterator[Run]:
    """This run. In a single process its teardown carries out the rollback the decision tree
    asks for, at once; under xdist the controller does it, once, for all workers."""
    current = request.config.stash.get(RUN_KEY, None)
    if current is None:
        pytest.skip("not a deployment run: gates need --release")
    yield current
    if not is_worker(request.config):
        current.undo_if_needed()
        if current.pipeline.undo_ok is False:
            pytest.fail(f"ROLLBACK FAILED: {current.pipeline.undo_detail}", pytrace=False)


@pytest.fixture(scope="session")
def rollback(request: pytest.FixtureRequest) -> RollbackSession:
    """The ``pytest rollback/`` session: the run it undoes, its plan, and the acts."""
    session = request.config.stash.get(ROLLBACK_KEY, None)
    if session is None:
        pytest.skip("not a rollback run: pytest rollback/ --env=NAME")
    return session


@pytest.fixture(scope="session")
def release(run: Run) -> str:
    return run.release


@pytest.fixture(scope="session")
def platform(run: Run) -> Platform:
    return run.platform


@pytest.fixture(scope="session")
def postgres(env: Environment) -> Postgres:
    return Postgres.of(env)


@pytest.fixture(scope="session")
def redis(env: Environment) -> Redis:
    if env.redis is None:
        pytest.skip("the environment has no [redis] section")
    return Redis(env.redis)


@pytest.fixture(scope="session")
def service(env: Environment) -> Http:
    """The service as users reach it: through the load balancer."""
    return Http(env.platform.url, timeout_s=env.verify.request_timeout_s, component=env.environment.service)


@pytest.fixture
def check(request: pytest.FixtureRequest) -> Checker:
    """Measure, record evidence, then assert: ``check.at_most("p95", value, limit, unit="ms")``."""
    item = request.node
    current = request.config.stash.get(RUN_KEY, None)
    phase = str(phase_of(item) or ("rollback" if current and current.kind != "deploy" else ""))
    checker = current.checker(item.nodeid, phase) if current else Checker(lambda _e: None, item.nodeid, phase)
    item.stash[EVIDENCE_KEY] = checker.records
    return checker


@pytest.fixture
def journey(env: Environment, check: Checker) -> Callable[[str], JourneyResult]:
    """``journey("granter")`` runs that journey as the environment configures it (smoke/, e2e/),
    skipped with the reason when the environment has no ``[smoke.journeys.NAME]``."""

    def run_one(name: str) -> JourneyResult:
        configured = env.smoke.journeys if env.smoke is not None else {}
        if name not in configured:
            pytest.skip(f"{env.name} configures no {name} journey ([smoke.journeys.{name}])")
        return run_journey(name, env, check)

    return run_one


@pytest.fixture(scope="session")
def previous_release(run: Run) -> str | None:
    """The release serving before this run: what a rollback goes back to."""
    saved = run.once("previous_release", lambda: {"release": run.platform.current_release()})
    if run.previous_release is None and saved["release"] is not None:
        run.remember_previous_release(saved["release"])
    return saved["release"]


@pytest.fixture(scope="session")
def backup(run: Run, postgres: Postgres, env: Environment, previous_release: str | None) -> list[Dump]:
    """``pg_dump -Fc`` of every configured database, row counts taken in the dump's snapshot."""
    settings = env.backup

    def take() -> dict:
        dumps = {}
        for dbname in settings.databases:
            run.progress(f"pg_dump {dbname} -> {settings.dir}")
            tables = settings.verify_tables.get(dbname, [])
            if previous_release is None:  # the initial release's migrations may create them
                missing = sorted(set(tables) - set(postgres.existing_tables(tables, dbname)))
                tables = [t for t in tables if t not in missing]
                if missing:
                    run.progress(f"initial release: {', '.join(missing)} not there yet, no rows to keep")
            dump = dump_database(
                postgres,
                dbname,
                Path(settings.dir),
                run.id,
                tables=tables,
                bin_dir=settings.pg_bin_dir,
                timeout_s=settings.timeout_s,
            )
            run.progress(f"{dump.path.name}: {dump.size_bytes} bytes in {dump.duration_s:.1f} s")
            dumps[dbname] = {**asdict(dump), "path": str(dump.path)}
        return {"dumps": dumps}

    run.once("backup", take)
    return list(run.dumps().values())


@pytest.fixture(scope="session")
def scratch_copies(run: Run, backup: list[Dump], postgres: Postgres, env: Environment) -> dict[str, Restore]:
    """Each dump restored into a scratch database: proof it restores, and the rehearsal's stage.

    Each is dropped as soon as it has served: the application database's copy right after the
    rehearsal, the others right after their rows are counted (and any left when the run ends)."""

    def restore_all() -> dict:
        restores = {}
        for dump in backup:
            scratch = f"{env.backup.scratch_prefix}_{dump.database}"
            run.progress(f"restoring {dump.path.name} into scratch database {scratch}")
            restores[dump.database] = asdict(
                restore_into_scratch(
                    postgres,
                    dump,
                    scratch,
                    tables=list(dump.row_counts),
                    bin_dir=env.backup.pg_bin_dir,
                    timeout_s=env.backup.timeout_s,
                )
            )
        rehearsed = postgres.dbname if env.migrate is not None and env.migrate.rehearse else None
        done = [r["database"] for db, r in restores.items() if db != rehearsed]
        drop_scratch_copies(postgres, done, run.progress)
        return restores

    return {db: Restore(**data) for db, data in run.once("scratch", restore_all).items()}


@pytest.fixture(scope="session")
def migration_review(run: Run, postgres: Postgres, env: Environment) -> Review:
    """The SQL the release will run, written with the reports and linted, before any of it runs."""
    settings = _migrate_settings(env)

    def review() -> dict:
        run.progress(f"reviewing the SQL {run.release} will run (squawk: {settings.review.lint})")
        try:
            return asdict(review_migration(postgres, settings, run.release, run.reports_dir))
        except ActionError as exc:
            return {"error": str(exc)}

    done = run.once("migration_review", review)
    if "error" in done:
        pytest.fail(f"the migration's SQL could not be reviewed: {done['error']}", pytrace=False)
    return Review.from_dict(done)


def _refused_by_review(request: pytest.FixtureRequest, settings: MigrateSettings) -> str:
    """Why the review stops the migration (lint = "fail" and squawk found something), or ""."""
    if settings.review.lint != "fail":
        return ""
    review: Review = request.getfixturevalue("migration_review")
    if not review.findings:
        return ""
    return f"squawk found {len(review.findings)} locking operation(s): {review.findings[0].describe()}"


@pytest.fixture(scope="session")
def rehearsal(
    request: pytest.FixtureRequest,
    run: Run,
    scratch_copies: dict[str, Restore],
    postgres: Postgres,
    env: Environment,
) -> MigrationResult:
    """The release's migrations run first on the restored copy of the application database."""
    settings = _migrate_settings(env)
    if not settings.rehearse:
        pytest.skip("migrate.rehearse = false in the environment")
    if refused := _refused_by_review(request, settings):
        pytest.fail(f"not rehearsing: {refused}", pytrace=False)
    copy = scratch_copies.get(postgres.dbname)
    if copy is None:
        pytest.fail(f"no scratch copy of {postgres.dbname}: add it to backup.databases", pytrace=False)

    def rehearse() -> dict:
        run.progress(f"rehearsing migrations of {run.release} on {copy.database}, watching its locks")
        try:
            result = migrate(postgres, settings, run.release, copy.database, scratch=True)
        finally:
            drop_scratch_copies(postgres, [copy.database], run.progress)
        longest = result.locks.longest if result.locks else None
        if longest is not None:
            run.progress(f"rehearsal held {longest.describe()}")
        return asdict(result)

    return MigrationResult.from_dict(run.once("rehearsal", rehearse))


@pytest.fixture(scope="session")
def migration(
    request: pytest.FixtureRequest, run: Run, postgres: Postgres, env: Environment, backup: list[Dump]
) -> MigrationResult:
    """The release's migrations on the application database, intent written first; never before
    the rehearsal on the restored copy has passed (when the environment rehearses)."""
    settings = _migrate_settings(env)
    if refused := _refused_by_review(request, settings):
        pytest.fail(f"not migrating: {refused}", pytrace=False)
    if settings.rehearse:
        rehearsed = request.getfixturevalue("rehearsal")
        if not rehearsed.ok:
            pytest.fail(f"not migrating: the rehearsal failed ({rehearsed.error})", pytrace=False)
        blocking = rehearsed.locks.problem(settings.max_lock_s) if rehearsed.locks else "no lock watch"
        if blocking:
            pytest.fail(f"not migrating: in the rehearsal {blocking}", pytrace=False)

    def apply() -> dict:
        before = postgres.schema_version(query=settings.version_query)
        pending = pending_migrations(postgres, settings, run.release)
        if not pending:
            result = migrate(postgres, settings, run.release)
            result.unwatched = "nothing was pending: no migration ran"
            return asdict(result)
        dump = run.dumps().get(postgres.dbname)
        undo = {
            "policy": settings.on_failure,
            "schema_version_before": before,
            "backup": str(dump.path) if dump else None,
            "sha256": dump.sha256 if dump else None,
            "row_counts": dump.row_counts if dump else None,
        }
        maintenance = _enter_maintenance(run, env)
        # Users keep using the release serving now while the migration runs, unless the service
        # is in maintenance mode for it: then nobody is served, by design, and nothing is sent.
        serving = request.getfixturevalue("previous_release")
        traffic = _migration_traffic(env) if maintenance is None and serving is not None else None
        with run.mutation("migrate", f"apply {', '.join(pending)} to {postgres.dbname}", undo) as step:
            run.progress(f"migrating {postgres.dbname}: {', '.join(pending)}")
            with traffic if traffic is not None else contextlib.nullcontext():
                result = migrate(postgres, settings, run.release)
            if traffic is not None:
                result.traffic = traffic.stats
                run.progress(
                    f"user requests during the migration: {traffic.stats.sent} sent, "
                    f"{traffic.stats.failed} failed ({traffic.stats.timed_out} timed out)"
                )
            else:
                result.unwatched = (
                    "the service was in maintenance mode while the migration ran"
                    if serving is not None
                    else "no release was serving yet: no users to serve"
                )
            if not result.ok:
                step.failed(result.error)
        if result.ok and maintenance is not None and maintenance.mode == "env":
            # Summit runbook, migration step 4 "Disable maintenance mode". Scaled to zero, the
            # rollout brings the replicas back with the new release (GA 3.3, then 4).
            run.platform.leave_maintenance(maintenance, run.progress)  # type: ignore[attr-defined]
        return asdict(result)

    return MigrationResult.from_dict(run.once("migrate", apply))


@pytest.fixture(scope="session")
def rollout(
    request: pytest.FixtureRequest, run: Run, previous_release: str | None, env: Environment
) -> Rollout:
    """The release taking all the traffic, by the environment's strategy, with probe traffic
    through the load balancer while the last move happens: a rolling update; a canary promoted
    after every step passed; green switched in after it answered directly."""
    _policy_first(request, env)
    # The initial release has nothing to be compared with or switched from: it goes out at once.
    strategy = strategy_of(env) if previous_release is not None else "initial"
    if strategy == "canary":
        steps = env.metrics.canary.steps if env.metrics else [100]
        last = request.getfixturevalue("canary_step")(steps[-1])  # every step, in order, each judged
        if last["verdict"] != "pass":  # a resumed run must not promote what a step took out
            pytest.fail(
                f"not promoting: the {steps[-1]} % step did not pass ({last['reason']})", pytrace=False
            )
        move, about = run.platform.promote, f"promote the canary {run.release} to every instance"
    elif strategy == "blue-green":
        smoke = request.getfixturevalue("green_smoke")
        if not smoke["healthy"]:
            pytest.fail(f"not switching: green did not answer healthy ({smoke['problem']})", pytrace=False)
        move, about = (
            (lambda progress: run.platform.switch_traffic("green", progress)),
            f"switch traffic to green {run.release}",
        )
    else:
        replacing = f"replacing {previous_release}" if previous_release else "as the initial release"
        move, about = (
            (lambda progress: run.platform.deploy(run.release, progress)),
            f"roll out {run.release} {replacing}",
        )

    def roll_out() -> dict:
        undo = {"previous_release": previous_release, "platform": env.platform.kind, "strategy": strategy}
        revisions_now = getattr(run.platform, "revisions_now", None)
        if revisions_now is not None:  # Kubernetes: the revisions `rollout undo` goes back to
            undo["deployments"] = revisions_now()
        with (
            run.mutation("deploy", about, undo) as step,
            _traffic(env, _down_for_maintenance(run, env)) as traffic,
        ):
            result = _as_result(move(run.progress), run.release)
            if not result.ok:
                step.failed(result.reason)
        return {"result": asdict(result), "traffic": asdict(traffic.stats)}

    saved = run.once("deploy", roll_out)
    return Rollout(RolloutResult(**saved["result"]), TrafficStats(**saved["traffic"]))


def _as_result(outcome: RolloutResult | None, release: str) -> RolloutResult:
    """Platforms answer a strategy step with a RolloutResult (local) or with nothing, raising on
    failure (Kubernetes): the gates judge one shape."""
    return outcome if isinstance(outcome, RolloutResult) else RolloutResult(True, release, None, 0.0)


def _migration_traffic(env: Environment) -> TrafficProbe:
    """Probe traffic to user routes (migrate.traffic_paths, else verify.traffic_path) while the
    migration runs: what a lock held by the migration does to users shows there."""
    assert env.migrate is not None
    verify, base = env.verify, env.platform.url.rstrip("/")
    return TrafficProbe(
        [f"{base}{path}" for path in env.migrate.traffic_paths or [verify.traffic_path]],
        rps=verify.traffic_rps,
        timeout_s=verify.request_timeout_s,
        max_duration_s=env.migrate.timeout_s + verify.request_timeout_s,
    )


def _traffic(env: Environment, until_serving: bool = False) -> TrafficProbe:
    verify = env.verify
    return TrafficProbe(
        f"{env.platform.url.rstrip('/')}{verify.traffic_path}",
        rps=verify.traffic_rps,
        timeout_s=verify.request_timeout_s,
        max_duration_s=verify.traffic_max_s,
        until_serving=until_serving,
    )


def _down_for_maintenance(run: Run, env: Environment) -> bool:
    """This run's migration took the service down by scaling it to 0 (Granter 1.3, Summit GA 3.3),
    and the rollout brings it back with the new release: nobody is served until then, by design."""
    k8s = env.platform.kubernetes
    if k8s is None or k8s.maintenance is None or k8s.maintenance.mode != "scale-to-zero":
        return False
    record = run.ledger.run(run.id)
    intent = record.intent("maintenance") if record is not None else None
    return intent is not None and intent.done_at is not None


# Canary ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def canary_started(
    request: pytest.FixtureRequest, run: Run, env: Environment, previous_release: str | None
) -> RolloutResult:
    """The canary instance(s) of the release beside the stable ones, taking no traffic yet."""
    if previous_release is None:
        pytest.skip(NO_STRATEGY_FOR_INITIAL)
    _policy_first(request, env)

    def start() -> dict:
        undo = {"previous_release": previous_release, "platform": env.platform.kind, "strategy": "canary"}
        about = f"start the canary {run.release} beside {previous_release}, no traffic yet"
        with run.mutation("deploy", about, undo) as step:
            result = _as_result(run.platform.start_canary(run.release, run.progress), run.release)
            if not result.ok:
                step.failed(result.reason)
        return asdict(result)

    return RolloutResult(**run.once("canary-start", start))


@pytest.fixture(scope="session")
def canary_step(
    run: Run,
    env: Environment,
    canary_started: RolloutResult,
    prometheus: Prometheus,
    previous_release: str | None,
) -> Callable[[int], dict]:
    """Run a canary step (and every step before it, in order, once for the whole run): move the
    weight, then judge canary against stable over the pause. A failed step takes the canary out
    of the load balancer at once; the rollback follows as for any failed gate."""
    metrics = env.metrics
    assert metrics is not None
    canary = metrics.canary
    rules = {
        name: (metrics.slo[name], CanaryRule.from_settings(metrics.slo[name], canary, metrics.confidence))
        for name in metrics.check_names("canary")
    }

    def do(step: int) -> dict:
        index = canary.steps.index(step)
        if not canary_started.ok:
            raise ActionError(f"the canary did not start: {canary_started.reason}")
        try:
            needed = RequestsNeeded.from_settings(canary, metrics.slo, metrics.confidence)
        except ValueError as exc:
            raise ActionError(f"metrics.canary.{exc}") from None
        if index:
            before = do(canary.steps[index - 1])
            if before["verdict"] != "pass":
                raise ActionError(f"the {canary.steps[index - 1]} % step did not pass: not going to {step} %")

        def health(when: str, instances: list[Instance] | None = None) -> dict:
            run.progress(f"canary {step} % step: asking each canary instance {env.verify.health_path} {when}")
            if instances is None:
                instances = instances_of(run.platform, run.release, "canary_instances")
            asked = ask_health(
                instances,
                run.release,
                env.verify,
                role="canary",
                reachable=instances_reachable(env),
                when=when,
            )
            return asked | {"names": [i.name for i in instances]}

        def unhealthy(asked: dict, effective: float | None, when: str) -> dict:
            run.progress(f"canary step {step} % failed: {asked['problem']}: taking the canary out")
            run.platform.abort(run.progress)
            reason = f"canary health {when}: {asked['problem']}"
            return {
                "step": step,
                "effective": effective,
                "verdict": "fail",
                "reason": reason,
                "health": asked,
            }

        def act() -> dict:
            # The canary's own word on its health and version, before it gets more traffic: the
            # metrics only know the release label the platform gave it. A platform that starts the
            # canary's instances with the weight (replicas at 0 %, more at each step) has the
            # instances the move started asked right after it.
            asked = health(f"before {step} %")
            if asked["instances"] and not asked["healthy"]:
                return unhealthy(asked, None, f"before {step} %")
            undo = {"abort": "canary weight 0, canary stopped", "previous_release": previous_release}
            with run.mutation("canary-weight", f"send {step} % of requests to {run.release}", undo):
                effective = run.platform.set_canary_weight(step, run.progress)
            running = instances_of(run.platform, run.release, "canary_instances")
            fresh = [i for i in running if i.name not in asked["names"]]
            if fresh or not asked["instances"]:
                seen = health(f"at {step} %, once its instances run", fresh)
                asked = seen | {k: asked[k] + seen[k] for k in ("instances", "evidence", "names")}
                if not asked["healthy"]:
                    return unhealthy(asked, effective, f"at {step} %")
            if step == 100:
                return {
                    "step": step,
                    "health": asked,
                    "effective": effective,
                    "verdict": "pass",
                    "metrics": [],
                    "samples": {},
                    "reason": "every request on the canary: the verify phase judges it alone",
                }
            verdict, samples = sample_canary_step(
                prometheus,
                rules,
                canary=run.release,
                stable=previous_release or "",
                pause_s=canary.pause_for(index),
                interval_s=canary.interval_s,
                window=canary.window or metrics.window,
                min_requests=needed.count,
                max_step_s=canary.max_step_for(index),
                scrape_interval_s=metrics.scrape_interval_s,
                warmup_s=canary.warmup_s,
                label=f"canary {step} % step",
                progress=run.progress,
            )
            if verdict.verdict is not Verdict.PASS:
                run.progress(f"canary step {step} % failed: {verdict.reason}: taking the canary out")
                run.platform.abort(run.progress)
            return {
                "step": step,
                "effective": effective,
                "verdict": str(verdict.verdict),
                "reason": verdict.reason,
                "metrics": [
                    {k: v for k, v in asdict(m).items() if k != "comparison"} for m in verdict.metrics
                ],
                "samples": {"canary": samples.canary, "stable": samples.stable},
                "sources": samples.sources,
                "canary_requests": samples.canary_requests,
                "requests_needed": needed.count,
                "requests_why": needed.why,
                "max_step_s": canary.max_step_for(index),
                "health": asked,
            }

        return run.once(f"canary-{step}", act)

    return do


# Blue-green -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def green_started(
    request: pytest.FixtureRequest, run: Run, env: Environment, previous_release: str | None
) -> RolloutResult:
    """The new release on a full set of instances beside the serving ones, taking no traffic."""
    if previous_release is None:
        pytest.skip(NO_STRATEGY_FOR_INITIAL)
    _policy_first(request, env)

    def start() -> dict:
        undo = {"previous_release": previous_release, "platform": env.platform.kind, "strategy": "blue-green"}
        with run.mutation(
            "deploy", f"start green {run.release} beside blue {previous_release}", undo
        ) as step:
            result = _as_result(run.platform.start_green(run.release, run.progress), run.release)
            if not result.ok:
                step.failed(result.reason)
        return asdict(result)

    return RolloutResult(**run.once("green-start", start))


@pytest.fixture(scope="session")
def green_smoke(run: Run, env: Environment, green_started: RolloutResult) -> dict:
    """Green asked directly, instance by instance, before it takes any traffic."""

    def smoke() -> dict:
        if not green_started.ok:
            return {"instances": 0, "healthy": False, "problem": green_started.reason, "evidence": []}
        return ask_health(
            instances_of(run.platform, run.release, "green_instances"),
            run.release,
            env.verify,
            role="green",
            reachable=instances_reachable(env),
        )

    return run.once("green-smoke", smoke)


# Policy (Summit GA 4.1 "Deploy OPA policies first", 5 "Policy deployment", 7.2 rollback) -------


@pytest.fixture(scope="session")
def policy_engine(env: Environment) -> Iterator[PolicyEngine]:
    """The environment's policy engine ([policy]); gates that need it skip where there is none."""
    if env.policy is None:
        pytest.skip("the environment has no [policy] section: no policy engine to ask")
    engine = PolicyEngine(env.policy, env.platform.url)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def policy_bundle(run: Run, env: Environment) -> dict:
    """The release's policy bundle active on the engine, before the application changes. The
    intent, with what GA 7.2 needs to put the bundle of now back, is written first."""
    if env.policy is None or env.policy.bundle is None:
        pytest.skip("no [policy.bundle]: the release ships no policy bundle to activate")

    def deploy() -> dict:
        switch = bundle_switch(env)
        try:
            prepared = switch.prepare(run.release)
            facts = {
                **prepared.facts,
                "version": prepared.version,
                "previous_version": prepared.previous_version,
            }
            if not prepared.changes:
                run.progress(f"policy bundle {prepared.version} is already named: nothing to change")
                # What the engine itself reported before the change, never an assumption.
                return {
                    **facts,
                    "changed": False,
                    "active": prepared.previous_version,
                    "seconds": 0.0,
                    "detail": "",
                }
            with run.mutation("policy", prepared.about, prepared.undo) as step:
                result = switch.apply(prepared, run.progress)
                if not result.ok:
                    step.failed(result.detail)
        finally:
            switch.close()
        run.progress(
            f"policy bundle {result.version} {'active' if result.ok else 'NOT active'} after {result.seconds:.1f} s"
        )
        return {
            **facts,
            "changed": True,
            "active": result.active,
            "seconds": result.seconds,
            "detail": result.detail,
            "source": result.source,
        }

    return run.once("policy", deploy)


def _policy_first(request: pytest.FixtureRequest, env: Environment) -> None:
    """GA 4.1: with a [policy.bundle], the application changes only after its bundle is active."""
    if env.policy is None or env.policy.bundle is None:
        return
    deployed = request.getfixturevalue("policy_bundle")
    if deployed["active"] != deployed["version"]:
        pytest.fail(
            f"not changing the application: policy bundle {deployed['version']} is not active "
            f"({deployed['detail'] or 'the engine reports ' + str(deployed['active'])})",
            pytrace=False,
        )


def _enter_maintenance(run: Run, env: Environment) -> Any:
    """Maintenance mode for the migration when the environment asks for it (Summit runbook
    "Enable maintenance mode", GA 3.3 and Granter 1.3 scale to 0): written to the ledger first,
    so a failed migration or a killed run ends with the service taken out of it again."""
    k8s = env.platform.kubernetes
    if k8s is None or k8s.maintenance is None:
        return None
    settings = k8s.maintenance
    names = settings.deployments or [d.name for d in k8s.deployments]
    how = "scale to 0" if settings.mode == "scale-to-zero" else f"{settings.env_var}={settings.on_value}"
    undo = {"mode": settings.mode, "deployments": names}
    with run.mutation("maintenance", f"maintenance mode for {', '.join(names)} ({how})", undo):
        return run.platform.enter_maintenance(run.progress)  # type: ignore[attr-defined]


def _migrate_settings(env: Environment) -> MigrateSettings:
    if env.migrate is None:
        pytest.skip("the environment has no [migrate] section: this service has no migrations")
    return env.migrate


# SLOs from Prometheus -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def prometheus(env: Environment) -> Iterator[Prometheus]:
    """The environment's Prometheus ([metrics]); gates that need it skip where there is none."""
    if env.metrics is None:
        pytest.skip("the environment has no [metrics] section: no SLOs from Prometheus")
    client = Prometheus.from_environment(env)
    yield client
    client.close()


BASELINE_SAMPLES = 3
"""A baseline is the median of this many samples one scrape apart: one sample is too noisy to be
"production" for a 10 % comparison."""


@pytest.fixture(scope="session")
def baseline(
    run: Run, prometheus: Prometheus, env: Environment, previous_release: str | None
) -> dict[str, dict]:
    """Every SLO metric of the release serving now, before anything changes: what "within 10 %
    of production" is measured against. Waits for data as long as one window and three scrapes."""
    metrics = env.metrics
    assert metrics is not None

    if previous_release is None:
        return {}  # the initial release: nothing to measure, only absolute thresholds apply
    history = history_of(env, previous_release)
    if history is not None:
        return run.once("baseline", lambda: history_now(prometheus, env, history))

    def measure() -> dict:
        release = previous_release
        wait = duration_seconds(metrics.window) + 3 * metrics.scrape_interval_s
        prometheus.wait_for_data("request_rate", release=release, timeout_s=wait)
        rounds = []
        for round_ in range(BASELINE_SAMPLES):
            if round_:
                time.sleep(metrics.scrape_interval_s)
            rounds.append(
                {
                    name: prometheus.query(slo.query, release=release, window=slo.window)
                    for name, slo in metrics.slo.items()
                }
            )
        values = {}
        for name in metrics.slo:
            samples = [r[name] for r in rounds]
            numbers = [s.value for s in samples if s.value is not None]
            values[name] = {
                "value": statistics.median(numbers) if numbers else None,
                "source": samples[-1].source,
                "at": samples[-1].at_iso,
                "samples": [s.value for s in samples],
            }
        return values

    return run.once("baseline", measure)


def history_of(env: Environment, previous_release: str | None) -> History | None:
    """The previous release's history as the baseline, when the environment says so
    (``[metrics.baseline] source = "history"``) and there is a previous release."""
    metrics = env.metrics
    if metrics is None or previous_release is None or metrics.baseline.source != "history":
        return None
    return History(previous_release, tuple(metrics.baseline.offsets))


def history_now(prometheus: Prometheus, env: Environment, history: History) -> dict[str, dict]:
    """Every SLO of the previous release over its window at this time of previous days, before
    anything changes: the relative limits are judged against these days as the release is
    sampled, and a day without data is shown here, not found out after the rollout."""
    metrics = env.metrics
    assert metrics is not None
    now = datetime.now(UTC)
    values = {}
    for name, slo in metrics.slo.items():
        window = slo.window or metrics.window
        past = measure_history(prometheus, slo, history, window=window, at=now)
        days = [
            measure_history(prometheus, slo, History(history.release, (offset,)), window=window, at=now)
            for offset in history.offsets
        ]
        values[name] = {
            "value": past.value,
            "source": past.sample.source if past.sample else prometheus.url,
            "at": past.sample.at_iso if past.sample else "",
            "samples": [day.value for day in days],
            "history": {offset: day.value for offset, day in zip(history.offsets, days, strict=True)},
        }
    return values


@pytest.fixture(scope="session")
def slo_verdicts(
    run: Run,
    rollout: Rollout,
    prometheus: Prometheus,
    env: Environment,
    baseline: dict[str, dict],
    previous_release: str | None,
) -> dict[str, dict]:
    """The new release's SLOs, every check sampled on its interval at once, until each has a
    verdict or one fails (then the rest stop: a rollback is due)."""
    metrics = env.metrics
    assert metrics is not None

    def sample() -> dict:
        run.progress(f"sampling {len(metrics.check_names('verify'))} SLOs of {run.release} from Prometheus")
        wait = duration_seconds(metrics.window) + 3 * metrics.scrape_interval_s
        prometheus.wait_for_data("request_rate", release=run.release, timeout_s=wait)
        sources: dict[tuple[str, int], str] = {}

        def on_sample(name: str, sample: Sample, verdict: SampleVerdict) -> None:
            sources[name, verdict.index] = sample.source
            if verdict.counts_as_failure:
                run.progress(f"{name} sample {verdict.index}: {verdict.detail}")

        results = sample_together(
            prometheus,
            {name: metrics.slo[name] for name in metrics.check_names("verify")},
            release=run.release,
            on_sample=on_sample,
            baselines={name: b["value"] for name, b in baseline.items()},
            history=history_of(env, previous_release),
            confidence=metrics.confidence,
        )
        return {name: series_record(result, sources, name) for name, result in results.items()}

    return run.once("slo", sample)


@pytest.fixture(scope="session")
def observation(
    run: Run,
    rollout: Rollout,
    prometheus: Prometheus,
    env: Environment,
    baseline: dict[str, dict],
    previous_release: str | None,
) -> dict[str, dict]:
    """The watch after release: the SLOs on the observe schedule, stopping at the first that
    fails (Granter: every 5 min for 30 min, every 10 min to 1 h, every 30 min to 4 h)."""
    metrics = env.metrics
    assert metrics is not None
    observe = metrics.observe
    checks = {name: metrics.slo[name] for name in metrics.check_names("observe")}
    offsets = schedule_offsets([(s.every_s, s.until_s) for s in observe.schedule])

    def watch_it() -> dict:
        run.progress(
            f"watching {run.release} for {observe.duration_s:g} s: {len(offsets)} samples of "
            f"{len(checks)} SLOs, {observe.consecutive_failures} failures in a row roll back"
        )
        sources: dict[tuple[str, int], str] = {}

        def on_sample(name: str, sample: Sample, verdict: SampleVerdict) -> None:
            sources[name, verdict.index] = sample.source
            if verdict.counts_as_failure:
                run.progress(f"observe {name} sample {verdict.index}: {verdict.detail}")

        results = watch(
            prometheus,
            checks,
            offsets,
            release=run.release,
            consecutive_failures=observe.consecutive_failures,
            baselines={name: b["value"] for name, b in baseline.items()},
            history=history_of(env, previous_release),
            confidence=metrics.confidence,
            counted_since_s=time.monotonic() - rollout.done_at,
            on_sample=on_sample,
        )
        return {name: series_record(result, sources, name) for name, result in results.items()}

    return run.once("observe", watch_it)


def series_record(result: SeriesVerdict, sources: dict[tuple[str, int], str], name: str) -> dict:
    """A series as the ledger keeps it: every sample with its verdict and source, and the verdict."""
    return {
        "verdict": str(result.verdict) if result.verdict else None,
        "reason": result.reason,
        "samples": [
            {**asdict(s), "verdict": str(s.verdict), "source": sources.get((name, s.index), "")}
            for s in result.samples
        ],
    }
