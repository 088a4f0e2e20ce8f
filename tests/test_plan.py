"""`--dry-run` says what the run will do: the plan's gates are the gates the run executes, every
template is filled, the strategy is the environment's own, and a first deployment onto an empty
platform is planned as one. Against the notes service (tests/notes_service), not the demo."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import psycopg
from gate_runs import GateRun, run_gates
from notes_service.stack import REVISIONS, notes_environment, running_notes, write_notes_env

RELEASE = "1.5.0"


def plan_of(env_file: Path, release: str) -> tuple[str, GateRun]:
    """The plan as `pytest gates/ --dry-run -v` prints it (with each gate's id), and the run."""
    run = run_gates(env_file, release, "--dry-run", "-v")
    assert run.code == 0, run.output
    start = run.output.index("releasegate plan (dry run")
    end = run.output.index("collected ", start)
    return run.output[start:end], run


def planned_gates(plan: str) -> tuple[list[str], list[str]]:
    """(gates the plan lists as checks, gates it lists as not run), by node id."""
    checks: list[str] = []
    not_run: list[str] = []
    current = checks
    for line in plan.splitlines():
        if line.startswith("  check "):
            current = checks
        elif line.startswith("  not run "):
            current = not_run
        elif line.strip().startswith("gate ") and line.startswith("          "):
            current.append(line.split("gate", 1)[1].strip())
    return checks, not_run


def executed_gates(reports: Path) -> list[str]:
    """The gates JUnit shows as executed (passed or failed, not skipped), as node ids."""
    executed = []
    for case in ET.parse(reports / "junit.xml").getroot().iter("testcase"):
        if case.find("skipped") is not None:
            continue
        module = case.get("classname", "").replace(".", "/")
        executed.append(f"{module}.py::{case.get('name')}")
    return executed


def scratch_databases(env_file: Path) -> list[str]:
    """What `psql -l` would show of releasegate's scratch copies."""
    env = notes_environment(env_file)
    with psycopg.connect(env.database.dsn) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", [f"{env.backup.scratch_prefix}%"]
        ).fetchall()
    return [r[0] for r in rows]


def test_the_plan_lists_the_gates_the_run_executes_with_every_template_filled(sandbox_dir: Path) -> None:
    env_file = write_notes_env(sandbox_dir)
    with running_notes(env_file):
        plan, _ = plan_of(env_file, RELEASE)
        checks, not_run = planned_gates(plan)
        run = run_gates(env_file, RELEASE)
        assert run.code == 0, run.output
        executed = executed_gates(run.reports)
        scratch_left = scratch_databases(env_file)

    # The plan's checks are exactly the gates the run executed, in the same order.
    assert checks == executed, "\n".join(["plan:", *checks, "run:", *executed])
    # The gates it says will not run are skipped: the notes service has no Redis, no journeys.
    assert any("test_redis_answers_pong" in g for g in not_run), plan
    assert "not run redis-cli ping: PONG: the environment has no [redis] section" in plan
    assert re.search(r"not run Run Smoke Tests.*: no \[smoke\] journeys", plan), plan
    # Its own strategy, its own migration command and version query, every template filled.
    assert "strategy:    rolling update on the local platform: 2 instance(s), max surge 2" in plan
    assert "health:      1.5.0 (build.version of /internal/status)" in plan, "what the release reports"
    assert "releases/1.5.0.ini upgrade head" in plan and "{release}" not in plan and "{python}" not in plan
    assert "check   SELECT version_num FROM alembic_version: the latest migration" in plan
    assert "schema_migrations" not in plan
    assert f"from {REVISIONS['1.4.0']} (SELECT version_num FROM alembic_version)" in plan
    # What a failure does, observe included.
    assert "  in deploy, verify, observe, finalize: no further gate runs; roll back to 1.4.0" in plan
    assert "the database is kept as migrated (rollback.database = never)" in plan
    # The scratch copy went right after the rehearsal, before the real migration; none is left.
    dropped = run.output.index("dropped scratch database releasegate_scratch_notes")
    assert dropped < run.output.index("migrating notes"), run.output
    assert "releasegate_scratch_notes is dropped right after the migration rehearsal" in plan
    assert scratch_left == []
    # The report shows the revision applied, not the command's template.
    report = run.report
    assert f"applied {REVISIONS['1.5.0']} (schema {REVISIONS['1.4.0']} -> {REVISIONS['1.5.0']}" in report
    assert "{release}" not in report


def test_a_canary_is_planned_step_by_step_and_run_as_planned(sandbox_dir: Path) -> None:
    env_file = write_notes_env(sandbox_dir, **{"platform.local.strategy": "canary"})
    with running_notes(env_file):
        plan, _ = plan_of(env_file, RELEASE)
        checks, _not_run = planned_gates(plan)
        run = run_gates(env_file, RELEASE)
        assert run.code == 0, run.output
        executed = executed_gates(run.reports)

    # Each canary step is its own gate, planned and run in the same order as the others.
    assert checks == executed, "\n".join(["plan:", *checks, "run:", *executed])
    assert sum("canary" in gate for gate in executed) >= 2, executed

    assert (
        "strategy:    canary on the local platform: canary instances follow the weight "
        "(ceil(p × 2 / 100): 1, 2 at the steps) beside 2 stable, traffic at 50, 100 %" in plan
    )
    assert "start 1 canary instance(s) of 1.5.0 (more as the weight grows) beside the 2 of 1.4.0" in plan
    assert "rolling update" not in plan
    step = plan[plan.index("  check   canary at 50 % of requests to 1.5.0") :]
    lines = step.splitlines()
    assert (
        lines[1].split()[:5] == ["health", "each", "canary", "instance", "asked"]
        and "/internal/status" in lines[1]
    )
    assert lines[2].split()[:13] == [
        "pause",
        "4",
        "s;",
        "canary",
        "and",
        "stable",
        "(1.4.0)",
        "sampled",
        "every",
        "1",
        "s",
        "over",
        "3s;",
    ]
    assert "at least 3 samples and 30 requests" in lines[2] and "then no data: rollback" in lines[2]
    judged = lines[3]
    assert "error_ratio <= 0.02, at most 20 % worse than stable" in judged
    assert "latency_p95 <= 250 ms, at most 20 % worse than stable" in judged and "cpu" not in judged
    assert "each group of its buckets on its own once it has 20 requests a side" in judged
    assert "if it fails the canary is taken out of the load balancer at once" in step
    assert "  check   canary at 100 % of requests to 1.5.0: every request on the canary" in plan
    assert plan.count("  check   canary at ") == 2
    assert "after the 100 % step: promote the canary 1.5.0 to all 2 instances" in plan


def test_a_pinned_canary_count_that_a_step_would_overload_is_named_in_the_plan(sandbox_dir: Path) -> None:
    env_file = write_notes_env(
        sandbox_dir, **{"platform.local.strategy": "canary", "platform.local.canary_instances": 1}
    )
    with running_notes(env_file):
        plan, _ = plan_of(env_file, RELEASE)

    assert (
        "strategy:    canary on the local platform: 1 canary instance(s) beside 2 stable (refused: canary "
        "step 100 %: platform.local.canary_instances = 1 puts every request on fewer instances than the 2 "
        "stable ones had (each carrying 2.00 times the requests of a stable one serving alone): "
        "unset platform.local.canary_instances to let the canary follow the weight, or pin at least 2), "
        "traffic at 50, 100 %" in plan
    )
    assert "start 1 canary instance(s) of 1.5.0 beside the 2 of 1.4.0" in plan


def test_an_initial_release_is_planned_and_run_as_one(sandbox_dir: Path) -> None:
    env_file = write_notes_env(sandbox_dir, **{"platform.local.strategy": "canary"})
    with running_notes(env_file, serving=None):
        plan, _ = plan_of(env_file, "1.4.0")
        checks, not_run = planned_gates(plan)
        run = run_gates(env_file, "1.4.0")
        assert run.code == 0, run.output
        executed = executed_gates(run.reports)

    assert "serving now: nothing: initial release" in plan
    assert (
        "strategy:    initial release: nothing serves yet, so 1.4.0 goes out to every instance at once"
        in plan
    )
    assert "there is no previous release to roll back to" in plan
    assert "  check   canary at" not in plan and "promote the canary" not in plan
    assert re.search(r"not run Progressive traffic.*\(2 gates\): initial release", plan), plan
    assert "start 1.4.0 on 2 instance(s) at once on the local platform (initial release)" in plan
    assert "1.4.0 is stopped; nothing to go back to (no release served before)" in plan
    assert "; roll back to" not in plan
    assert checks == executed, "\n".join(["plan:", *checks, "run:", *executed])
    assert not_run and not set(not_run) & set(executed)
