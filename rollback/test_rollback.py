"""Rollback on demand: undo the last run recorded in the ledger for the environment.

Summit GA 7.1-7.3 (application, policy, database rollback; "Database rollback results in data
loss"); Granter's rollback procedure (previous version by image tag, SQL restore, verify,
smoke); Release Manager's `kubectl rollout undo` + `rollout status`. Run it twice: the second
time it only verifies.
"""

import pytest

from releasegate.verification import health_repeatedly

pytestmark = pytest.mark.usefixtures("not_a_drill")


@pytest.fixture
def not_a_drill(request):
    if request.config.getoption("rg_drill"):
        pytest.skip("--drill: see test_drill.py")


def test_the_run_to_undo_is_identified(rollback, check):
    """Previous version identified: which run, what it changed, where it stopped, what comes back."""
    target = rollback.target
    check.record(
        "run to undo",
        target.id,
        detail=f"{target.release} to {target.environment}, "
        f"{target.decision or 'unfinished: killed during ' + str(rollback.stopped_in)}",
    )
    check.record("changes it made", ", ".join(sorted(rollback.changes)) or "none")
    check.present("release to go back to", rollback.back_to, source="ledger: the run's previous release")
    check.record(
        "database policy",
        rollback.env.rollback.database,
        detail="restore loses writes made since the backup"
        if rollback.env.rollback.database == "restore"
        else "",
    )
    plan = rollback.plan()
    check.record(
        "plan",
        "; ".join(plan) or "nothing to undo",
        detail=f"already rolled back by run {target.rolled_back_by}" if rollback.already_undone else "",
    )


def test_rollback_is_carried_out_and_verified(rollback, check):
    """Restore the previous version, then the database as the environment says; each step verified."""
    ok, detail = rollback.roll_back(check)
    check.holds("rollback verified", ok, detail=detail)


def test_the_previous_release_serves_everywhere(rollback, env, service, check):
    """Verify rollback: rollout status, and every instance healthy on the previous release."""
    rollback.verify_serving(check)
    health_repeatedly(check, service, env.verify, rollback.back_to, 3, env.verify.health_interval_s)


def test_the_schema_is_what_the_policy_says(rollback, postgres, env, check):
    """{migrate.version_query}: the previous version when the database was undone."""
    if env.migrate is None:
        pytest.skip("no [migrate] section: this service has no schema to check")
    now = postgres.schema_version(query=env.migrate.version_query)
    if rollback.touches_database:
        check.equals(
            "schema version", now, rollback.schema_before, source=postgres.source(env.migrate.version_query)
        )
    else:
        check.record(
            "schema version", now, detail=f"left as it is: rollback.database = {env.rollback.database}"
        )
