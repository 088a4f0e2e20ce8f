"""Migrations watched while they run (issue 10, items 2 and 6).

Units: the lock intervals (pure logic), the release names a template accepts. Against real
things: probe traffic to a real HTTP server whose route hangs, the lock watch on a real PostgreSQL
holding a real ACCESS EXCLUSIVE lock, and the gates end to end against the notes service (not the
demo): a migration that locks its table for seconds, one that fails with a long traceback, and
its alembic.ini found relative to migrate.workdir.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import pytest
from gate_runs import run_gates
from notes_service.stack import (
    NOTES,
    REVISIONS,
    notes_database,
    notes_migrate_settings,
    running_notes,
    write_notes_env,
)
from psycopg import sql
from psycopg.conninfo import make_conninfo
from sandbox_env import free_port_block, variant

from releasegate.actions.migrate import command_argv, migrate, release_for_templates
from releasegate.config import DatabaseSettings, MigrateSettings
from releasegate.errors import ActionError
from releasegate.probes.locks import HeldLock, LockIntervals, LockReport, LockWatch
from releasegate.probes.postgres import Postgres
from releasegate.probes.traffic import TrafficProbe
from sandbox.postgres import Postgres as SandboxPostgres

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(300)


# Lock intervals: pure logic -------------------------------------------------------------------

NOTES_AX = ("notes", "AccessExclusiveLock")
USERS_SHARE = ("users", "ShareLock")


def test_a_lock_seen_in_consecutive_samples_is_held_from_the_first_to_the_last() -> None:
    intervals = LockIntervals()
    for at in (0.0, 0.1, 0.2, 0.3):
        intervals.add(at, [NOTES_AX])
    intervals.add(0.4, [])

    assert intervals.held() == [HeldLock("notes", "AccessExclusiveLock", 0.3, 4)]


def test_a_gap_splits_a_lock_into_two_holds_and_the_longest_is_kept() -> None:
    """Two transactions each taking the lock are two holds: users waited for each, not for both."""
    intervals = LockIntervals()
    samples = [[NOTES_AX], [NOTES_AX], [], [NOTES_AX], [NOTES_AX], [NOTES_AX], [NOTES_AX]]
    for n, held in enumerate(samples):
        intervals.add(n * 0.5, held)

    (held,) = intervals.held()
    assert (held.seconds, held.samples) == (1.5, 4)


def test_each_relation_and_mode_is_timed_on_its_own_longest_first() -> None:
    intervals = LockIntervals()
    intervals.add(0.0, [USERS_SHARE])
    intervals.add(1.0, [USERS_SHARE, NOTES_AX])
    intervals.add(2.0, [USERS_SHARE, NOTES_AX, ("notes", "ShareLock")])
    intervals.add(4.0, [USERS_SHARE])  # still open at the end: closed at its last sample

    held = intervals.held()
    assert [(h.relation, h.mode, h.seconds) for h in held] == [
        ("users", "ShareLock", 4.0),
        ("notes", "AccessExclusiveLock", 1.0),
        ("notes", "ShareLock", 0.0),
    ]
    assert held[1].describe() == "ACCESS EXCLUSIVE on notes for 1.00 s (2 samples)"


def test_no_sample_or_a_broken_watch_is_never_a_pass() -> None:
    assert "no sample" in LockReport("notes", "app").problem(5)
    assert LockReport("notes", "app", samples=3, error="lock watch stopped: x").problem(5).endswith("x")
    quiet = LockReport("notes", "app", samples=30)
    assert quiet.problem(5) == "" and quiet.longest is None
    held = LockReport("notes", "app", samples=60, held=[HeldLock("notes", "AccessExclusiveLock", 6.02, 60)])
    assert held.problem(5) == (
        "the migration held ACCESS EXCLUSIVE on notes for 6.02 s (60 samples), over migrate.max_lock_s 5 s"
    )
    assert held.problem(10) == ""
    assert LockReport.from_dict(held.to_dict()) == held, "through the ledger and back"


# Release names in templates: each argv element on its own, never a shell ---------------------


@pytest.mark.parametrize("release", ["1.5.0", "1.5.0-lock", "2.0.0+build.7", "v3_rc1"])
def test_release_names_of_letters_digits_and_dot_underscore_dash_plus_are_used(release: str) -> None:
    settings = MigrateSettings(
        runner="command", command=["alembic", "-c", "releases/{release}.ini", "upgrade"]
    )
    assert command_argv(settings, release) == ["alembic", "-c", f"releases/{release}.ini", "upgrade"]


@pytest.mark.parametrize("release", ["1.5.0; rm -rf /", "$(id)", "../1.4.0", "1.5.0 --sql", "", ".hidden"])
def test_any_other_release_name_is_refused_in_one_line(release: str) -> None:
    with pytest.raises(ActionError) as raised:
        release_for_templates(release)
    message = str(raised.value)
    assert "\n" not in message and "is not a release name: letters, digits and . _ - + only" in message


# Probe traffic: concurrent, timeouts are failures ---------------------------------------------


class HangingServer:
    """A real HTTP server on 127.0.0.1: /hang answers after ``hang_s``, anything else at once."""

    def __init__(self, hang_s: float) -> None:
        self.hang_s = hang_s
        self.answered_at: list[float] = []
        self.down = False
        """/service answers 503 while this is set (a service scaled to 0 behind its Service)."""
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/hang":
                    time.sleep(server.hang_s)
                server.answered_at.append(time.monotonic())
                down = self.path == "/service" and server.down
                self.send_response(500 if self.path == "/fail" else 503 if down else 200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def hanging() -> Iterator[HangingServer]:
    server = HangingServer(hang_s=3.0)
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def test_requests_keep_going_out_while_earlier_ones_hang_and_each_timeout_is_a_failure(
    hanging: HangingServer,
) -> None:
    """A sequential client would send one /hang and then wait: users behind a lock are many."""
    urls = [f"{hanging.url}/hang", f"{hanging.url}/ok"]
    started = time.monotonic()
    with TrafficProbe(urls, rps=20, timeout_s=0.5, max_duration_s=60) as probe:
        time.sleep(1.5)
    stats = probe.stats

    assert 20 <= stats.sent <= 32, "about 20 a second for 1.5 s, whatever hung"
    assert stats.timed_out == stats.statuses["timeout"] >= stats.sent // 2 - 1
    assert stats.statuses.get("200", 0) >= stats.sent // 4, "the others were answered meanwhile"
    assert stats.failed == stats.timed_out, "every timeout is a failure, every 200 is not"
    assert re.fullmatch(rf"\+0\.\d s GET {hanging.url}/hang: no answer within 0.5 s", stats.failures[0])
    assert time.monotonic() - started < 3.5, "it waits for what is in flight up to its timeout, no longer"


def test_nothing_sent_after_the_bound_and_5xx_and_refused_are_counted(hanging: HangingServer) -> None:
    with TrafficProbe(
        [f"{hanging.url}/fail", "http://127.0.0.1:1/"], rps=10, timeout_s=2, max_duration_s=0.5
    ) as probe:
        time.sleep(1.5)
    stats = probe.stats

    assert stats.sent == 6, "rps x max_duration_s + 1"
    assert stats.failed == stats.sent and stats.timed_out == 0
    assert stats.statuses == {"500": 3, "error": 3}
    assert any(f.endswith(f"GET {hanging.url}/fail: status 500") for f in stats.failures)


def test_until_serving_failures_before_the_first_answer_are_counted_apart_and_after_it_as_failures(
    hanging: HangingServer,
) -> None:
    """A rollout out of maintenance mode (scaled to 0): down by design until its first answer."""
    hanging.down = True
    with TrafficProbe(
        f"{hanging.url}/service", rps=20, timeout_s=1, max_duration_s=60, until_serving=True
    ) as probe:
        time.sleep(0.5)
        hanging.down = False
        time.sleep(0.5)
        hanging.down = True  # down again once it served: that is downtime
        time.sleep(0.3)
    stats = probe.stats

    assert 6 <= stats.before_serving <= 14, stats
    assert stats.serving_after_s is not None and 0.4 <= stats.serving_after_s <= 0.8
    assert 3 <= stats.failed <= 9 and stats.statuses["503"] == stats.failed, stats
    assert stats.statuses["200"] >= 6


# The lock watch on a real PostgreSQL ------------------------------------------------------------


@pytest.fixture(scope="module")
def server(module_sandbox_dir: Path) -> Iterator[SandboxPostgres]:
    """A real PostgreSQL of its own on a free port (the sandbox's way of starting one), nothing else."""
    pg = SandboxPostgres(module_sandbox_dir, f"postgresql://postgres@127.0.0.1:{free_port_block(1)}/postgres")
    pg.start()
    yield pg
    pg.stop()


@pytest.fixture
def db(server: SandboxPostgres, request: pytest.FixtureRequest) -> Iterator[Postgres]:
    """A fresh database on it, as releasegate's probe sees it; dropped afterwards."""
    name = f"watch_{request.node.name[:40].lower()}".replace("[", "_").replace("]", "").replace("-", "_")
    with psycopg.connect(server.conninfo("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield Postgres(DatabaseSettings(dsn=f"postgresql://postgres@127.0.0.1:{server.port}/{name}"))
    with psycopg.connect(server.conninfo("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _session(db: Postgres, app: str) -> psycopg.Connection:
    return psycopg.connect(make_conninfo(db.conninfo(), application_name=app))


def test_the_watch_times_the_lock_the_migration_holds_and_counts_who_waits_on_it(db: Postgres) -> None:
    with psycopg.connect(db.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (id int); CREATE TABLE other (id int)")
    locked, done = threading.Event(), threading.Event()

    def migration() -> None:  # the migration's backend: LOCK, hold it 1.2 s, commit
        with _session(db, "migration-under-watch") as conn:
            conn.execute("LOCK TABLE notes IN ACCESS EXCLUSIVE MODE")
            locked.set()
            time.sleep(1.2)
        done.set()

    def user() -> None:  # a user request behind it
        locked.wait(10)
        with _session(db, "a-user") as conn:
            conn.execute("SELECT count(*) FROM notes").fetchone()

    with _session(db, "someone-else") as bystander:
        bystander.execute("LOCK TABLE other IN SHARE MODE")  # not the migration's: not reported
        with LockWatch(
            db.conninfo(), application_name="migration-under-watch", database=db.dbname, interval_s=0.05
        ) as watch:
            threads = [threading.Thread(target=migration), threading.Thread(target=user)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(20)
    report = watch.report

    assert done.is_set() and report.error == ""
    assert [(h.relation, h.mode) for h in report.held] == [("notes", "AccessExclusiveLock")]
    assert 0.8 <= report.held[0].seconds <= 3.0, report.held
    assert report.max_waiting >= 1, "the user's SELECT waited on it"
    assert report.samples >= 15


def test_a_watch_that_cannot_connect_says_so_and_the_migration_is_not_its_business(db: Postgres) -> None:
    unreachable = "host=127.0.0.1 port=1 dbname=x connect_timeout=1"
    with LockWatch(unreachable, application_name="m", database="x") as watch:
        pass
    assert watch.report.samples == 0 and watch.report.error.startswith("lock watch stopped:")
    assert watch.report.problem(5) == watch.report.error


# The command runner against the notes service's own alembic migrations ----------------------


def test_the_command_runs_in_workdir_with_a_relative_alembic_ini(db: Postgres) -> None:
    first = migrate(db, notes_migrate_settings(), "1.4.0")
    second = migrate(db, notes_migrate_settings(), "1.5.0")

    assert (first.ok, first.version_after) == (True, "7c1e0a2f9b01"), first.error
    assert (second.ok, second.version_before, second.version_after) == (True, "7c1e0a2f9b01", "3f9d4b6a2c10")
    assert second.locks is not None and second.locks.samples >= 2 and second.locks.error == ""
    without = migrate(db, notes_migrate_settings(workdir=None), "1.5.0")
    assert not without.ok and "releases/1.5.0.ini" in "\n".join([*without.stderr_tail, without.error])


def test_alembic_s_backend_is_found_by_its_application_name_and_its_lock_timed(db: Postgres) -> None:
    """Not the scratch copy: only the backends named for this migration (PGAPPNAME) are watched."""
    assert migrate(db, notes_migrate_settings(), "1.4.0").ok
    with _session(db, "a-user") as user:
        user.execute("LOCK TABLE alembic_version IN SHARE MODE")  # someone else's lock: not reported
        user.commit()

    result = migrate(db, notes_migrate_settings(), "1.5.0-lock")

    assert result.ok and result.locks is not None and result.locks.error == ""
    longest = result.locks.longest
    assert longest is not None and (longest.relation, longest.mode_name) == ("notes", "ACCESS EXCLUSIVE")
    assert 5.5 <= longest.seconds <= 8, "1.5.0-lock holds it 6 s"
    assert result.locks.problem(5).startswith("the migration held ACCESS EXCLUSIVE on notes for ")


def test_a_failed_command_keeps_the_last_30_lines_of_stderr_where_the_cause_is(db: Postgres) -> None:
    assert migrate(db, notes_migrate_settings(), "1.4.0").ok
    with psycopg.connect(db.conninfo(), autocommit=True) as conn:
        conn.execute("INSERT INTO notes (body) VALUES ('a'), ('b')")  # the backfill divides by zero on a row

    result = migrate(db, notes_migrate_settings(), "1.5.0-bad-migration")

    assert not result.ok and result.version_after == "7c1e0a2f9b01"
    assert result.stderr_tail[-1].startswith("(Background on this error at:"), "the last line is no cause"
    assert 10 < len(result.stderr_tail) <= 30
    assert any("division by zero" in line for line in result.stderr_tail), "the tail has the cause"
    assert result.error.endswith(
        "exited with 1: sqlalchemy.exc.DataError: (psycopg.errors.DivisionByZero) division by zero"
    ), "and the one line names it"


def test_secrets_never_reach_the_kept_stderr(
    db: Postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCH_TEST_PG_PASSWORD", "s3cret-Value-42")
    secret_db = Postgres(DatabaseSettings(dsn=db.settings.dsn, password="${WATCH_TEST_PG_PASSWORD}"))
    script = tmp_path / "leaky.py"
    script.write_text(
        "import os, sys\n"
        "print('connected as', os.environ['PGAPPNAME'])\n"
        "print('password was', os.environ['PGPASSWORD'], file=sys.stderr)\n"
        "print('url postgresql://app:' + os.environ['PGPASSWORD'] + '@db/x', file=sys.stderr)\n"
        "sys.exit(4)\n"
    )
    result = migrate(secret_db, notes_migrate_settings(command=[sys.executable, str(script)]), "1.5.0")

    assert not result.ok and "exited with 4" in result.error
    kept = "\n".join([result.error, result.output, *result.stderr_tail])
    assert "s3cret-Value-42" not in kept and "password was ***" in kept
    assert "connected as releasegate-migrate-" in result.output, "the lock watch finds it by this name"


# The gates end to end against the notes service ------------------------------------------------


@pytest.fixture
def notes(sandbox_dir: Path) -> Iterator[Path]:
    """The notes service serving 1.4.0 with its 40 notes, as its team's environment file says."""
    with running_notes(write_notes_env(sandbox_dir)) as env_file:
        yield env_file


UNCHANGED = {"revision": REVISIONS["1.4.0"], "columns": ["body", "created_at", "id"], "rows": NOTES}


@pytest.mark.integration
def test_a_migration_that_keeps_its_lock_for_milliseconds_passes_with_every_user_served(notes: Path) -> None:
    """1.5.0 adds a column with a default: no rewrite, no wait. Its user routes answered throughout."""
    run = run_gates(notes, "1.5.0")

    assert run.code == 0, run.output
    assert notes_database(notes) == {
        **UNCHANGED,
        "revision": REVISIONS["1.5.0"],
        "columns": ["body", "created_at", "id", "pinned"],
    }
    report = run.report
    sent = re.search(
        r"\| user requests sent during the migration \| (\d+) \(in [\d.]+ s; answers: 200 x(\d+)\) \|", report
    )
    assert sent is not None and sent.group(1) == sent.group(2), "every one answered 200"
    assert "| user requests failed during the migration (5xx or no answer) | 0 | <= 0 | pass |" in report
    for what in ("rehearsal", "migration"):
        row = next(
            line
            for line in report.splitlines()
            if f"| longest lock users wait on held by the {what} |" in line
        )
        assert "| <= 5 s | pass |" in row, row


@pytest.mark.integration
def test_a_migration_that_locks_users_out_is_stopped_by_the_rehearsal_before_production(notes: Path) -> None:
    run = run_gates(notes, "1.5.0-lock")

    assert run.code == 10, run.output
    assert notes_database(notes) == UNCHANGED
    report = run.report
    assert "**Decision: ABORTED** (exit code 10)" in report
    assert (
        "Failed gate: `gates/test_20_migrate.py::test_rehearsal_holds_no_lock_users_would_wait_on_too_long`"
        in report
    )
    row = next(
        line for line in report.splitlines() if "| longest lock users wait on held by the rehearsal |" in line
    )
    held = re.search(
        r"\| ([\d.]+) s \(ACCESS EXCLUSIVE on notes for [\d.]+ s \(\d+ samples\)\) \| <= 5 s \| fail \|", row
    )
    assert held is not None, row
    assert 5 < float(held.group(1)) < 8, "1.5.0-lock holds it 6 s"
    assert "None: nothing in the target was changed." in report
    assert "rehearsing migrations of 1.5.0-lock" in run.output
    assert "migrating notes:" not in run.output, "production was never migrated"


@pytest.mark.integration
def test_without_a_rehearsal_users_timing_out_behind_the_lock_fail_the_migration(notes: Path) -> None:
    """The lock allowed (max_lock_s 30) and no rehearsal: what stops it is the users. Requests
    give up after 1 s, the lock is held 6 s: every request sent while it is held times out."""
    env_file = variant(
        notes,
        "notes-no-rehearsal",
        **{
            "migrate.rehearse": False,
            "migrate.max_lock_s": 30,
            "migrate.traffic_paths": ["/v1/notes?limit=3", "/v1/notes/1"],
            "verify.request_timeout_s": 1,
        },
    )

    run = run_gates(env_file, "1.5.0-lock")

    assert run.code == 10, run.output
    assert notes_database(notes) == UNCHANGED, "restored from this run's backup"
    report = run.report
    assert "Failed gate: `gates/test_20_migrate.py::test_users_were_served_during_the_migration`" in report
    timed_out = re.search(
        r"\| user requests that timed out during the migration \| (\d+) \(no answer within 1 s\)", report
    )
    assert timed_out is not None and int(timed_out.group(1)) >= 10, report
    failed = re.search(r"\| user requests failed during the migration \(5xx or no answer\) \| (\d+) ", report)
    assert failed is not None and int(failed.group(1)) >= int(timed_out.group(1))
    assert "no answer within 1 s" in report and "Database restore: verified" in report


@pytest.mark.integration
def test_a_failed_migration_s_evidence_has_the_cause_from_the_middle_of_its_traceback(notes: Path) -> None:
    run = run_gates(notes, "1.5.0-bad-migration")

    assert run.code == 10, run.output
    assert notes_database(notes) == UNCHANGED
    report = run.report
    assert "Failed gate: `gates/test_20_migrate.py::test_rehearsal_on_the_restored_copy`" in report
    stderr = next(line for line in report.splitlines() if "| rehearsal command's stderr (last " in line)
    assert "division by zero" in stderr and "Background on this error" in stderr
    assert (
        "exited with 1: sqlalchemy.exc.DataError: (psycopg.errors.DivisionByZero) division by zero" in report
    )
