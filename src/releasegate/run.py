"""One deployment run as this process sees it, attached to its record in the ledger.

Everything another process needs lives in the ledger, not here: the first failure, each
mutation's intent, each action's result. That is what lets pytest-xdist workers share one run
(each mutation once, whichever worker needs it first), lets the controller decide and undo
once for the whole session, and lets ``pytest rollback/`` undo a run that was killed.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from releasegate.actions.backup import Dump, restore_in_place
from releasegate.actions.migrate import migrations_directory, read_migrations, revert_sql_migrations
from releasegate.actions.policy import Activation, BundleSwitch, bundle_switch
from releasegate.config import Environment, Phase
from releasegate.errors import ActionError, ReleasegateError
from releasegate.evidence import Checker, Evidence, GateFailure
from releasegate.ledger import Ledger, RunRecord
from releasegate.pipeline import Change, Pipeline, Undo
from releasegate.platforms import instances_reachable, make_platform
from releasegate.platforms.base import Platform, Progress
from releasegate.probes.http import Http
from releasegate.probes.postgres import Postgres, version_key
from releasegate.report import allure as allure_report
from releasegate.verification import (
    database_as_before,
    every_instance_serves,
    health_repeatedly,
    smoke_passes,
)

ROLLBACK = "rollback"
_FAILED = "__releasegate_action_failed__"
CHANGES = {
    "migrate": Change.DATABASE,
    "deploy": Change.APPLICATION,
    "maintenance": Change.MAINTENANCE,
    "policy": Change.POLICY,
}
"""Which intents change what: the decision tree's inputs, read back from the ledger."""
ROLLBACK_STEPS_SHOWN = 12
"""The platform's last lines of a rollback kept as evidence (helm rollback, rollout undo ...)."""


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
    def __init__(self, env: Environment, ledger: Ledger, run_id: str, progress: Progress) -> None:
        self.env = env
        self.ledger = ledger
        self.id = run_id
        self.progress = progress
        record = ledger.header(run_id)
        self.release = record.release
        self.kind = record.kind
        self.target_run = record.target_run
        self.postgres = Postgres.of(env)
        self.service = Http(
            env.platform.url, timeout_s=env.verify.request_timeout_s, component=env.environment.service
        )
        self.pipeline = Pipeline(
            database_policy=env.rollback.database,
            migrate_policy=env.migrate.on_failure if env.migrate else "restore",
            maintenance_first=env.rollback.maintenance,
        )
        self.current_phase: Phase | None = None
        self.rollback_duration_s: float | None = None
        self.report_path: Path | None = None
        self._platform: Platform | None = None
        self._previous: str | None = record.previous_release
        self._phases_open: list[str] = []
        self.guard: Callable[[], None] | None = None
        """Called before every change: raises when the environment's lease is not this run's."""
        self.announce: Callable[[str], None] = lambda _event: None
        """Tells the environment's webhook of an event (the plugin sets it; "rollback_started")."""
        self.refresh()

    @classmethod
    def start(
        cls,
        env: Environment,
        release: str,
        ledger: Ledger,
        progress: Progress,
        *,
        meta: dict[str, Any] | None = None,
        kind: str = "deploy",
        target_run: str | None = None,
    ) -> Run:
        return cls(
            env, ledger, ledger.start_run(env.name, release, meta, kind=kind, target_run=target_run), progress
        )

    @property
    def platform(self) -> Platform:
        if self._platform is None:
            self._platform = make_platform(self.env)
        return self._platform

    @property
    def reports_dir(self) -> Path:
        """Where the run's ledger, and so its reports, are."""
        return self.ledger.path.parent if self.ledger.path else Path.cwd() / "reports"

    @property
    def lock_dir(self) -> Path:
        return self.reports_dir / "locks"

    # What the ledger says --------------------------------------------------------------

    def record(self) -> RunRecord:
        return self.ledger.run(self.id)

    def refresh(self) -> Pipeline:
        """Bring the decision state up to what every process of this run has written."""
        header = self.ledger.header(self.id)
        phase = _phase(header.failed_phase)
        if phase is not None and self.pipeline.failure is None:
            self.pipeline.gate_failed(phase, header.failed_gate or "", header.failure or "")
        for action in self.ledger.intent_actions(self.id):
            if action in CHANGES:
                self.pipeline.changed(CHANGES[action])
        if header.undo_ok is not None:
            self.pipeline.undo_finished(header.undo_ok, header.undo_detail or "")
        return self.pipeline

    @property
    def previous_release(self) -> str | None:
        """The release serving before this run, as recorded by whichever process read it."""
        if self._previous is None:
            self._previous = self.ledger.header(self.id).previous_release
        return self._previous

    def remember_previous_release(self, release: str | None) -> None:
        self._previous = release
        self.ledger.set_previous_release(self.id, release)

    def dumps(self) -> dict[str, Dump]:
        saved = self.ledger.result(self.id, "backup") or {}
        return {
            db: Dump(**{**data, "path": Path(data["path"])}) for db, data in saved.get("dumps", {}).items()
        }

    # Recording --------------------------------------------------------------------------

    def record_evidence(self, evidence: Evidence) -> None:
        self.ledger.evidence(self.id, evidence)
        allure_report.check_step(evidence)

    def checker(self, gate: str, phase: str) -> Checker:
        return Checker(self.record_evidence, gate, phase, production=self.env.is_production)

    def gate_failed(self, phase: Phase, gate: str, message: str) -> None:
        self.pipeline.gate_failed(phase, gate, message)
        self.ledger.record_failure(self.id, str(phase), gate, message)
        self.refresh()

    def interrupted(self, signal_name: str) -> None:
        """Ctrl-C or SIGTERM: a failure of the phase that was running, decided like any other."""
        self.ledger.record_interruption(self.id, signal_name)
        phase = self.current_phase or self._last_phase_started() or Phase.PREFLIGHT
        self.gate_failed(
            phase, f"interrupted by {signal_name}", f"interrupted by {signal_name} during {phase}"
        )

    def phase_started(self, phase: Phase) -> None:
        self.current_phase = phase
        if str(phase) not in self._phases_open:
            if self._phases_open:
                self.phase_finished(self._phases_open[-1])
            self._phases_open.append(str(phase))
            self.ledger.phase_started(self.id, str(phase))

    def phase_finished(self, phase: str) -> None:
        failure = self.pipeline.failure
        outcome = "failed" if failure and str(failure.phase) == phase else "passed"
        self.ledger.phase_finished(self.id, phase, outcome)

    def _last_phase_started(self) -> Phase | None:
        phases = [_phase(p["phase"]) for p in self.record().phases]
        return next((p for p in reversed(phases) if p is not None), None)

    @contextmanager
    def mutation(self, action: str, about_to: str, undo: dict[str, Any]) -> Iterator[Mutation]:
        """Write the intent (and so mark the change) before the mutation starts, the outcome after."""
        if self.guard is not None:
            self.guard()  # the lease: no change to an environment another run holds
        if action in CHANGES:
            self.pipeline.changed(CHANGES[action])
        handle = Mutation(self.ledger.intent(self.id, action, about_to, undo))
        with allure_report.action_step(action, about_to, undo):
            try:
                yield handle
            except BaseException as exc:
                self.ledger.intent_done(handle.seq, "failed", f"{type(exc).__name__}: {exc}")
                raise
        self.ledger.intent_done(handle.seq, "done" if handle.ok else "failed", handle.detail)

    def once(self, action: str, produce: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Do ``action`` once for the whole run, whichever process asks first; the rest wait and read.

        A failure is remembered too, so a second worker never retries what the first one could not do.
        """
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        with open(self.lock_dir / f"{self.id}-{action}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            saved = self.ledger.result(self.id, action)
            if saved is None:
                try:
                    saved = produce()
                except ReleasegateError as exc:
                    saved = {_FAILED: str(exc)}
                self.ledger.save_result(self.id, action, saved)
        if _FAILED in saved:
            raise ActionError(saved[_FAILED])
        return saved

    # Undo -------------------------------------------------------------------------------

    def undo_if_needed(self) -> None:
        """Carry out the decision tree's undo plan once for the run, whichever process gets here first."""
        plan = self.refresh().undo_plan()
        if not plan or not self.ledger.claim_undo(self.id, f"pid {os.getpid()} on {socket.gethostname()}"):
            return
        failure = self.pipeline.failure
        assert failure is not None
        self.progress(f"{failure.phase} failed ({failure.gate}): " + "; ".join(plan))
        self.announce("rollback_started")
        ok, detail = self.carry_out(plan, self.checker(ROLLBACK, ROLLBACK))
        self.ledger.finish_undo(self.id, ok, detail)
        self.pipeline.undo_finished(ok, detail)

    def carry_out(
        self, plan: tuple[Undo, ...], check: Checker, *, to_release: str | None = None
    ) -> tuple[bool, str]:
        """Run each undo step, verified; the rollback suite calls this for runs that died."""
        if self.guard is not None:
            try:
                self.guard()  # a run whose lease was taken over leaves the undo to the new holder
            except ReleasegateError as exc:
                self.progress(f"rollback not started: {exc}")
                return False, f"not rolled back: {exc}"
        self.ledger.phase_started(self.id, ROLLBACK)
        started = time.monotonic()
        problems: list[str] = []
        with _shielded(self.progress):
            for step in plan:
                try:
                    self._undo(step, check, to_release)
                except (GateFailure, ReleasegateError) as exc:
                    problems.append(f"{step}: {exc}")
                    self.progress(f"rollback step failed: {step}: {exc}")
            if Undo.ROLL_BACK_APPLICATION in plan and not problems and not self.initial_release:
                try:  # "smoke passes" on the previous release, its database as the policy left it
                    smoke_passes(check, self.env, self.progress)
                except (GateFailure, ReleasegateError) as exc:
                    problems.append(f"smoke after the rollback: {exc}")
                    self.progress(f"smoke failed after the rollback: {exc}")
        self.rollback_duration_s = time.monotonic() - started
        problems.extend(self._judge_duration(plan, check, problems, to_release))
        ok = not problems
        detail = "; ".join(problems)
        self.ledger.phase_finished(self.id, ROLLBACK, "passed" if ok else "failed")
        self.progress(
            f"rollback {'verified' if ok else 'FAILED'} in {self.rollback_duration_s:.1f} s"
            + ("" if ok else ": " + detail)
        )
        return ok, detail

    def _judge_duration(
        self, plan: tuple[Undo, ...], check: Checker, problems: list[str], to_release: str | None
    ) -> list[str]:
        """The runbook's rollback time (rollback.timeout_s; database_timeout_s for a database undo
        alone) against the measured one. A slow rollback was not stopped half way: it is judged
        after its end, and over the limit it is ROLLBACK_FAILED, whatever its steps did."""
        settings = self.env.rollback
        key, limit = "rollback.timeout_s", settings.timeout_s
        if Undo.ROLL_BACK_APPLICATION not in plan and settings.database_timeout_s is not None:
            key, limit = "rollback.database_timeout_s", settings.database_timeout_s
        took = round(self.rollback_duration_s or 0.0, 2)
        try:
            check.at_most(
                "rollback duration",
                took,
                limit,
                unit="s",
                source=key,
                detail="; ".join(problems) or "every step verified",
            )
        except GateFailure:
            serving = to_release or self.previous_release
            done = (
                "every step ran to its end and was verified, nothing is left to undo"
                if not problems
                else "see the failed steps"
            )
            return [
                f"the rollback took {took:g} s, over {key} {limit:g} s ({done}); by hand: confirm "
                f"{serving or 'the previous release'} serves and find why it was slow before the next release "
                "relies on the runbook's rollback time"
            ]
        return []

    def _undo(self, step: Undo, check: Checker, to_release: str | None) -> None:
        if step is Undo.ENTER_MAINTENANCE:
            self._enter_maintenance(check)
        elif step is Undo.ROLL_BACK_APPLICATION:
            self._roll_back_application(check, to_release or self.previous_release)
        elif step is Undo.RESTORE_DATABASE:
            self._restore_database(check)
        elif step is Undo.REVERT_MIGRATIONS:
            self._revert_migrations(check)
        elif step is Undo.LEAVE_MAINTENANCE:
            self._leave_maintenance(check)
        elif step is Undo.ROLL_BACK_POLICY:
            self._roll_back_policy(check)

    def _roll_back_policy(self, check: Checker) -> None:
        """GA 7.2: the bundle that was active before this run, activated again and reported."""
        intent = self.record().intent("policy")
        policy = self.env.policy
        if policy is None or policy.bundle is None:
            check.fail("policy rollback", f"{self.env.name} has no [policy.bundle] any more: undo it by hand")
            return
        undo = intent.undo if intent else {}
        self.progress(f"putting policy bundle {undo.get('previous_version')} back")
        self.switch_policy(
            lambda switch: switch.restore(undo, self.progress),
            check,
            "policy bundle active after the rollback",
        )

    def switch_policy(self, act: Callable[[BundleSwitch], Activation], check: Checker, what: str) -> None:
        """Switch the environment's policy bundle and check that the engine reports the version."""
        switch = bundle_switch(self.env)
        try:
            result = act(switch)
        finally:
            switch.close()
        check.equals(
            what,
            result.active,
            result.version,
            source=result.source,
            detail=result.detail or f"in {result.seconds:.1f} s",
        )

    def _enter_maintenance(self, check: Checker) -> None:
        """rollback.maintenance: nobody served while the database goes back (Granter steps 2-3)."""
        enter = getattr(self.platform, "enter_maintenance", None)
        if enter is None:
            check.fail(
                "maintenance mode before the database undo",
                f"the {self.env.platform.kind} platform has no maintenance mode (rollback.maintenance = true)",
            )
            return
        self.progress("maintenance mode before the database is undone")
        enter(self.progress)
        check.holds(
            "maintenance mode entered before the database undo",
            True,
            source="platform",
            detail="scaled to 0 or the variable set, as platform.kubernetes.maintenance says",
        )

    def _leave_maintenance(self, check: Checker) -> None:
        leave = getattr(self.platform, "leave_maintenance", None)
        if leave is None:
            check.fail("maintenance mode", f"the {self.env.platform.kind} platform has no maintenance mode")
            return
        self.progress("leaving maintenance mode")
        leave(None, self.progress)
        check.holds("maintenance mode left", True, source="platform", detail="replicas or variable restored")

    @property
    def initial_release(self) -> bool:
        """Nothing served when this run began: it read so before changing anything."""
        saved = self.ledger.result(self.id, "previous_release")
        return saved is not None and saved.get("release") is None

    def _roll_back_application(self, check: Checker, target: str | None) -> None:
        if target is None and self.initial_release:
            self._withdraw_initial_release(check)
            return
        if target is None:
            check.fail("application rollback", "the previous release was never recorded: roll back by hand")
            return
        self.progress(f"rolling back {self.env.name} to {target}")
        result = self.platform.rollback(target, self.progress)
        for line in result.events[-ROLLBACK_STEPS_SHOWN:]:  # how it went back: helm rollback, undo ...
            check.record("rollback step", line, source="platform")
        check.holds(
            f"application rolled back to {target}", result.ok, source="platform", detail=result.reason
        )
        verify = self.env.verify
        every_instance_serves(
            check,
            self.platform,
            target,
            verify,
            reachable=instances_reachable(self.env),
        )
        health_repeatedly(
            check,
            self.service,
            verify,
            target,
            min(3, verify.health_probes),
            verify.health_interval_s,
        )

    def _withdraw_initial_release(self, check: Checker) -> None:
        """The initial release has nothing to go back to: the platform is put back as it was,
        empty, its instances stopped and out of the load balancer."""
        stop_all = getattr(self.platform, "stop_all", None)
        if stop_all is None:
            check.fail(
                "initial release withdrawn",
                f"nothing to roll back to, and the {self.env.platform.kind} platform cannot stop a release: "
                f"remove {self.release} by hand",
            )
            return
        self.progress(f"initial release {self.release}: nothing to go back to, stopping its instances")
        stop_all(self.progress)
        status = self.platform.status()
        check.equals(
            "instances left running after the initial release was withdrawn",
            len(status.instances),
            0,
            source="platform state",
            detail="nothing served before this run; nothing serves now",
        )

    def _schema_version_before(self) -> str | None:
        intent = self.record().intent("migrate")
        return intent.undo.get("schema_version_before") if intent else None

    def _restore_database(self, check: Checker) -> None:
        dump = self.dumps().get(self.postgres.dbname)
        if dump is None:
            raise ActionError(f"no backup of {self.postgres.dbname} from run {self.id}: restore by hand")
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
            detail=f"in {restore.duration_s:.1f} s, sha256 {dump.sha256[:12]}",
            source=self.postgres.source(),
        )
        check.record(
            "data written since the backup",
            "lost",
            detail="a restore puts the database back to the backup's moment",
        )
        database_as_before(
            check, self.postgres, dump.row_counts, self._schema_version_before(), "after restore"
        )

    def _revert_migrations(self, check: Checker) -> None:
        migrate = self.env.migrate
        if migrate is None or migrate.runner != "sql":
            check.fail(
                "down-migrations", "only the built-in SQL runner has down-migrations: restore or undo by hand"
            )
            return
        before = self._schema_version_before()
        directory = migrations_directory(migrate, self.release)
        current = self.postgres.schema_version()
        shipped = [m.version for m in read_migrations(directory)]
        # What this run applied: the release's migrations newer than the version before it.
        versions = [
            v
            for v in shipped
            if (before is None or version_key(v) > version_key(before))
            and current is not None
            and version_key(v) <= version_key(current)
        ]
        if not versions:
            check.record("down-migrations", "none to run", detail=f"schema at {current}, as before")
            return
        self.progress(f"running down-migrations {', '.join(reversed(versions))}")
        result = revert_sql_migrations(
            self.postgres.conninfo(),
            directory,
            versions,
            lock_timeout=migrate.lock_timeout,
            statement_timeout=migrate.statement_timeout,
            password=self.env.database.password.resolve() if self.env.database.password else None,
        )
        check.holds("down-migrations ran", result.ok, detail=result.error, source=str(directory))
        check.equals(
            "schema version after down-migrations",
            result.version_after,
            before,
            source=self.postgres.source(self.postgres.version_query),
        )

    # The end ----------------------------------------------------------------------------

    def finish(self) -> None:
        for phase in self._phases_open[-1:]:
            self.phase_finished(phase)
        self.refresh()
        failure = self.pipeline.failure
        message = failure.message if failure else None
        if self.pipeline.undo_ok is False:
            message = f"{message or ''} | rollback: {self.pipeline.undo_detail}"
        self.ledger.finish_run(
            self.id,
            str(self.pipeline.decision),
            self.pipeline.exit_code,
            str(failure.phase) if failure else None,
            failure.gate if failure else None,
            message,
        )


def _phase(name: str | None) -> Phase | None:
    try:
        return Phase(name) if name else None
    except ValueError:
        return None


@contextmanager
def _shielded(progress: Progress) -> Iterator[None]:
    """A rollback runs to its end: Ctrl-C or SIGTERM during it is reported, not obeyed."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def refuse(signum: int, _frame: object) -> None:
        progress(
            f"{signal.Signals(signum).name} ignored: the rollback is running and will finish "
            "(kill -9 stops it; then run pytest rollback/)"
        )

    previous = {sig: signal.signal(sig, refuse) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
