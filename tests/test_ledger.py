"""The ledger, on SQLite and on PostgreSQL: written ahead of each mutation, readable after a run
is killed at any instant, one first failure and one undo claim however many processes race."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from psycopg import sql

from releasegate.analysis.thresholds import Verdict
from releasegate.config import load_environment
from releasegate.evidence import Evidence
from releasegate.ledger import SCHEMA_VERSION, Ledger
from releasegate.probes.postgres import Postgres
from releasegate.report.markdown import render

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, object]]:
    """How to open a fresh ledger: a SQLite file, or a new database on a real PostgreSQL."""
    if request.param == "sqlite":
        yield {"path": tmp_path / "ledger.sqlite"}
        return
    env_file = request.getfixturevalue("module_sandbox_env")
    server = Postgres(load_environment(str(env_file), ROOT).database)
    name = f"ledger_{abs(hash(request.node.name)) % 10**8}"
    with server.connect("postgres") as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield {"dsn": server.url(name)}
    with server.connect("postgres") as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_a_run_reads_back_in_order(where):
    ledger = Ledger(**where)
    run_id = ledger.start_run("sandbox", "2.0.0", {"argv": ["gates/"]})
    ledger.set_previous_release(run_id, "1.0.0")
    ledger.phase_started(run_id, "preflight")
    ledger.evidence(
        run_id,
        Evidence(
            "pg_is_in_recovery()",
            False,
            Verdict.PASS,
            comparator="==",
            threshold=False,
            gate="g::a",
            phase="preflight",
        ),
    )
    ledger.gate(run_id, "g::a", "preflight", "Database primary accepts writes", "passed", 0.01)
    ledger.phase_finished(run_id, "preflight", "passed")
    seq = ledger.intent(run_id, "deploy", "roll out 2.0.0", {"previous_release": "1.0.0"})
    ledger.intent_done(seq, "done")
    ledger.save_result(run_id, "backup", {"dumps": {"demo": {"sha256": "ab"}}})
    ledger.event(run_id, "gw1", "2.0.0 on :8104 ready")
    ledger.finish_run(run_id, "SUCCESS", 0)

    record = ledger.run(run_id)
    assert (record.release, record.previous_release, record.decision, record.exit_code) == (
        "2.0.0",
        "1.0.0",
        "SUCCESS",
        0,
    )
    assert record.evidence[0].check == "pg_is_in_recovery()" and record.evidence[0].verdict is Verdict.PASS
    assert record.intents[0].undo == {"previous_release": "1.0.0"} and record.intents[0].outcome == "done"
    assert record.results["backup"]["dumps"]["demo"]["sha256"] == "ab"
    assert [line for _seq, _src, line in ledger.events(run_id)] == ["2.0.0 on :8104 ready"]
    assert ledger.runs("sandbox") == [run_id]


def test_the_first_failure_and_one_undo_claim_win_a_race(where):
    """Four workers fail at once and all try to undo: one failure decides, one process undoes."""
    ledger = Ledger(**where)
    run_id = ledger.start_run("sandbox", "2.0.0")
    with ThreadPoolExecutor(8) as pool:
        failures = list(
            pool.map(lambda n: ledger.record_failure(run_id, "verify", f"g{n}", "boom"), range(8))
        )
        claims = list(pool.map(lambda n: ledger.claim_undo(run_id, f"worker {n}"), range(8)))
    assert failures.count(True) == 1 and claims.count(True) == 1
    header = ledger.header(run_id)
    assert (
        header.failed_gate == f"g{failures.index(True)}" and header.undo_by == f"worker {claims.index(True)}"
    )


def test_a_killed_run_leaves_a_readable_ledger_that_says_where_it_stopped(where):
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from releasegate.ledger import Ledger
        where = {where!r}
        ledger = Ledger(**where)
        run_id = ledger.start_run("sandbox", "2.0.0")
        ledger.phase_started(run_id, "deploy")
        ledger.intent(run_id, "deploy", "roll out 2.0.0 replacing 1.0.0", {{"previous_release": "1.0.0"}})
        print(run_id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """).replace("PosixPath(", "Path(")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    run_id = proc.stdout.strip()

    record = Ledger(**where).run(run_id)
    assert record.status == "running" and record.ended_at is None
    assert record.phases[0]["phase"] == "deploy" and record.phases[0]["ended_at"] is None
    assert record.intents[0].undo == {"previous_release": "1.0.0"} and record.intents[0].done_at is None
    report = render(record, load_environment("sandbox", ROOT))
    assert "UNFINISHED" in report and "did not end" in report and "did not finish" in report


def test_an_old_ledger_is_upgraded_in_place(tmp_path):
    """A ledger written by the first schema opens with the current code; its runs are kept."""
    path = tmp_path / "ledger.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO ledger_meta VALUES ('schema_version', '1');"
        "CREATE TABLE runs (id TEXT PRIMARY KEY, environment TEXT NOT NULL, release TEXT NOT NULL,"
        " previous_release TEXT, operator TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,"
        " started_at TEXT NOT NULL, ended_at TEXT, status TEXT NOT NULL DEFAULT 'running', decision TEXT,"
        " exit_code INTEGER, failed_phase TEXT, failed_gate TEXT, failure TEXT, meta TEXT NOT NULL DEFAULT '{}');"
        "CREATE TABLE phases (run_id TEXT, phase TEXT, started_at TEXT, ended_at TEXT, outcome TEXT);"
        "CREATE TABLE gates (run_id TEXT, gate TEXT, phase TEXT, title TEXT, outcome TEXT, duration_s REAL,"
        " message TEXT, at TEXT, PRIMARY KEY (run_id, gate));"
        "CREATE TABLE evidence (seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT, record TEXT);"
        "CREATE TABLE intents (seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT, action TEXT, about_to TEXT,"
        " undo TEXT, at TEXT, done_at TEXT, outcome TEXT, detail TEXT DEFAULT '');"
        "INSERT INTO runs (id, environment, release, operator, host, pid, started_at, status, decision)"
        " VALUES ('old-run', 'staging', '1.9.0', 'ops', 'h', 1, '2026-01-01T00:00:00', 'finished', 'SUCCESS');"
    )
    db.close()

    ledger = Ledger(path)
    record = ledger.run("old-run")
    assert (record.release, record.decision, record.kind) == ("1.9.0", "SUCCESS", "deploy")
    version = (
        sqlite3.connect(path).execute("SELECT value FROM ledger_meta WHERE key = 'schema_version'").fetchone()
    )
    assert int(version[0]) == SCHEMA_VERSION
