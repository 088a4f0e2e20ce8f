"""The durable record of every run: who deployed what where, each phase, every measurement,
and, written before each mutation, what is about to change and how to undo it.

SQLite in WAL mode with synchronous=FULL: every write is its own committed transaction, so a
run killed at any instant leaves a ledger that opens and says where it stopped. The report is
rendered from here, which is why an auditor can follow it line by line.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from releasegate.evidence import Evidence

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    environment TEXT NOT NULL,
    release TEXT NOT NULL,
    previous_release TEXT,
    operator TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    status TEXT NOT NULL DEFAULT 'running',
    decision TEXT,
    exit_code INTEGER,
    failed_phase TEXT,
    failed_gate TEXT,
    failure TEXT,
    meta TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS runs_by_environment ON runs (environment, started_at);
CREATE TABLE IF NOT EXISTS phases (
    run_id TEXT NOT NULL REFERENCES runs (id),
    phase TEXT NOT NULL,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    outcome TEXT,
    PRIMARY KEY (run_id, phase)
);
CREATE TABLE IF NOT EXISTS gates (
    run_id TEXT NOT NULL REFERENCES runs (id),
    gate TEXT NOT NULL,
    phase TEXT NOT NULL,
    title TEXT NOT NULL,
    outcome TEXT NOT NULL,
    duration_s REAL NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    at TEXT NOT NULL,
    PRIMARY KEY (run_id, gate)
);
CREATE TABLE IF NOT EXISTS evidence (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs (id),
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS intents (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs (id),
    action TEXT NOT NULL,
    about_to TEXT NOT NULL,
    undo TEXT NOT NULL,
    at TEXT NOT NULL,
    done_at TEXT,
    outcome TEXT,
    detail TEXT NOT NULL DEFAULT ''
);
"""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def operator() -> str:
    """Who runs the gates: the CI job when there is one, else the user at the host."""
    for variable, label in (("GITHUB_ACTIONS", "github"), ("GITLAB_CI", "gitlab"), ("CI", "ci")):
        if os.environ.get(variable):
            job = os.environ.get("GITHUB_RUN_ID") or os.environ.get("CI_JOB_ID") or ""
            actor = os.environ.get("GITHUB_ACTOR") or os.environ.get("GITLAB_USER_LOGIN") or "ci"
            return f"{actor} via {label} job {job}".strip()
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


@dataclass
class Intent:
    seq: int
    action: str
    about_to: str
    undo: dict[str, Any]
    at: str
    done_at: str | None
    outcome: str | None
    detail: str


@dataclass
class RunRecord:
    """Everything the ledger knows about one run, in the order it happened."""

    id: str
    environment: str
    release: str
    previous_release: str | None
    operator: str
    host: str
    pid: int
    started_at: str
    ended_at: str | None
    status: str
    decision: str | None
    exit_code: int | None
    failed_phase: str | None
    failed_gate: str | None
    failure: str | None
    meta: dict[str, Any]
    phases: list[dict[str, Any]] = field(default_factory=list)
    gates: list[dict[str, Any]] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)
    intents: list[Intent] = field(default_factory=list)


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        db = self._connect()
        try:
            # executescript commits on its own: the schema goes in as one script transaction.
            db.executescript(f"BEGIN IMMEDIATE;\n{_SCHEMA}\nCOMMIT;")
            if db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        finally:
            db.close()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        return db

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    # Writing ----------------------------------------------------------------------------

    def start_run(self, environment: str, release: str, meta: dict[str, Any] | None = None) -> str:
        run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)
        with self._db() as db:
            db.execute(
                "INSERT INTO runs (id, environment, release, operator, host, pid, started_at, meta) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    environment,
                    release,
                    operator(),
                    socket.gethostname(),
                    os.getpid(),
                    now(),
                    json.dumps(meta or {}),
                ),
            )
        return run_id

    def set_previous_release(self, run_id: str, previous: str | None) -> None:
        with self._db() as db:
            db.execute("UPDATE runs SET previous_release = ? WHERE id = ?", (previous, run_id))

    def phase_started(self, run_id: str, phase: str) -> None:
        with self._db() as db:
            db.execute(
                "INSERT OR IGNORE INTO phases (run_id, phase, started_at) VALUES (?, ?, ?)",
                (run_id, phase, now()),
            )

    def phase_finished(self, run_id: str, phase: str, outcome: str) -> None:
        with self._db() as db:
            db.execute(
                "UPDATE phases SET ended_at = ?, outcome = ? WHERE run_id = ? AND phase = ?",
                (now(), outcome, run_id, phase),
            )

    def gate(
        self,
        run_id: str,
        gate: str,
        phase: str,
        title: str,
        outcome: str,
        duration_s: float,
        message: str = "",
    ) -> None:
        with self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO gates (run_id, gate, phase, title, outcome, duration_s, message, at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, gate, phase, title, outcome, duration_s, message, now()),
            )

    def evidence(self, run_id: str, record: Evidence) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO evidence (run_id, record) VALUES (?, ?)", (run_id, json.dumps(record.to_dict()))
            )

    def intent(self, run_id: str, action: str, about_to: str, undo: dict[str, Any]) -> int:
        """Written before a mutation: what is about to change and how to undo it."""
        with self._db() as db:
            cursor = db.execute(
                "INSERT INTO intents (run_id, action, about_to, undo, at) VALUES (?, ?, ?, ?, ?)",
                (run_id, action, about_to, json.dumps(undo), now()),
            )
            return int(cursor.lastrowid or 0)

    def intent_done(self, seq: int, outcome: str, detail: str = "") -> None:
        with self._db() as db:
            db.execute(
                "UPDATE intents SET done_at = ?, outcome = ?, detail = ? WHERE seq = ?",
                (now(), outcome, detail, seq),
            )

    def finish_run(
        self,
        run_id: str,
        decision: str,
        exit_code: int,
        failed_phase: str | None = None,
        failed_gate: str | None = None,
        failure: str | None = None,
    ) -> None:
        with self._db() as db:
            db.execute(
                "UPDATE runs SET ended_at = ?, status = 'finished', decision = ?, exit_code = ?, "
                "failed_phase = ?, failed_gate = ?, failure = ? WHERE id = ?",
                (now(), decision, exit_code, failed_phase, failed_gate, failure, run_id),
            )

    # Reading ----------------------------------------------------------------------------

    def run(self, run_id: str) -> RunRecord:
        with self._db() as db:
            db.row_factory = sqlite3.Row
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise KeyError(run_id)
            record = RunRecord(**{**dict(row), "meta": json.loads(row["meta"])})
            record.phases = [
                dict(r)
                for r in db.execute(
                    "SELECT phase, started_at, ended_at, outcome FROM phases WHERE run_id = ? ORDER BY started_at",
                    (run_id,),
                )
            ]
            record.gates = [
                dict(r)
                for r in db.execute(
                    "SELECT gate, phase, title, outcome, duration_s, message, at FROM gates WHERE run_id = ? ORDER BY at",
                    (run_id,),
                )
            ]
            record.evidence = [
                Evidence.from_dict(json.loads(r["record"]))
                for r in db.execute("SELECT record FROM evidence WHERE run_id = ? ORDER BY seq", (run_id,))
            ]
            record.intents = [
                Intent(
                    r["seq"],
                    r["action"],
                    r["about_to"],
                    json.loads(r["undo"]),
                    r["at"],
                    r["done_at"],
                    r["outcome"],
                    r["detail"],
                )
                for r in db.execute("SELECT * FROM intents WHERE run_id = ? ORDER BY seq", (run_id,))
            ]
        return record

    def runs(self, environment: str, limit: int = 20) -> list[str]:
        """Run ids for an environment, newest first."""
        with self._db() as db:
            return [
                r[0]
                for r in db.execute(
                    "SELECT id FROM runs WHERE environment = ? ORDER BY started_at DESC, id DESC LIMIT ?",
                    (environment, limit),
                )
            ]
