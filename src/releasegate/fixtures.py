"""The fixtures gate modules use. Actions are session fixtures that run once for the whole run
(``Run.once``): under pytest-xdist the first worker that needs a backup takes it, the others
wait and read its result from the ledger. Each mutation writes its intent first.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from releasegate.actions.backup import Dump, Restore, dump_database, restore_into_scratch
from releasegate.actions.migrate import MigrationResult, migrate, pending_migrations
from releasegate.config import Environment, MigrateSettings
from releasegate.evidence import Checker
from releasegate.platforms.base import Platform, RolloutResult
from releasegate.probes.http import Http
from releasegate.probes.postgres import Postgres
from releasegate.probes.redis import Redis
from releasegate.probes.traffic import TrafficProbe, TrafficStats
from releasegate.rollback import RollbackSession
from releasegate.run import Run
from releasegate.state import ENV_KEY, EVIDENCE_KEY, ROLLBACK_KEY, RUN_KEY, is_worker, phase_of


@dataclass
class Rollout:
    result: RolloutResult
    traffic: TrafficStats


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
    return Postgres(env.database)


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


@pytest.fixture(scope="session")
def previous_release(run: Run) -> str | None:
    """The release serving before this run: what a rollback goes back to."""
    saved = run.once("previous_release", lambda: {"release": run.platform.current_release()})
    if run.previous_release is None and saved["release"] is not None:
        run.remember_previous_release(saved["release"])
    return saved["release"]


@pytest.fixture(scope="session")
def backup(run: Run, postgres: Postgres, env: Environment) -> list[Dump]:
    """``pg_dump -Fc`` of every configured database, row counts taken in the dump's snapshot."""
    settings = env.backup

    def take() -> dict:
        dumps = {}
        for dbname in settings.databases:
            run.progress(f"pg_dump {dbname} -> {settings.dir}")
            dump = dump_database(
                postgres,
                dbname,
                Path(settings.dir),
                run.id,
                tables=settings.verify_tables.get(dbname, []),
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

    The scratch databases are dropped when the run finishes (``Run.finish``)."""

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
        return restores

    return {db: Restore(**data) for db, data in run.once("scratch", restore_all).items()}


@pytest.fixture(scope="session")
def rehearsal(
    run: Run, scratch_copies: dict[str, Restore], postgres: Postgres, env: Environment
) -> MigrationResult:
    """The release's migrations run first on the restored copy of the application database."""
    settings = _migrate_settings(env)
    if not settings.rehearse:
        pytest.skip("migrate.rehearse = false in the environment")
    copy = scratch_copies.get(postgres.dbname)
    if copy is None:
        pytest.fail(f"no scratch copy of {postgres.dbname}: add it to backup.databases", pytrace=False)

    def rehearse() -> dict:
        run.progress(f"rehearsing migrations of {run.release} on {copy.database}")
        return asdict(migrate(postgres, settings, run.release, copy.database))

    return MigrationResult(**run.once("rehearsal", rehearse))


@pytest.fixture(scope="session")
def migration(
    request: pytest.FixtureRequest, run: Run, postgres: Postgres, env: Environment, backup: list[Dump]
) -> MigrationResult:
    """The release's migrations on the application database, intent written first; never before
    the rehearsal on the restored copy has passed (when the environment rehearses)."""
    settings = _migrate_settings(env)
    if settings.rehearse:
        rehearsed = request.getfixturevalue("rehearsal")
        if not rehearsed.ok:
            pytest.fail(f"not migrating: the rehearsal failed ({rehearsed.error})", pytrace=False)

    def apply() -> dict:
        before = postgres.schema_version(query=settings.version_query)
        pending = pending_migrations(postgres, settings, run.release)
        if not pending:
            return asdict(migrate(postgres, settings, run.release))
        dump = run.dumps().get(postgres.dbname)
        undo = {
            "policy": settings.on_failure,
            "schema_version_before": before,
            "backup": str(dump.path) if dump else None,
            "sha256": dump.sha256 if dump else None,
            "row_counts": dump.row_counts if dump else None,
        }
        with run.mutation("migrate", f"apply {', '.join(pending)} to {postgres.dbname}", undo) as step:
            run.progress(f"migrating {postgres.dbname}: {', '.join(pending)}")
            result = migrate(postgres, settings, run.release)
            if not result.ok:
                step.failed(result.error)
        return asdict(result)

    return MigrationResult(**run.once("migrate", apply))


@pytest.fixture(scope="session")
def rollout(run: Run, previous_release: str | None, env: Environment) -> Rollout:
    """The platform's rollout of the release, with probe traffic through the load balancer."""
    verify = env.verify

    def roll_out() -> dict:
        undo = {"previous_release": previous_release, "platform": env.platform.kind}
        with run.mutation("deploy", f"roll out {run.release} replacing {previous_release}", undo) as step:
            with TrafficProbe(
                f"{env.platform.url.rstrip('/')}{verify.traffic_path}",
                rps=verify.traffic_rps,
                timeout_s=verify.request_timeout_s,
                max_duration_s=verify.traffic_max_s,
            ) as traffic:
                result = run.platform.deploy(run.release, run.progress)
            if not result.ok:
                step.failed(result.reason)
        return {"result": asdict(result), "traffic": asdict(traffic.stats)}

    saved = run.once("deploy", roll_out)
    return Rollout(RolloutResult(**saved["result"]), TrafficStats(**saved["traffic"]))


def _migrate_settings(env: Environment) -> MigrateSettings:
    if env.migrate is None:
        pytest.skip("the environment has no [migrate] section: this service has no migrations")
    return env.migrate
