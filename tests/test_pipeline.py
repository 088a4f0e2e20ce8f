"""The decision tree, exactly as DESIGN.md's table says."""

import pytest

from releasegate.config import Phase
from releasegate.pipeline import Change, Decision, Pipeline, Undo


def failed_in(phase: Phase, *changes: Change, **policies: str) -> Pipeline:
    pipeline = Pipeline(**policies)
    for change in changes:
        pipeline.changed(change)
    pipeline.gate_failed(phase, f"gates/test_x.py::test_{phase}", "boom")
    return pipeline


def test_nothing_failed_is_success():
    pipeline = Pipeline()
    assert (pipeline.decision, pipeline.exit_code, pipeline.undo_plan()) == (Decision.SUCCESS, 0, ())
    assert pipeline.skip_reason(Phase.VERIFY) is None


@pytest.mark.parametrize("phase", [Phase.PREFLIGHT, Phase.BACKUP])
def test_preflight_or_backup_failure_aborts_with_nothing_to_undo(phase):
    pipeline = failed_in(phase)
    assert (pipeline.decision, pipeline.exit_code, pipeline.undo_plan()) == (Decision.ABORTED, 10, ())
    assert "nothing was changed" in pipeline.skip_reason(Phase.MIGRATE)


def test_remaining_preflight_checks_still_run_after_one_fails():
    pipeline = failed_in(Phase.PREFLIGHT)
    assert pipeline.skip_reason(Phase.PREFLIGHT) is None
    assert pipeline.skip_reason(Phase.BACKUP) is not None


def test_a_failed_backup_gate_stops_the_rest_of_backup():
    assert failed_in(Phase.BACKUP).skip_reason(Phase.BACKUP) is not None


def test_failed_rehearsal_changed_nothing_so_nothing_is_restored():
    pipeline = failed_in(Phase.MIGRATE)
    assert (pipeline.decision, pipeline.undo_plan()) == (Decision.ABORTED, ())


@pytest.mark.parametrize(
    ("policy", "undo"), [("restore", Undo.RESTORE_DATABASE), ("down-migrations", Undo.REVERT_MIGRATIONS)]
)
def test_failed_migration_on_the_target_is_undone_then_aborted(policy, undo):
    pipeline = failed_in(Phase.MIGRATE, Change.DATABASE, migrate_policy=policy)
    assert (pipeline.decision, pipeline.exit_code, pipeline.undo_plan()) == (Decision.ABORTED, 10, (undo,))
    assert "restored" in pipeline.skip_reason(Phase.DEPLOY)


@pytest.mark.parametrize("phase", [Phase.DEPLOY, Phase.VERIFY, Phase.OBSERVE, Phase.FINALIZE])
def test_failure_after_the_change_rolls_back(phase):
    pipeline = failed_in(phase, Change.DATABASE, Change.APPLICATION)
    assert (pipeline.decision, pipeline.exit_code) == (Decision.ROLLED_BACK, 11)
    assert pipeline.undo_plan() == (Undo.ROLL_BACK_APPLICATION,), "database policy 'never' keeps the data"
    assert pipeline.skip_reason(phase) is not None, "no further gate runs, not even in the same phase"


@pytest.mark.parametrize(
    ("policy", "undo"), [("restore", Undo.RESTORE_DATABASE), ("down-migrations", Undo.REVERT_MIGRATIONS)]
)
def test_database_follows_the_rollback_policy(policy, undo):
    pipeline = failed_in(Phase.VERIFY, Change.DATABASE, Change.APPLICATION, database_policy=policy)
    assert pipeline.undo_plan() == (Undo.ROLL_BACK_APPLICATION, undo)


def test_no_database_undo_when_this_run_did_not_migrate():
    pipeline = failed_in(Phase.VERIFY, Change.APPLICATION, database_policy="restore")
    assert pipeline.undo_plan() == (Undo.ROLL_BACK_APPLICATION,)


def test_a_failed_rollback_is_rollback_failed():
    pipeline = failed_in(Phase.VERIFY, Change.APPLICATION)
    pipeline.undo_finished(False, "instance 1.0.0 on :28101 never became ready")
    assert (pipeline.decision, pipeline.exit_code) == (Decision.ROLLBACK_FAILED, 12)


def test_a_failed_restore_after_a_failed_migration_is_rollback_failed():
    pipeline = failed_in(Phase.MIGRATE, Change.DATABASE)
    pipeline.undo_finished(False, "pg_restore failed")
    assert pipeline.exit_code == 12


def test_only_the_first_failure_decides():
    pipeline = failed_in(Phase.VERIFY, Change.APPLICATION)
    pipeline.gate_failed(Phase.FINALIZE, "gates/test_90.py::test_y", "later")
    assert pipeline.failure.phase == Phase.VERIFY


def test_a_failed_migration_in_maintenance_restores_the_database_then_leaves_maintenance():
    pipeline = failed_in(Phase.MIGRATE, Change.MAINTENANCE, Change.DATABASE, migrate_policy="restore")
    assert pipeline.undo_plan() == (Undo.RESTORE_DATABASE, Undo.LEAVE_MAINTENANCE)


def test_maintenance_is_left_last_when_a_release_is_rolled_back():
    changes = (Change.MAINTENANCE, Change.DATABASE, Change.APPLICATION)
    pipeline = failed_in(Phase.VERIFY, *changes, database_policy="restore")
    assert pipeline.undo_plan() == (Undo.ROLL_BACK_APPLICATION, Undo.RESTORE_DATABASE, Undo.LEAVE_MAINTENANCE)


def test_a_changed_policy_bundle_goes_back_after_the_application_and_before_the_database():
    """Summit GA 7: application (7.1), policy (7.2), database (7.3): the reverse of the changes."""
    pipeline = failed_in(
        Phase.VERIFY, Change.DATABASE, Change.POLICY, Change.APPLICATION, database_policy="restore"
    )
    assert pipeline.undo_plan() == (
        Undo.ROLL_BACK_APPLICATION,
        Undo.ROLL_BACK_POLICY,
        Undo.RESTORE_DATABASE,
    )
    assert pipeline.decision == Decision.ROLLED_BACK


def test_the_policy_bundle_is_left_alone_when_this_run_did_not_change_it():
    assert Undo.ROLL_BACK_POLICY not in failed_in(Phase.VERIFY, Change.APPLICATION).undo_plan()


# rollback.maintenance: Granter's rollback order (issue 11) ----------------------------------


@pytest.mark.parametrize("policy", ["restore", "down-migrations"])
def test_granter_s_order_takes_the_service_out_undoes_the_database_then_brings_the_previous_release(policy):
    """Granter's rollback: scale down (2), the database (3), the previous images (4); maintenance
    is left last, whether or not the migration had entered it."""
    database = Undo.RESTORE_DATABASE if policy == "restore" else Undo.REVERT_MIGRATIONS
    for changes in [
        (Change.DATABASE, Change.APPLICATION),
        (Change.MAINTENANCE, Change.DATABASE, Change.APPLICATION),
    ]:
        pipeline = failed_in(Phase.OBSERVE, *changes, database_policy=policy, maintenance_first=True)
        assert pipeline.undo_plan() == (
            Undo.ENTER_MAINTENANCE,
            database,
            Undo.ROLL_BACK_APPLICATION,
            Undo.LEAVE_MAINTENANCE,
        )
        assert pipeline.exit_code == 11


def test_the_default_order_is_summit_s_application_first():
    pipeline = failed_in(Phase.VERIFY, Change.DATABASE, Change.APPLICATION, database_policy="restore")
    assert pipeline.undo_plan() == (Undo.ROLL_BACK_APPLICATION, Undo.RESTORE_DATABASE)


def test_without_a_database_undo_maintenance_first_changes_nothing():
    """Nothing to restore (database = never, or this run did not migrate): nobody is taken out."""
    kept = failed_in(
        Phase.VERIFY, Change.DATABASE, Change.APPLICATION, database_policy="never", maintenance_first=True
    )
    unmigrated = failed_in(
        Phase.VERIFY, Change.APPLICATION, database_policy="restore", maintenance_first=True
    )
    assert kept.undo_plan() == unmigrated.undo_plan() == (Undo.ROLL_BACK_APPLICATION,)


def test_a_failed_migration_is_undone_as_before_with_maintenance_first():
    """Before the release went out the previous release still runs on it: the migrate path is unchanged."""
    pipeline = failed_in(Phase.MIGRATE, Change.MAINTENANCE, Change.DATABASE, maintenance_first=True)
    assert pipeline.undo_plan() == (Undo.RESTORE_DATABASE, Undo.LEAVE_MAINTENANCE)
    assert pipeline.exit_code == 10


def test_a_policy_bundle_goes_back_with_the_application_after_the_database():
    pipeline = failed_in(
        Phase.VERIFY,
        Change.DATABASE,
        Change.POLICY,
        Change.APPLICATION,
        database_policy="restore",
        maintenance_first=True,
    )
    assert pipeline.undo_plan() == (
        Undo.ENTER_MAINTENANCE,
        Undo.RESTORE_DATABASE,
        Undo.ROLL_BACK_APPLICATION,
        Undo.ROLL_BACK_POLICY,
        Undo.LEAVE_MAINTENANCE,
    )
