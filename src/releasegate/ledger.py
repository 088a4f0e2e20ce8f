"""The durable record of every run: who deployed what where, each phase, every measurement,
and, written before each mutation, what is about to change and how to undo it.

Every write is its own committed transaction, so a run killed at any instant leaves a ledger
that opens and says where it stopped. SQLite (WAL, synchronous=FULL) by default; PostgreSQL
when the environment names a ``[ledger] dsn``, so that a team's CI runners share one history.
The ledger creates and upgrades its own schema. Reports are rendered from here, which is why an
auditor can follow them line by line; rollbacks are planned from here, which is why a run that
died can still be undone.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import socket
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from releasegate.errors import ProbeError
from releasegate.evidence import Evidence
from releasegate.redaction import redact

if TYPE_CHECKING:
    from releasegate.config import LedgerSettings

RUNNING = "running"
FINISHED = "finished"

# Each step upgrades the schema by one version; {serial} is the dialect's auto-numbered key.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE runs (
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
    CREATE INDEX runs_by_environment ON runs (environment, started_at);
    CREATE TABLE phases (
        run_id TEXT NOT NULL REFERENCES runs (id),
        phase TEXT NOT NULL,
        started_at TEXT NOT NULL,
        ended_at TEXT,
        outcome TEXT,
        PRIMARY KEY (run_id, phase)
    );
    CREATE TABLE gates (
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
    CREATE TABLE evidence (
        seq {serial},
        run_id TEXT NOT NULL REFERENCES runs (id),
        record TEXT NOT NULL
    );
    CREATE TABLE intents (
        seq {serial},
        run_id TEXT NOT NULL REFERENCES runs (id),
        action TEXT NOT NULL,
        about_to TEXT NOT NULL,
        undo TEXT NOT NULL,
        at TEXT NOT NULL,
        done_at TEXT,
        outcome TEXT,
        detail TEXT NOT NULL DEFAULT ''
    )
    """,
    """
    ALTER TABLE runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'deploy';
    ALTER TABLE runs ADD COLUMN target_run TEXT;
    ALTER TABLE runs ADD COLUMN interrupted TEXT;
    ALTER TABLE runs ADD COLUMN undo_started_at TEXT;
    ALTER TABLE runs ADD COLUMN undo_ended_at TEXT;
    ALTER TABLE runs ADD COLUMN undo_ok INTEGER;
    ALTER TABLE runs ADD COLUMN undo_detail TEXT;
    ALTER TABLE runs ADD COLUMN undo_by TEXT;
    ALTER TABLE runs ADD COLUMN rolled_back_by TEXT;
    CREATE TABLE results (
        run_id TEXT NOT NULL REFERENCES runs (id),
        action TEXT NOT NULL,
        result TEXT NOT NULL,
        at TEXT NOT NULL,
        PRIMARY KEY (run_id, action)
    )
    """,
    """
    CREATE TABLE events (
        seq {serial},
        run_id TEXT NOT NULL REFERENCES runs (id),
        at TEXT NOT NULL,
        source TEXT NOT NULL,
        line TEXT NOT NULL
    )
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)


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
    kind: str = "deploy"
    target_run: str | None = None
    interrupted: str | None = None
    undo_started_at: str | None = None
    undo_ended_at: str | None = None
    undo_ok: bool | None = None
    undo_detail: str | None = None
    undo_by: str | None = None
    rolled_back_by: str | None = None
    phases: list[dict[str, Any]] = field(default_factory=list)
    gates: list[dict[str, Any]] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)
    intents: list[Intent] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status == FINISHED

    def intent(self, action: str) -> Intent | None:
        """The first intent of ``action`` (``migrate``, ``deploy``), or None when it never began."""
        return next((i for i in self.intents if i.action == action), None)


class Ledger:
    """One ledger: a SQLite file, or a PostgreSQL database shared by a team's runners."""

    def __init__(
        self, path: Path | None = None, *, dsn: str | None = None, password: str | None = None
    ) -> None:
        if (path is None) == (dsn is None):
            raise ValueError("a ledger is a SQLite path or a PostgreSQL DSN")
        self.path = path
        self.dsn = dsn
        self._backend: _Backend = _Postgres(dsn, password) if dsn else _Sqlite(path)  # type: ignore[arg-type]
        self._upgrade()

    @property
    def where(self) -> str:
        return str(self.path) if self.path else redact(str(self.dsn))

    def _upgrade(self) -> None:
        with self._backend.transaction() as db:
            db.rows("CREATE TABLE IF NOT EXISTS ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            found = db.rows("SELECT value FROM ledger_meta WHERE key = 'schema_version'")
            version = int(found[0]["value"]) if found else 0
            for step in _MIGRATIONS[version:]:
                for statement in step.replace("{serial}", self._backend.serial).split(";"):
                    if statement.strip():
                        db.rows(statement)
            if version < SCHEMA_VERSION:
                db.rows(
                    "INSERT INTO ledger_meta (key, value) VALUES ('schema_version', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(SCHEMA_VERSION),),
                )

    def _write(self, query: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._backend.transaction() as db:
            return db.rows(query, params)

    # Writing ----------------------------------------------------------------------------

    def start_run(
        self,
        environment: str,
        release: str,
        meta: dict[str, Any] | None = None,
        *,
        kind: str = "deploy",
        target_run: str | None = None,
    ) -> str:
        run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)
        self._write(
            "INSERT INTO runs (id, environment, release, operator, host, pid, started_at, meta, kind, target_run) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                environment,
                release,
                operator(),
                socket.gethostname(),
                os.getpid(),
                now(),
                json.dumps(meta or {}),
                kind,
                target_run,
            ),
        )
        return run_id

    def set_previous_release(self, run_id: str, previous: str | None) -> None:
        self._write("UPDATE runs SET previous_release = ? WHERE id = ?", (previous, run_id))

    def phase_started(self, run_id: str, phase: str) -> None:
        self._write(
            "INSERT INTO phases (run_id, phase, started_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (run_id, phase, now()),
        )

    def phase_finished(self, run_id: str, phase: str, outcome: str) -> None:
        self._write(
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
        self._write(
            "INSERT INTO gates (run_id, gate, phase, title, outcome, duration_s, message, at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, gate) DO UPDATE SET "
            "outcome = excluded.outcome, duration_s = excluded.duration_s, message = excluded.message, at = excluded.at",
            (run_id, gate, phase, title, outcome, duration_s, message, now()),
        )

    def evidence(self, run_id: str, record: Evidence) -> None:
        self._write(
            "INSERT INTO evidence (run_id, record) VALUES (?, ?)", (run_id, json.dumps(record.to_dict()))
        )

    def intent(self, run_id: str, action: str, about_to: str, undo: dict[str, Any]) -> int:
        """Written before a mutation: what is about to change and how to undo it."""
        rows = self._write(
            "INSERT INTO intents (run_id, action, about_to, undo, at) VALUES (?, ?, ?, ?, ?) RETURNING seq",
            (run_id, action, about_to, json.dumps(undo), now()),
        )
        return int(rows[0]["seq"])

    def intent_done(self, seq: int, outcome: str, detail: str = "") -> None:
        self._write(
            "UPDATE intents SET done_at = ?, outcome = ?, detail = ? WHERE seq = ?",
            (now(), outcome, detail, seq),
        )

    def event(self, run_id: str, source: str, line: str) -> None:
        """A progress line ("2.0.0 on :8104 ready after 1.3 s"), kept for the record and for
        the xdist controller to show what its workers are doing."""
        self._write(
            "INSERT INTO events (run_id, at, source, line) VALUES (?, ?, ?, ?)",
            (run_id, now(), source, redact(line)),
        )

    def events(self, run_id: str, after: int = 0) -> list[tuple[int, str, str]]:
        """(seq, source, line) of the progress lines after ``after``."""
        rows = self._backend.read(
            "SELECT seq, source, line FROM events WHERE run_id = ? AND seq > ? ORDER BY seq", (run_id, after)
        )
        return [(r["seq"], r["source"], r["line"]) for r in rows]

    def timed_events(self, run_id: str) -> list[tuple[str, str]]:
        """(time, line) of every progress line: when each step happened, for charts and audits."""
        rows = self._backend.read("SELECT at, line FROM events WHERE run_id = ? ORDER BY seq", (run_id,))
        return [(r["at"], r["line"]) for r in rows]

    def save_result(self, run_id: str, action: str, result: dict[str, Any]) -> None:
        """What an action produced (a dump's path and checksum...), for every worker and for undo."""
        self._write(
            "INSERT INTO results (run_id, action, result, at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (run_id, action) DO UPDATE SET result = excluded.result, at = excluded.at",
            (run_id, action, json.dumps(result), now()),
        )

    def result(self, run_id: str, action: str) -> dict[str, Any] | None:
        rows = self._backend.read(
            "SELECT result FROM results WHERE run_id = ? AND action = ?", (run_id, action)
        )
        return json.loads(rows[0]["result"]) if rows else None

    def record_failure(self, run_id: str, phase: str, gate: str, message: str) -> bool:
        """The first failure of a run decides it; returns whether this one was the first."""
        rows = self._write(
            "UPDATE runs SET failed_phase = ?, failed_gate = ?, failure = ? "
            "WHERE id = ? AND failed_phase IS NULL RETURNING id",
            (phase, gate, message, run_id),
        )
        return bool(rows)

    def record_interruption(self, run_id: str, signal_name: str) -> None:
        self._write(
            "UPDATE runs SET interrupted = ? WHERE id = ? AND interrupted IS NULL", (signal_name, run_id)
        )

    def claim_undo(self, run_id: str, by: str) -> bool:
        """Exactly one process undoes a run: the one whose claim lands first."""
        rows = self._write(
            "UPDATE runs SET undo_started_at = ?, undo_by = ? WHERE id = ? AND undo_started_at IS NULL RETURNING id",
            (now(), by, run_id),
        )
        return bool(rows)

    def finish_undo(self, run_id: str, ok: bool, detail: str = "") -> None:
        self._write(
            "UPDATE runs SET undo_ended_at = ?, undo_ok = ?, undo_detail = ? WHERE id = ?",
            (now(), int(ok), detail, run_id),
        )

    def mark_rolled_back(self, run_id: str, by_run: str) -> None:
        self._write("UPDATE runs SET rolled_back_by = ? WHERE id = ?", (by_run, run_id))

    def finish_run(
        self,
        run_id: str,
        decision: str,
        exit_code: int,
        failed_phase: str | None = None,
        failed_gate: str | None = None,
        failure: str | None = None,
    ) -> None:
        self._write(
            "UPDATE runs SET ended_at = ?, status = 'finished', decision = ?, exit_code = ?, "
            "failed_phase = coalesce(failed_phase, ?), failed_gate = coalesce(failed_gate, ?), "
            "failure = coalesce(failure, ?) WHERE id = ?",
            (now(), decision, exit_code, failed_phase, failed_gate, failure, run_id),
        )

    # Reading ----------------------------------------------------------------------------

    def header(self, run_id: str) -> RunRecord:
        """The run itself, without its phases, gates and evidence: cheap enough to read per gate."""
        rows = self._backend.read("SELECT * FROM runs WHERE id = ?", (run_id,))
        if not rows:
            raise KeyError(run_id)
        return _header(rows[0])

    def headers(self, environment: str, kind: str, limit: int = 200) -> list[RunRecord]:
        """The newest runs of ``kind`` in ``environment``, headers only, in one query (what
        another environment's readiness check reads, possibly over the network)."""
        rows = self._backend.read(
            "SELECT * FROM runs WHERE environment = ? AND kind = ? ORDER BY started_at DESC, id DESC LIMIT ?",
            (environment, kind, limit),
        )
        return [_header(row) for row in rows]

    def intent_actions(self, run_id: str) -> list[str]:
        return [
            r["action"]
            for r in self._backend.read("SELECT action FROM intents WHERE run_id = ? ORDER BY seq", (run_id,))
        ]

    def run(self, run_id: str) -> RunRecord:
        read = self._backend.read
        record = self.header(run_id)
        record.phases = read(
            "SELECT phase, started_at, ended_at, outcome FROM phases WHERE run_id = ? ORDER BY started_at",
            (run_id,),
        )
        record.gates = read(
            "SELECT gate, phase, title, outcome, duration_s, message, at FROM gates WHERE run_id = ? ORDER BY at",
            (run_id,),
        )
        record.evidence = [
            Evidence.from_dict(json.loads(r["record"]))
            for r in read("SELECT record FROM evidence WHERE run_id = ? ORDER BY seq", (run_id,))
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
            for r in read("SELECT * FROM intents WHERE run_id = ? ORDER BY seq", (run_id,))
        ]
        record.results = {
            r["action"]: json.loads(r["result"])
            for r in read("SELECT action, result FROM results WHERE run_id = ?", (run_id,))
        }
        return record

    def runs(self, environment: str, limit: int = 20, kind: str | None = None) -> list[str]:
        """Run ids for an environment, newest first (of one kind when given)."""
        if kind is None:
            rows = self._backend.read(
                "SELECT id FROM runs WHERE environment = ? ORDER BY started_at DESC, id DESC LIMIT ?",
                (environment, limit),
            )
        else:
            rows = self._backend.read(
                "SELECT id FROM runs WHERE environment = ? AND kind = ? ORDER BY started_at DESC, id DESC LIMIT ?",
                (environment, kind, limit),
            )
        return [r["id"] for r in rows]

    def gate_outcomes(self, run_id: str) -> dict[str, str]:
        """gate -> outcome for the gates that have finished (what the phase barrier waits on)."""
        rows = self._backend.read("SELECT gate, outcome FROM gates WHERE run_id = ?", (run_id,))
        return {r["gate"]: r["outcome"] for r in rows}


def _header(row: dict[str, Any]) -> RunRecord:
    row = dict(row)
    row["meta"] = json.loads(row["meta"])
    row["undo_ok"] = None if row["undo_ok"] is None else bool(row["undo_ok"])
    return RunRecord(**row)


def open_ledger(settings: LedgerSettings, default_path: Path | None) -> Ledger:
    """The ledger a ``[ledger]`` section names: its PostgreSQL ``dsn`` (the password read from
    its variable now), its SQLite ``path``, else ``default_path``."""
    if settings.dsn:
        password = settings.password.resolve() if settings.password else None
        return Ledger(dsn=settings.dsn, password=password)
    path = Path(settings.path) if settings.path else default_path
    if path is None:
        raise ValueError("a ledger section with neither path nor dsn, and no default")
    return Ledger(path)


# Backends ----------------------------------------------------------------------------------


class _Backend(Protocol):
    serial: str

    def transaction(self) -> Any: ...

    def read(self, query: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...


class _SqliteDb:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def rows(self, query: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cursor = self.conn.execute(query, tuple(params))
        if cursor.description is None:
            return []
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


_BUSY_S = 30.0
"""How long a write waits for another process's write to end before the ledger says it is locked."""


class _Sqlite:
    serial = "INTEGER PRIMARY KEY AUTOINCREMENT"

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=_BUSY_S, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    @contextmanager
    def transaction(self) -> Iterator[_SqliteDb]:
        conn = self._connect()
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:  # busy for the whole timeout: a writer that hangs
                raise ProbeError(
                    f"ledger {self.path}",
                    f"{exc} for {_BUSY_S:g} s",
                    "a run that hangs (stopped, or stuck in a write) holds it: end that process, then run again",
                ) from None
            yield _SqliteDb(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    def read(self, query: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        conn = self._connect()
        try:
            return _SqliteDb(conn).rows(query, params)
        finally:
            conn.close()


class _PostgresDb:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def rows(self, query: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cursor = self.conn.execute(query.replace("?", "%s"), tuple(params))
        if cursor.description is None:
            return []
        return list(cursor.fetchall())


class _Postgres:
    serial = "BIGSERIAL PRIMARY KEY"

    def __init__(self, dsn: str, password: str | None) -> None:
        self.dsn = dsn
        self.password = password

    def _connect(self) -> Any:
        import psycopg
        from psycopg.rows import dict_row

        try:
            return psycopg.connect(self.dsn, password=self.password, row_factory=dict_row, connect_timeout=10)
        except psycopg.OperationalError as exc:
            line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ProbeError(f"ledger at {redact(self.dsn)}", redact(line), "check [ledger] dsn") from None

    @contextmanager
    def transaction(self) -> Iterator[_PostgresDb]:
        with self._connect() as conn, conn.transaction():
            # One writer at a time across runners, as SQLite's BEGIN IMMEDIATE gives.
            conn.execute("SELECT pg_advisory_xact_lock(7041961)")
            yield _PostgresDb(conn)

    def read(self, query: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._connect() as conn:
            return _PostgresDb(conn).rows(query, params)
