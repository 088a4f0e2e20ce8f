"""One deployment per environment, enforced by the target (issue 12): the lease in the
application's database keeps two runs apart even when each keeps its own ledger, a live run is
never rolled back under its feet, and a holder that died or stopped renewing loses it in time.

The rules are tested apart from the database; then real sandboxes and the notes service, with
leases of a few seconds set in their environment files.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from gate_runs import ROOT, TEST_PLUGINS_OFF, environment, run_gates, run_suite, serving, start_gates
from notes_service.stack import REVISIONS, notes_database, running_notes, write_notes_env
from sandbox_env import variant

from releasegate.actions.backup import dump_database, pg_tool
from releasegate.lease import (
    TABLE,
    Holder,
    Lease,
    LeaseState,
    free_text,
    holder_for,
    holder_gone,
    holder_line,
    live_lease,
    read_lease,
    verdict,
)
from releasegate.ledger import Ledger
from releasegate.probes.postgres import Postgres

LEASE_S = 12.0
"""Long enough that a pytest run started on a busy machine (several seconds before it asks) still
finds a live lease live; short enough that waiting for one to expire costs seconds, not minutes."""
NOW = datetime(2026, 12, 7, 10, 0, 0, tzinfo=UTC)
ONE_ZERO = [("1.0.0", "healthy", "1.0.0")] * 3
TWO_ZERO = [("2.0.0", "healthy", "2.0.0")] * 3


def _holder(token: str = "a1", **kw: object) -> Holder:
    fields: dict[str, object] = {
        "token": token,
        "run_id": "20261207T095900Z-abc123",
        "kind": "deploy",
        "release": "2.0.0",
        "operator": "alice@ci-3",
        "host": "ci-3",
        "pid": 4242,
        "phase": "deploy",
    }
    fields.update(kw)
    return Holder(**fields)  # type: ignore[arg-type]


def _state(
    holder: Holder | None = None, *, beat_s_ago: float = 2, duration_s: float = 30, **kw: object
) -> LeaseState:
    beat = NOW - timedelta(seconds=beat_s_ago)
    return LeaseState(
        "staging",
        NOW,
        holder,
        since=NOW - timedelta(minutes=5),
        heartbeat=beat,
        expires_at=beat + timedelta(seconds=duration_s),
        duration_s=duration_s,
        **kw,  # type: ignore[arg-type]
    )


# The rules, apart from any database ------------------------------------------------------------


def test_a_free_lease_is_taken_a_live_one_refused_and_the_holder_renews_its_own() -> None:
    assert verdict(LeaseState("staging", NOW), "b2") == "take", "never held"
    live = _state(_holder())
    assert verdict(live, "b2") == "held"
    assert verdict(live, "a1") == "renew"
    assert verdict(live, "b2", force=True) == "take", "rollback/ --force"


def test_a_lease_expires_duration_after_its_last_heartbeat_or_when_its_holder_is_gone() -> None:
    assert verdict(_state(_holder(), beat_s_ago=29.9), "b2") == "held"
    expired = _state(_holder(), beat_s_ago=30)
    assert not expired.live() and verdict(expired, "b2") == "take"
    assert verdict(_state(_holder(), beat_s_ago=1), "b2", holder_gone=True) == "take", (
        "kill -9 on this machine"
    )
    released = _state(_holder(), released_at=NOW - timedelta(seconds=1))
    assert verdict(released, "b2") == "take" and verdict(released, "a1") == "take", "released: taken afresh"


def test_a_claim_that_held_the_lease_and_finds_it_anothers_or_released_has_lost_it() -> None:
    assert verdict(_state(_holder()), "a1", held_before=True) == "renew"
    assert verdict(_state(_holder(), beat_s_ago=60), "a1", held_before=True) == "renew", (
        "late, but nobody took it"
    )
    assert verdict(_state(_holder("f9", kind="rollback")), "a1", held_before=True) == "lost", "forced"
    released = _state(_holder("f9"), released_at=NOW)
    assert verdict(released, "a1", held_before=True) == "lost", "taken and released meanwhile"


def test_the_refusal_names_the_holder_and_says_what_to_do() -> None:
    line = holder_line("staging", _state(_holder(), beat_s_ago=4))

    assert "\n" not in line
    assert line.startswith(
        "staging is in use: run 20261207T095900Z-abc123 (deploy 2.0.0, alice@ci-3, pid 4242 on ci-3,"
    )
    assert "phase deploy, since 2026-12-07T09:55:00Z, last heartbeat 4 s ago) is in progress" in line
    assert "wait for it to end (or add --wait SECONDS)" in line
    assert "the lease expires at 2026-12-07T10:00:26Z (in 26 s, 30 s after its last heartbeat)" in line
    assert (
        "`pytest rollback/ --env=staging` or `pytest gates/ --env=staging --release=2.0.0 --resume`" in line
    )


def test_stopped_is_said_only_of_a_lease_that_is_not_live() -> None:
    expired = _state(_holder(), beat_s_ago=40)
    assert free_text(expired) == "its lease expired at 2026-12-07T09:59:50Z"
    assert free_text(_state(_holder()), holder_gone=True) == "its holder, pid 4242 on ci-3, is gone"
    assert free_text(None) == "nobody holds its lease"


def test_a_holder_is_gone_only_when_this_machine_can_tell() -> None:
    me = holder_for("run", "deploy", "2.0.0")
    assert not holder_gone(me), "this very process"
    assert not holder_gone(_holder(machine="another-boot/pid:[1]", pid=999_999)), (
        "another machine: expiry decides"
    )
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    assert holder_gone(Holder(**{**me.to_dict(), "pid": int(dead.stdout)}))


# On real targets -------------------------------------------------------------------------------


class Background:
    """A gate run in the background whose output is read as it comes (never blocking it)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, seen: Callable[[str], bool], timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(seen(line) for line in list(self.lines)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                time.sleep(0.2)
                raise AssertionError("never came:\n" + self.output)
            time.sleep(0.1)

    def finish(self, timeout_s: float = 300) -> int:
        code = self.proc.wait(timeout=timeout_s)
        self._reader.join(timeout=10)
        return code


def _suite(suite: str, env_file: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", *TEST_PLUGINS_OFF, suite, f"--env={env_file}", *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.fixture
def leased(sandbox_env: Path) -> Path:
    """The sandbox with a lease of LEASE_S seconds (renewed every LEASE_S / 3)."""
    return variant(sandbox_env, "leased", **{"lease.duration_s": LEASE_S})


def _taken(line: str) -> bool:
    return "lease on sandbox taken by run" in line


@pytest.mark.integration
def test_one_run_at_a_time_on_the_sandbox_whatever_its_ledger(leased: Path) -> None:
    runners = leased.parent / "runners"
    # The first run is kept busy for half a minute more (its health probes in verify), so that
    # every refusal below meets it live however slowly this machine starts each pytest.
    slow = variant(leased, "slow", **{"verify.health_probes": 15, "verify.health_interval_s": 2})
    first = Background(start_gates(slow, "2.0.0"))
    first.wait_for(_taken)
    holder = read_lease(environment(leased)).holder
    assert holder is not None
    waiting = Background(_suite("rollback/", leased, "--release=1.0.0", "--wait=240"))  # meets it live

    t0 = time.monotonic()
    second = run_gates(leased, "2.0.0", f"--reports={runners / 'other-runner'}")
    took = time.monotonic() - t0
    rollback = run_suite("rollback/", leased)  # the first run's own ledger: it is unfinished there
    dry = run_gates(leased, "2.0.0", "--dry-run", f"--reports={runners / 'dry'}")
    down = subprocess.run(
        [sys.executable, "-m", "sandbox", "down", f"--env={leased}"], cwd=ROOT, capture_output=True, text=True
    )

    assert first.finish() == 0, first.output
    assert second.code == 4 and took < 30, second.output
    named = (
        f"run {holder.run_id} (deploy 2.0.0, {holder.operator}, pid {first.proc.pid} on {holder.host}, phase "
    )
    assert f"sandbox is in use: {named}" in second.output, second.output
    assert "is in progress and holds its lease: wait for it to end" in second.output
    assert "preflight" not in second.output.split("sandbox is in use")[0], "refused before preflight"
    assert rollback.code == 4 and f"sandbox is in use: {named}" in rollback.output, rollback.output
    assert "lease on sandbox: sandbox is in use: run " in dry.output and dry.code == 0, dry.output
    assert down.returncode == 1 and "not tearing down: sandbox is in use: run" in down.stderr, down.stderr

    # The first run deployed alone and migrated once; the refused runs changed nothing.
    first_ledger = Ledger(leased.parent / "reports" / "ledger.sqlite")
    record = first_ledger.run(holder.run_id)
    assert record.decision == "SUCCESS"
    assert [i.action for i in record.intents].count("migrate") == 1
    other = Ledger(runners / "other-runner" / "ledger.sqlite")
    (refused,) = [other.run(r) for r in other.runs("sandbox")]
    assert (refused.decision, refused.exit_code, refused.intents) == ("REFUSED", 4, [])
    assert refused.failure and f"run {holder.run_id}" in refused.failure
    refused_rollback = first_ledger.run(first_ledger.runs("sandbox", kind="rollback")[-1])
    assert refused_rollback.decision == "REFUSED"
    with psycopg.connect(environment(leased).database.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations WHERE version = '0002'").fetchone() == (
            1,
        )

    # The lease taken and released, in the ledger and the report.
    lease = record.results["lease"]
    assert lease["taken_at"] and lease["released_at"] and lease["renewals"] >= 3, lease
    assert (
        f"| Lease | sandbox held by pid {first.proc.pid} on {holder.host}"
        in (leased.parent / "reports" / "deployment-report.md").read_text()
    )

    # --wait: the rollback waited for the run's end, then took the environment.
    assert waiting.finish() == 0, waiting.output
    assert "waiting for sandbox" in waiting.output and f"held by run {holder.run_id}" in waiting.output
    assert serving(leased) == ONE_ZERO
    assert read_lease(environment(leased)).released_at is not None, "released at the end"


def hang_outside_a_ledger_write(pid: int, env_file: Path, tries: int = 50) -> None:
    """SIGSTOP the run, again and again until it is not stopped inside a write to its ledger: a
    run stopped while it holds SQLite's write lock keeps every other run out of that ledger (the
    one line "database is locked" says so), which is not what these tests are about."""
    ledger_file = env_file.parent / "reports" / "ledger.sqlite"
    for _ in range(tries):
        os.kill(pid, signal.SIGSTOP)
        try:
            with sqlite3.connect(ledger_file, timeout=0.5) as db:
                db.execute("BEGIN IMMEDIATE")
                db.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.2)
    raise AssertionError(f"the run kept its ledger locked in {tries} tries")


def first_run(env_file: Path) -> str:
    book = Ledger(env_file.parent / "reports" / "ledger.sqlite")
    return book.runs("sandbox", kind="deploy")[-1]


@pytest.mark.integration
def test_a_holder_that_stops_renewing_loses_the_lease_in_time_then_rollback_works(leased: Path) -> None:
    first = Background(start_gates(leased, "2.0.0"))
    try:
        first.wait_for(lambda line: "2.0.0 serves on all" in line)
        time.sleep(1)  # the rollout's own lock on the platform is let go
        hang_outside_a_ledger_write(first.proc.pid, leased)  # a runner that hangs: alive, renewing nothing
        stopped_at = time.monotonic()

        live = run_suite("rollback/", leased)
        assert live.code == 4 and "is in progress and holds its lease" in live.output, live.output

        env = environment(leased)
        while live_lease(env) is not None:
            assert time.monotonic() - stopped_at < LEASE_S + 5, "the lease outlived its stated time"
            time.sleep(0.2)
        refused = run_gates(leased, "2.0.0")
        assert refused.code == 4 and ", its lease expired at" in refused.output, refused.output
        assert f"has an unfinished run {first_run(leased)} (2.0.0, stopped during " in refused.output

        rollback = run_suite("rollback/", leased)
        assert rollback.code == 0, rollback.output
        assert serving(leased) == ONE_ZERO
    finally:
        first.proc.kill()  # SIGKILL ends a stopped process too
        first.finish()


@pytest.mark.integration
def test_kill_9_frees_the_lease_at_once_on_the_holders_machine(leased: Path) -> None:
    env = environment(leased)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from releasegate.config import load_environment; "
            "from releasegate.lease import Lease, holder_for; "
            f"env = load_environment({str(leased)!r}, __import__('pathlib').Path({str(ROOT)!r})); "
            "lease = Lease(env, holder_for('run-k', 'deploy', '2.0.0'), print); print(lease.take()[0], flush=True); "
            "time.sleep(600)",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "take"
    taken = live_lease(env)
    assert taken is not None and taken.holder is not None and taken.holder.pid == holder.pid

    mine = Lease(env, holder_for("run-m", "rollback", "1.0.0"), print)
    assert mine.take()[0] == "held"
    holder.send_signal(signal.SIGKILL)
    holder.wait()

    assert live_lease(env) is None
    assert mine.take()[0] == "take"

    # Backups leave the lease out: no restore ever rewinds who holds the environment.
    pg = Postgres(env.database)
    dump = dump_database(pg, pg.dbname, leased.parent / "backups", "lease", tables=[])
    listing = subprocess.run(
        [pg_tool("pg_restore"), "--list", str(dump.path)], capture_output=True, text=True
    )
    assert "customers" in listing.stdout and TABLE not in listing.stdout
    mine.release()


@pytest.fixture
def notes(sandbox_dir: Path) -> Iterator[Path]:
    """The notes service with a lease of a few seconds, outside pytest's numbered temp dirs
    (another session's pruning would take PostgreSQL's data directory away mid-test)."""
    env_file = write_notes_env(sandbox_dir / "notes", **{"lease.duration_s": LEASE_S})
    with running_notes(env_file) as running:
        yield running


@pytest.mark.integration
def test_one_run_at_a_time_on_the_notes_service_with_a_ledger_per_runner(
    notes: Path, sandbox_dir: Path
) -> None:
    runners = sandbox_dir / "runners"
    first = Background(
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pytest",
                *TEST_PLUGINS_OFF,
                "gates/",
                f"--env={notes}",
                "--release=1.5.0",
                f"--reports={runners / 'runner-a'}",
                "-n",
                "2",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    )
    first.wait_for(lambda line: "lease on notes taken by run" in line)

    second = run_gates(notes, "1.5.0", f"--reports={runners / 'runner-b'}")

    assert first.finish() == 0, first.output
    assert second.code == 4 and "notes is in use: run " in second.output, second.output
    assert first.output.count("lease on notes taken") == 1, "the xdist controller takes it, once"
    assert notes_database(notes)["revision"] == REVISIONS["1.5.0"]
    a = Ledger(runners / "runner-a" / "ledger.sqlite")
    (deployed,) = [a.run(r) for r in a.runs("notes")]
    assert deployed.decision == "SUCCESS" and [i.action for i in deployed.intents].count("migrate") == 1
    b = Ledger(runners / "runner-b" / "ledger.sqlite")
    assert [b.header(r).decision for r in b.runs("notes")] == ["REFUSED"]
    assert read_lease(environment(notes)).released_at is not None


@pytest.mark.integration
def test_rollback_force_takes_the_lease_from_a_live_run_says_what_it_breaks_and_records_who(
    leased: Path,
) -> None:
    first = Background(start_gates(leased, "2.0.0"))
    try:
        first.wait_for(lambda line: "2.0.0 serves on all" in line)
        time.sleep(1)  # the rollout's own lock on the platform is let go
        hang_outside_a_ledger_write(first.proc.pid, leased)

        forced = run_suite("rollback/", leased, "--force")

        assert forced.code == 0, forced.output
        assert "--force: sandbox is held by run " in forced.output
        assert "its next change is refused, it will not undo its own work" in forced.output
        assert serving(leased) == ONE_ZERO
        book = Ledger(leased.parent / "reports" / "ledger.sqlite")
        rollback = book.run(book.runs("sandbox", kind="rollback")[0])
        assert rollback.results["lease"]["forced_from"].startswith(f"run {first_run(leased)} (deploy 2.0.0")
        state = read_lease(environment(leased))
        assert state.forced_by == rollback.operator and state.released_at is not None

        os.kill(first.proc.pid, signal.SIGCONT)  # the forced run wakes up: it changes nothing more
        assert first.finish() == 12, first.output
        assert "the lease on sandbox was lost to" in first.output
        assert serving(leased) == ONE_ZERO, "nothing undone twice, nothing rolled forward"
    finally:
        if first.proc.poll() is None:
            first.proc.kill()
            first.finish()


def _runner(env_file: Path, reports: Path, suite: str, *extra: str) -> subprocess.Popen[str]:
    """A runner with its own reports and ledger (another CI runner, a laptop), in the background."""
    return _suite(suite, env_file, *extra, f"--reports={reports}")


@pytest.mark.integration
def test_on_the_notes_service_each_runner_with_its_own_ledger_meets_the_lease(
    notes: Path, sandbox_dir: Path
) -> None:
    """What the sandbox's tests show with one ledger, with a ledger per runner: kill -9 of a real
    gate run frees the lease at once and its runner's `pytest rollback/` then works; a rollback,
    a drill and a --resume from another runner meet a live run and are refused (exit 4), and the
    live run ends SUCCESS; a run with --wait gets the environment once the first one ends."""
    runners = sandbox_dir / "runners"
    env = environment(notes)
    one_four = [("1.4.0", "healthy", "1.4.0")] * 2
    slow = variant(notes, "slow", **{"verify.health_probes": 15, "verify.health_interval_s": 2})

    # kill -9 of a gate run that has rolled its release out: the lease is free at once (its
    # holder's process is gone on this machine) and that runner's rollback undoes it.
    killed = Background(_runner(slow, runners / "runner-e", "gates/", "--release=1.5.0"))
    try:
        killed.wait_for(lambda line: "1.5.0 serves on all" in line)
    finally:
        killed.proc.send_signal(signal.SIGKILL)
        killed.finish()
    assert live_lease(env) is None, "a holder killed on this machine holds nothing"
    undo = run_suite("rollback/", notes, f"--reports={runners / 'runner-e'}")
    assert undo.code == 0, undo.output
    assert serving(notes) == one_four

    # A live run, met by three other runners, each with its own ledger.
    first = Background(_runner(slow, runners / "runner-a", "gates/", "--release=1.5.0"))
    first.wait_for(lambda line: "lease on notes taken by run" in line)
    holder = read_lease(env).holder
    assert holder is not None
    waiting = Background(
        _runner(notes, runners / "runner-c", "gates/", "--release=1.5.0-stale-version", "--wait=300")
    )
    rollback = run_suite("rollback/", notes, "--release=1.4.0", f"--reports={runners / 'runner-b'}")
    drill = run_suite("rollback/", notes, "--drill", f"--reports={runners / 'runner-b'}")
    resume = run_gates(notes, "1.5.0", "--resume", f"--reports={runners / 'runner-b'}")

    assert first.finish() == 0, first.output
    named = f"notes is in use: run {holder.run_id} (deploy 1.5.0"
    for refused in (rollback, drill, resume):
        assert refused.code == 4 and named in refused.output, refused.output
        assert "is in progress and holds its lease" in refused.output
    b = Ledger(runners / "runner-b" / "ledger.sqlite")
    assert [b.header(r).decision for r in b.runs("notes")] == ["REFUSED"] * 3, "each refusal recorded"
    assert notes_database(notes)["revision"] == REVISIONS["1.5.0"]

    # --wait: the third runner waited for the first run's end, then took the environment and
    # deployed its (bad) release, rolled back to what the first run left.
    assert waiting.finish() == 11, waiting.output
    assert "waiting for notes" in waiting.output and f"held by run {holder.run_id}" in waiting.output
    assert serving(notes) == [("1.5.0", "healthy", "1.5.0")] * 2
    assert read_lease(env).released_at is not None
