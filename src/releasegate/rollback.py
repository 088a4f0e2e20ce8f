"""``pytest rollback/``: undo the last run recorded in the ledger, or drill a rollback.

The plan comes from the ledger alone (what the run changed, where it stopped, its backup), so a
run killed with SIGKILL is undone exactly as a failing run undoes itself. Running it twice is
safe: a run already rolled back is only verified again. A drill (``--drill``) rolls the last
successful release back and then forward again, and records that it did.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from releasegate.actions.backup import Dump, dump_database, restore_in_place
from releasegate.actions.migrate import migrate
from releasegate.actions.policy import Activation, BundleSwitch
from releasegate.config import Environment, Phase
from releasegate.errors import ReleasegateError
from releasegate.evidence import Checker
from releasegate.ledger import Ledger, RunRecord
from releasegate.pipeline import Change, Decision, Undo, undo_plan
from releasegate.plan import last_phase
from releasegate.platforms import instances_reachable
from releasegate.platforms.base import Progress
from releasegate.run import CHANGES, Run
from releasegate.verification import database_as_before, every_instance_serves

ROLLBACK, DRILL = "rollback", "drill"


class RollbackSession:
    """One ``pytest rollback/`` invocation: the run it undoes, the plan, and its own ledger run."""

    def __init__(self, run: Run, target: RunRecord, back_to: str | None, drill: bool) -> None:
        self.run = run
        self.target = target
        self.back_to = back_to
        self.drill = drill
        self.env = run.env
        self._target_run = Run(run.env, run.ledger, target.id, run.progress)

    @classmethod
    def open(
        cls,
        env: Environment,
        ledger: Ledger,
        progress: Progress,
        *,
        to_release: str | None,
        drill: bool,
        argv: list[str],
    ) -> RollbackSession:
        """Find the run to undo and refuse, in one line, what must not be done."""
        target = _last_run_to_undo(ledger, env.name)
        if target is None:
            raise ReleasegateError(
                f"no deployment of {env.name} that changed anything in the ledger ({ledger.where}): nothing to roll back"
            )
        succeeded = target.decision == Decision.SUCCESS
        if drill and not succeeded:
            raise ReleasegateError(
                f"--drill rolls back a release that went out well: the last run {target.id} "
                f"({target.release}) ended {target.decision or 'unfinished'}"
            )
        if succeeded and not drill and not to_release and target.rolled_back_by is None:
            raise ReleasegateError(
                f"the last run {target.id} deployed {target.release} to {env.name} and ended in SUCCESS: "
                f"nothing failed to undo. To go back anyway, name the release: "
                f"pytest rollback/ --env={env.name} --release={target.previous_release or 'VERSION'}"
            )
        back_to = to_release or target.previous_release
        run = Run.start(
            env,
            back_to or "unknown",
            ledger,
            progress,
            meta={"argv": argv},
            kind=DRILL if drill else ROLLBACK,
            target_run=target.id,
        )
        session = cls(run, target, back_to, drill)
        try:
            run.remember_previous_release(run.platform.current_release())
        except ReleasegateError as exc:
            progress(f"cannot read the release serving now: {exc}")
        return session

    # The plan -----------------------------------------------------------------------------

    @property
    def already_undone(self) -> bool:
        return bool(self.target.rolled_back_by) or self.target.undo_ok is True

    @property
    def stopped_in(self) -> Phase:
        """Where the run stopped: its first failure, else the last phase it started."""
        recorded = self.target.failed_phase or last_phase(self.target)
        return Phase(recorded) if recorded else Phase.PREFLIGHT

    @property
    def changes(self) -> set[Change]:
        return {CHANGES[i.action] for i in self.target.intents if i.action in CHANGES}

    @property
    def schema_before(self) -> str | None:
        intent = self.target.intent("migrate")
        return intent.undo.get("schema_version_before") if intent else None

    @property
    def touches_database(self) -> bool:
        return any(step in (Undo.RESTORE_DATABASE, Undo.REVERT_MIGRATIONS) for step in self.full_plan())

    def plan(self) -> tuple[Undo, ...]:
        """What is left to do: nothing when the run was already rolled back."""
        return () if self.already_undone and not self.drill else self.full_plan()

    def full_plan(self) -> tuple[Undo, ...]:
        """The decision tree's undo for the target run, done or not."""
        migrate_policy = self.env.migrate.on_failure if self.env.migrate else "restore"
        # Going back from a release that went out (SUCCESS): as if its last phase had failed.
        phase = Phase.FINALIZE if self.target.decision == Decision.SUCCESS else self.stopped_in
        return undo_plan(
            phase,
            self.changes,
            self.env.rollback.database,
            migrate_policy,
            maintenance_first=self.env.rollback.maintenance,
        )

    # Doing it -----------------------------------------------------------------------------

    def roll_back(self, check: Checker) -> tuple[bool, str]:
        """Undo the target run once; a second invocation finds it done and only verifies."""

        def act() -> dict:
            plan = self.plan()
            if not plan:
                if not self.target.finished:
                    self._close_target(True, "nothing had changed")
                return {"ok": True, "detail": "nothing to undo", "acted": False}
            ok, detail = self._target_run.carry_out(plan, check, to_release=self.back_to)
            self._close_target(ok, detail)
            return {"ok": ok, "detail": detail, "acted": True}

        outcome = self.run.once("rollback", act)
        return outcome["ok"], outcome["detail"]

    def _close_target(self, ok: bool, detail: str) -> None:
        ledger = self.run.ledger
        ledger.finish_undo(self.target.id, ok, detail)
        ledger.mark_rolled_back(self.target.id, self.run.id)
        if not self.target.finished:
            stopped = (
                f"stopped during {self.stopped_in} without finishing (killed?); undone by run {self.run.id}"
            )
            decision = (
                Decision.ROLLBACK_FAILED
                if not ok
                else (
                    Decision.ABORTED
                    if self.stopped_in in (Phase.PREFLIGHT, Phase.BACKUP, Phase.MIGRATE)
                    else Decision.ROLLED_BACK
                )
            )
            ledger.finish_run(
                self.target.id,
                str(decision),
                {"SUCCESS": 0, "ABORTED": 10, "ROLLED_BACK": 11}.get(decision, 12),
                str(self.stopped_in),
                "killed",
                stopped,
            )

    def drill_back(self, check: Checker) -> None:
        """The drill's first half: the previous release and schema, as a real rollback does it."""

        def act() -> dict:
            fresh = None
            if self.env.rollback.database == "restore" and Change.DATABASE in self.changes:
                # Today's data, so the drill can bring it back after restoring the old backup.
                fresh = dump_database(
                    self.run.postgres,
                    self.run.postgres.dbname,
                    Path(self.env.backup.dir),
                    f"{self.run.id}-drill",
                    tables=self.env.backup.verify_tables.get(self.run.postgres.dbname, []),
                    bin_dir=self.env.backup.pg_bin_dir,
                    timeout_s=self.env.backup.timeout_s,
                )
                check.record(
                    "backup of now, for the way forward",
                    str(fresh.path),
                    detail=f"sha256 {fresh.sha256[:12]}",
                )
            ok, detail = self._target_run.carry_out(self.plan(), check, to_release=self.back_to)
            return {
                "ok": ok,
                "detail": detail,
                "fresh": {**asdict(fresh), "path": str(fresh.path)} if fresh else None,
            }

        outcome = self.run.once("drill-back", act)
        check.holds("rolled back for the drill", outcome["ok"], detail=outcome["detail"])

    def drill_forward(self, check: Checker) -> None:
        """The drill's second half: the release again, with its schema and today's data."""

        def act() -> dict:
            target = self.target
            policy = self.env.policy
            if Change.POLICY in self.changes and policy is not None and policy.bundle is not None:

                def forward(switch: BundleSwitch) -> Activation:  # GA 4.1: the policy first
                    return switch.apply(switch.prepare(target.release), self.run.progress)

                self.run.switch_policy(forward, check, "policy bundle rolled forward")
            result = self.run.platform.deploy(target.release, self.run.progress)
            check.holds(
                f"rolled forward to {target.release}", result.ok, detail=result.reason, source="platform"
            )
            back = self.run.ledger.result(self.run.id, "drill-back") or {}
            if back.get("fresh"):
                fresh = Dump(**{**back["fresh"], "path": Path(back["fresh"]["path"])})
                restore_in_place(
                    self.run.postgres,
                    fresh,
                    tables=list(fresh.row_counts),
                    bin_dir=self.env.backup.pg_bin_dir,
                    timeout_s=self.env.backup.timeout_s,
                )
                database_as_before(
                    check, self.run.postgres, fresh.row_counts, _schema_after(target), "after the drill"
                )
            elif self.env.migrate is not None and Change.DATABASE in self.changes:
                migrated = migrate(self.run.postgres, self.env.migrate, target.release)
                check.holds("migrations applied again", migrated.ok, detail=migrated.error)
            verify = self.env.verify
            every_instance_serves(
                check,
                self.run.platform,
                target.release,
                verify,
                reachable=instances_reachable(self.env),
            )
            return {"ok": True}

        self.run.once("drill-forward", act)

    def verify_serving(self, check: Checker) -> None:
        """The release gone back to is what every instance serves, healthy."""
        if self.back_to is None:
            check.fail("release to go back to", "the run recorded no previous release")
            return
        verify = self.env.verify
        every_instance_serves(
            check,
            self.run.platform,
            self.back_to,
            verify,
            reachable=instances_reachable(self.env),
        )


def _last_run_to_undo(ledger: Ledger, environment: str) -> RunRecord | None:
    """The newest deployment that changed something, or that never finished (it must be closed)."""
    for run_id in ledger.runs(environment, limit=50, kind="deploy"):
        header = ledger.header(run_id)
        if not header.finished or any(action in CHANGES for action in ledger.intent_actions(run_id)):
            return ledger.run(run_id)
    return None


def _schema_after(record: RunRecord) -> str | None:
    migration = record.results.get("migrate")
    return migration.get("version_after") if migration else None
