"""One deployment run: the environment, the release, the ledger record and the decision state.

The gates' fixtures hang off this object. It writes the ledger ahead of every mutation, and it
performs the undo the decision tree asks for exactly once, whoever asks first (the fixture
teardown, or the end of the session as a safety net).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from releasegate.actions.backup import Dump, restore_in_place
from releasegate.actions.migrate import MigrationResult, migrations_directory, revert_sql_migrations
from releasegate.config import Environment
from releasegate.errors import ReleasegateError
from releasegate.evidence import Checker, Evidence, GateFailure
from releasegate.ledger import Ledger
from releasegate.pipeline import Change, Pipeline, Undo
from releasegate.platforms import make_platform
from releasegate.platforms.base import Platform, Progress, RolloutResult
from releasegate.probes.http import Http
from releasegate.probes.postgres import Postgres
from releasegate.verification import database_as_before, every_instance_serves, health_repeatedly

ROLLBACK = "rollback"


@dataclass
class Mutation:
    """Handle for one mutation in progress: say how it ended."""

    seq: int
    ok: bool = True
    detail: str = ""

    def failed(self, detail: str) -> None:
        self.ok = False
        self.detail = detail


class Run:
    def __init__(
        self,
        env: Environment,
        release: str,
        ledger: Ledger,
        progress: Progress,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.env = env
        self.release = release
        self.ledger = ledger
        self.progress = progress
        self.id = ledger.start_run(env.name, release, meta)
        self.pipeline = Pipeline(
            database_policy=env.rollback.database,
            migrate_policy=env.migrate.on_failure if env.migrate else "restore",
        )
        self.postgres = Postgres(env.database)
        self.service = Http(
            env.platform.url, timeout_s=env.verify.request_timeout_s, component=f"{env.environment.service}"
        )
        self._platform: Platform | None = None
        self.previous_release: str | None = None
        self.schema_version_before: str | None = None
        self.dumps: dict[str, Dump] = {}
        self.migration: MigrationResult | None = None
        self.rollout: RolloutResult | None = None
        self.rollback_duration_s: float | None = None
        self.report_path: Path | None = None
        self._undo_started = False
        self._phases_open: list[str] = []

    @property
    def platform(self) -> Platform:
        if self._platform is None:
            self._platform = make_platform(self.env)
        return self._platform

    # Recording --------------------------------------------------------------------------

    def record(self, evidence: Evidence) -> None:
        self.ledger.evidence(self.id, evidence)

    def checker(self, gate: str, phase: str) -> Checker:
        return Checker(self.record, gate, phase, production=self.env.is_production)

    def remember_previous_release(self, release: str | None) -> None:
        self.previous_release = release
        self.ledger.set_previous_release(self.id, release)

    def phase_started(self, phase: str) -> None:
        if phase not in self._phases_open:
            if self._phases_open:
                self.phase_finished(self._phases_open[-1])
            self._phases_open.append(phase)
            self.ledger.phase_started(self.id, phase)

    def phase_finished(self, phase: str) -> None:
        failure = self.pipeline.failure
        outcome = "failed" if failure and failure.phase == phase else "passed"
        self.ledger.phase_finished(self.id, phase, outcome)

    @contextmanager
    def mutation(
        self, change: Change, action: str, about_to: str, undo: dict[str, Any]
    ) -> Iterator[Mutation]:
        """Write the intent (and mark the change) before the mutation starts, the outcome after."""
        self.pipeline.changed(change)
        handle = Mutation(self.ledger.intent(self.id, action, about_to, undo))
        try:
            yield handle
        except BaseException as exc:
            self.ledger.intent_done(handle.seq, "failed", f"{type(exc).__name__}: {exc}")
            raise
        self.ledger.intent_done(handle.seq, "done" if handle.ok else "failed", handle.detail)

    # Undo -------------------------------------------------------------------------------

    def undo_if_needed(self) -> None:
        """Carry out the decision tree's undo plan once; later calls do nothing."""
        if self._undo_started:
            return
        plan = self.pipeline.undo_plan()
        if not plan:
            return
        self._undo_started = True
        failure = self.pipeline.failure
        assert failure is not None
        self.progress(f"{failure.phase} gate failed ({failure.gate}): " + "; ".join(plan))
        self.ledger.phase_started(self.id, ROLLBACK)
        check = self.checker(ROLLBACK, ROLLBACK)
        started = time.monotonic()
        problems: list[str] = []
        for step in plan:
            try:
                self._undo(step, check)
            except (GateFailure, ReleasegateError) as exc:
                problems.append(f"{step}: {exc}")
                self.progress(f"rollback step failed: {step}: {exc}")
        self.rollback_duration_s = time.monotonic() - started
        ok = not problems
        check.record(
            "rollback duration",
            round(self.rollback_duration_s, 2),
            unit="s",
            detail="all steps verified" if ok else "; ".join(problems),
        )
        self.ledger.phase_finished(self.id, ROLLBACK, "passed" if ok else "failed")
        self.pipeline.undo_finished(ok, "; ".join(problems) if problems else "")
        self.progress(
            f"rollback {'verified' if ok else 'FAILED'} in {self.rollback_duration_s:.1f} s"
            + ("" if ok else ": " + "; ".join(problems))
        )

    def _undo(self, step: Undo, check: Checker) -> None:
        if step is Undo.ROLL_BACK_APPLICATION:
            self._roll_back_application(check)
        elif step is Undo.RESTORE_DATABASE:
            self._restore_database(check)
        elif step is Undo.REVERT_MIGRATIONS:
            self._revert_migrations(check)

    def _roll_back_application(self, check: Checker) -> None:
        previous = self.previous_release
        if previous is None:
            check.fail("application rollback", "the previous release was never recorded: roll back by hand")
            return
        self.progress(f"rolling back {self.env.name} to {previous}")
        result = self.platform.rollback(previous, self.progress)
        check.holds("application rolled back", result.ok, source="platform", detail=result.reason)
        verify = self.env.verify
        every_instance_serves(check, self.platform, previous, verify.health_path, verify.request_timeout_s)
        health_repeatedly(
            check,
            self.service,
            verify.health_path,
            previous,
            min(3, verify.health_probes),
            verify.health_interval_s,
        )

    def _app_dump(self) -> Dump:
        dump = self.dumps.get(self.postgres.dbname)
        if dump is None:
            raise ReleasegateError(f"no backup of {self.postgres.dbname} from this run: restore by hand")
        return dump

    def _restore_database(self, check: Checker) -> None:
        dump = self._app_dump()
        self.progress(f"restoring {dump.database} from {dump.path}")
        restore = restore_in_place(
            self.postgres,
            dump,
            tables=list(dump.row_counts),
            bin_dir=self.env.backup.pg_bin_dir,
            timeout_s=self.env.backup.timeout_s,
        )
        check.record(
            "database restored",
            str(dump.path),
            unit="",
            detail=f"in {restore.duration_s:.1f} s, sha256 {dump.sha256[:12]}",
            source=self.postgres.source(),
        )
        check.record(
            "data written since the backup",
            "lost",
            detail="a restore puts the database back to the backup's moment",
        )
        database_as_before(check, self.postgres, dump.row_counts, self.schema_version_before, "after restore")

    def _revert_migrations(self, check: Checker) -> None:
        migration = self.migration
        if migration is None or not migration.applied:
            check.record("down-migrations", "none to run", detail="this run applied no migration")
            return
        migrate = self.env.migrate
        assert migrate is not None
        directory = migrations_directory(migrate, self.release)
        self.progress(f"running down-migrations {', '.join(reversed(migration.applied))}")
        result = revert_sql_migrations(
            self.postgres.conninfo(),
            directory,
            migration.applied,
            lock_timeout=migrate.lock_timeout,
            statement_timeout=migrate.statement_timeout,
            password=self.env.database.password.resolve() if self.env.database.password else None,
        )
        check.holds("down-migrations ran", result.ok, detail=result.error, source=str(directory))
        check.equals(
            "schema version after down-migrations",
            result.version_after,
            self.schema_version_before,
            source=self.postgres.source("schema_migrations"),
        )

    # The end ----------------------------------------------------------------------------

    def finish(self) -> None:
        for phase in self._phases_open[-1:]:
            self.phase_finished(phase)
        failure = self.pipeline.failure
        self.ledger.finish_run(
            self.id,
            str(self.pipeline.decision),
            self.pipeline.exit_code,
            failure.phase if failure else None,
            failure.gate if failure else None,
            (failure.message if failure else None)
            if self.pipeline.undo_ok is not False
            else f"{failure.message if failure else ''} | rollback: {self.pipeline.undo_detail}",
        )
