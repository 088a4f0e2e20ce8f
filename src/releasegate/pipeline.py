"""The decision tree: what a failed gate means for the run. Pure logic, no I/O.

a gate fails in          what happens                                         exit
preflight, backup        ABORTED: nothing changed, later phases skipped        10
migrate                  database restored from this run's backup; ABORTED     10
deploy .. finalize       ROLLED_BACK: nothing further runs, rollback at once   11
rollback or its check    ROLLBACK_FAILED: what is left to do by hand           12
nothing                  SUCCESS                                                0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from releasegate.config import Phase

PHASES: tuple[Phase, ...] = tuple(Phase)

READ_ONLY_PHASES = frozenset({Phase.PREFLIGHT})
"""Phases whose remaining checks still run after one fails: the operator gets the whole picture."""

ABORTING_PHASES = frozenset({Phase.PREFLIGHT, Phase.BACKUP, Phase.MIGRATE})


class Decision(StrEnum):
    SUCCESS = "SUCCESS"
    ABORTED = "ABORTED"
    ROLLED_BACK = "ROLLED_BACK"
    ROLLBACK_FAILED = "ROLLBACK_FAILED"


EXIT_CODES: dict[Decision, int] = {
    Decision.SUCCESS: 0,
    Decision.ABORTED: 10,
    Decision.ROLLED_BACK: 11,
    Decision.ROLLBACK_FAILED: 12,
}


class Change(StrEnum):
    """What a run has changed in the target, recorded just before each mutation."""

    DATABASE = "database"
    APPLICATION = "application"
    MAINTENANCE = "maintenance"
    POLICY = "policy"


class Undo(StrEnum):
    RESTORE_DATABASE = "restore the database from this run's backup"
    REVERT_MIGRATIONS = "run this run's down-migrations"
    ROLL_BACK_APPLICATION = "roll the application back to the previous release"
    ROLL_BACK_POLICY = "put the previous policy bundle back"
    ENTER_MAINTENANCE = "put the service in maintenance mode before its database is undone"
    LEAVE_MAINTENANCE = "take the service out of maintenance mode"


@dataclass(frozen=True)
class Failure:
    phase: Phase
    gate: str
    message: str


@dataclass
class Pipeline:
    """The state of one deployment run as the gates report in."""

    database_policy: str = "never"
    """rollback.database: restore | down-migrations | never (for deploy..finalize failures)."""
    migrate_policy: str = "restore"
    """migrate.on_failure: restore | down-migrations (for a failed migration)."""
    maintenance_first: bool = False
    """rollback.maintenance: the service out before its database is undone, back after (Granter)."""
    changes: set[Change] = field(default_factory=set)
    failure: Failure | None = None
    undo_ok: bool | None = None
    undo_detail: str = ""

    def changed(self, change: Change) -> None:
        self.changes.add(change)

    def gate_failed(self, phase: Phase, gate: str, message: str) -> None:
        """Only the first failure decides; the ones after it are consequences."""
        if self.failure is None:
            self.failure = Failure(phase, gate, message)

    def skip_reason(self, phase: Phase) -> str | None:
        """Why a gate of ``phase`` must not run now, or None when it may."""
        failure = self.failure
        if failure is None:
            return None
        if phase == failure.phase and phase in READ_ONLY_PHASES:
            return None
        verdict = self.planned_decision()
        consequence = {
            Decision.ABORTED: "nothing was changed" if not self.changes else "the database is restored",
            Decision.ROLLED_BACK: "rolling back to the previous release",
        }.get(verdict, "")
        return f"{failure.phase} gate {failure.gate} failed: {consequence}".rstrip(": ")

    def undo_plan(self) -> tuple[Undo, ...]:
        """What must be undone, in order, given the failure and what changed."""
        if self.failure is None:
            return ()
        return undo_plan(
            self.failure.phase,
            self.changes,
            self.database_policy,
            self.migrate_policy,
            maintenance_first=self.maintenance_first,
        )

    def undo_finished(self, ok: bool, detail: str = "") -> None:
        self.undo_ok = ok
        self.undo_detail = detail

    def planned_decision(self) -> Decision:
        failure = self.failure
        if failure is None:
            return Decision.SUCCESS
        return Decision.ABORTED if failure.phase in ABORTING_PHASES else Decision.ROLLED_BACK

    @property
    def decision(self) -> Decision:
        if self.undo_ok is False:
            return Decision.ROLLBACK_FAILED
        return self.planned_decision()

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.decision]


def undo_plan(
    failed_phase: Phase,
    changes: set[Change],
    database_policy: str,
    migrate_policy: str,
    *,
    maintenance_first: bool = False,
) -> tuple[Undo, ...]:
    """The decision tree's undo for a run that stopped in ``failed_phase`` having made ``changes``.

    Shared by a failing run and by ``pytest rollback/`` planning for a run that was killed.
    ``maintenance_first`` (rollback.maintenance) orders a rollback that undoes the database as
    Granter's runbook does: nobody is served while the database goes back (steps 2-3), then the
    previous release comes up on it (4), instead of the previous release running on the new
    schema until the database is undone.
    """
    # Maintenance mode ends last: the service comes back on the database it will run on.
    leave = [Undo.LEAVE_MAINTENANCE] if Change.MAINTENANCE in changes else []
    if failed_phase in ABORTING_PHASES:
        if failed_phase == Phase.MIGRATE and Change.DATABASE in changes:
            return (_database_undo(migrate_policy), *leave)
        return tuple(leave)
    # Summit GA 7: the application (7.1), then the policy bundle it went out with (7.2), then
    # the database (7.3): the reverse of the order they changed in.
    steps = [Undo.ROLL_BACK_APPLICATION]
    if Change.POLICY in changes:
        steps.append(Undo.ROLL_BACK_POLICY)
    if Change.DATABASE in changes and database_policy != "never":
        if maintenance_first:
            # Granter: scale down (2), the database (3), the previous images (4); leaving
            # maintenance then finds the replicas back, or brings them back.
            return (Undo.ENTER_MAINTENANCE, _database_undo(database_policy), *steps, Undo.LEAVE_MAINTENANCE)
        steps.append(_database_undo(database_policy))
    return (*steps, *leave)


def _database_undo(policy: str) -> Undo:
    return Undo.REVERT_MIGRATIONS if policy == "down-migrations" else Undo.RESTORE_DATABASE


def phase_index(phase: Phase) -> int:
    return PHASES.index(phase)
