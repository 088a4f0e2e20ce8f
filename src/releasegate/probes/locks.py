"""Which locks a migration holds that users would wait on, and for how long, sampled from pg_locks.

A migration's ``lock_timeout`` bounds how long *it* waits; nothing bounds how long everyone else
waits behind a lock it holds. This watches the migration's backends (found by their
``application_name``, or on a scratch copy every backend of that database) while it runs: every
sample reads the relation locks they hold in a mode that conflicts with what user queries take
(SELECT's ACCESS SHARE, INSERT/UPDATE/DELETE's ROW EXCLUSIVE), and how many lock requests of other
sessions wait on them. ``LockIntervals`` turns the samples into the longest time each (relation,
mode) was held: pure logic, tested on its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from releasegate.redaction import redact

SAMPLE_INTERVAL_S = 0.1
BLOCKING_MODES = ("ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock")
"""Relation lock modes that conflict with ROW EXCLUSIVE (writes) or ACCESS SHARE (reads): while a
migration holds one, user requests touching that relation wait."""

MODE_NAMES = {
    "ShareLock": "SHARE",
    "ShareRowExclusiveLock": "SHARE ROW EXCLUSIVE",
    "ExclusiveLock": "EXCLUSIVE",
    "AccessExclusiveLock": "ACCESS EXCLUSIVE",
}

_BACKENDS = "(a.application_name = %(app)s OR (%(whole)s AND a.datname = current_database()))"
HELD_SQL = f"""
SELECT c.oid::regclass::text, l.mode
FROM pg_locks l
JOIN pg_stat_activity a ON a.pid = l.pid
JOIN pg_class c ON c.oid = l.relation AND c.relpersistence <> 't'
WHERE l.locktype = 'relation' AND l.granted AND l.mode = ANY(%(modes)s)
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND a.pid <> pg_backend_pid() AND {_BACKENDS}
"""
"""Relations created by the migration's own open transaction are not in this session's pg_class
yet: nobody else can wait on those, so they are left out."""

WAITING_SQL = f"""
WITH migration AS (
    SELECT a.pid FROM pg_stat_activity a WHERE a.pid <> pg_backend_pid() AND {_BACKENDS}
)
SELECT count(*) FROM pg_locks w
WHERE NOT w.granted AND w.pid NOT IN (SELECT pid FROM migration)
  AND pg_blocking_pids(w.pid) && ARRAY(SELECT pid FROM migration)
"""


@dataclass(frozen=True)
class HeldLock:
    """One lock and the longest stretch it was seen held without a gap."""

    relation: str
    mode: str
    """pg_locks' name: ``AccessExclusiveLock``."""
    seconds: float
    """From the first to the last sample that saw it: at least this long (sampling can only
    miss the edges)."""
    samples: int

    @property
    def mode_name(self) -> str:
        """As SQL spells it: ``ACCESS EXCLUSIVE``."""
        return MODE_NAMES.get(self.mode, self.mode)

    def describe(self) -> str:
        return f"{self.mode_name} on {self.relation} for {self.seconds:.2f} s ({self.samples} samples)"


class LockIntervals:
    """Samples of (relation, mode) sets in, the longest uninterrupted hold of each out."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, str], tuple[float, float, int]] = {}
        self._longest: dict[tuple[str, str], HeldLock] = {}

    def add(self, at: float, held: Iterable[tuple[str, str]]) -> None:
        """One sample taken at ``at`` (seconds, monotonic): the locks held then."""
        now = set(held)
        for key in list(self._open):
            if key not in now:
                self._close(key)
        for key in now:
            first, _last, count = self._open.get(key, (at, at, 0))
            self._open[key] = (first, at, count + 1)

    def held(self) -> list[HeldLock]:
        """Every (relation, mode) seen, by its longest hold, longest first."""
        for key in list(self._open):
            self._close(key)
        return sorted(self._longest.values(), key=lambda h: (-h.seconds, h.relation, h.mode))

    def _close(self, key: tuple[str, str]) -> None:
        first, last, count = self._open.pop(key)
        candidate = HeldLock(key[0], key[1], round(last - first, 3), count)
        known = self._longest.get(key)
        if known is None or candidate.seconds > known.seconds:
            self._longest[key] = candidate


@dataclass
class LockReport:
    """What the watch saw while a migration ran."""

    database: str
    application_name: str
    samples: int = 0
    duration_s: float = 0.0
    interval_s: float = SAMPLE_INTERVAL_S
    held: list[HeldLock] = field(default_factory=list)
    max_waiting: int = 0
    """The most lock requests of other sessions waiting on the migration at once."""
    error: str = ""
    """Why sampling stopped early (then the measurement does not cover the whole migration)."""
    source: str = ""

    @property
    def longest(self) -> HeldLock | None:
        return self.held[0] if self.held else None

    def problem(self, max_lock_s: float) -> str:
        """One line when the migration held a lock users wait on longer than ``max_lock_s``, or
        when the watch cannot say (no sample, sampling stopped): no data is never a pass."""
        if self.error:
            return self.error
        if not self.samples:
            return "the lock watch took no sample"
        longest = self.longest
        if longest is not None and longest.seconds > max_lock_s:
            return f"the migration held {longest.describe()}, over migrate.max_lock_s {max_lock_s:g} s"
        return ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LockReport:
        return cls(**{**data, "held": [HeldLock(**h) for h in data.get("held", [])]})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LockWatch:
    """``with LockWatch(conninfo, application_name=...) as watch: run the migration``; then
    ``watch.report``. Samples from a thread every ``interval_s``, once more at the start and at
    the end; a failure to connect or to sample is kept in ``report.error``, never raised: the
    watch must not be what breaks a migration."""

    def __init__(
        self,
        conninfo: str,
        *,
        application_name: str,
        database: str,
        password: str | None = None,
        whole_database: bool = False,
        interval_s: float = SAMPLE_INTERVAL_S,
        source: str = "",
    ) -> None:
        self._conninfo = make_conninfo(conninfo, application_name="releasegate-lockwatch")
        self._password = password
        self._params = {"app": application_name, "whole": whole_database, "modes": list(BLOCKING_MODES)}
        self._intervals = LockIntervals()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="releasegate-lockwatch", daemon=True)
        self._conn: psycopg.Connection | None = None
        self._started = 0.0
        who = "every backend of the database" if whole_database else f"application_name {application_name}"
        self.report = LockReport(
            database=database,
            application_name=application_name,
            interval_s=interval_s,
            source=source or f"pg_locks joined with pg_stat_activity: {who}, every {interval_s:g} s",
        )

    def __enter__(self) -> LockWatch:
        self._started = time.monotonic()
        try:
            self._conn = psycopg.connect(self._conninfo, autocommit=True, password=self._password)
        except psycopg.Error as exc:
            self._failed(exc)
            return self
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if self._conn is not None:
            self._sample()
            self._conn.close()
        self.report.duration_s = round(time.monotonic() - self._started, 3)
        self.report.held = self._intervals.held()

    def _run(self) -> None:
        while not self._stop.wait(self.report.interval_s):
            if not self._sample():
                return

    def _sample(self) -> bool:
        if self._conn is None or self.report.error:
            return False
        at = time.monotonic()
        try:
            held = [(str(r[0]), str(r[1])) for r in self._conn.execute(HELD_SQL, self._params).fetchall()]
            row = self._conn.execute(WAITING_SQL, self._params).fetchone()
        except psycopg.Error as exc:
            self._failed(exc)
            return False
        self._intervals.add(at, held)
        self.report.samples += 1
        self.report.max_waiting = max(self.report.max_waiting, int(row[0]) if row else 0)
        return True

    def _failed(self, exc: BaseException) -> None:
        lines = str(exc).strip().splitlines()
        self.report.error = redact(f"lock watch stopped: {lines[0] if lines else type(exc).__name__}")
