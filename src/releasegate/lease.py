"""One deployment per environment, enforced by the target: a lease held in the application's
database, or, for a Kubernetes environment, a Lease in its namespace (releasegate.lease_kubernetes).

A ledger cannot keep two runs apart when each runner keeps its own (two CI runners, a laptop and
a pipeline): the target can. Before its first change a run takes the lease, a row of
``releasegate_lease`` in the environment's PostgreSQL database (created when missing), with
Kubernetes Lease semantics: a holder (run, release, operator, host and pid, phase), the time it
was taken, its last renewal and when it expires. A heartbeat renews it every third of its
duration while the run lives; the run releases it at its end, after any rollback. A holder that
stops renewing (kill -9, a lost runner) loses it ``duration_s`` after its last renewal; on the
machine where it ran, a holder whose process is gone has lost it at once.

Why a row and not an advisory lock: a session-level advisory lock dies with its connection, but
it cannot say who holds it, since when, or in which phase, and a connection left half-open by a
lost runner keeps it until TCP gives up. A row says all of that, and its expiry is by time, read
on the database's clock, so runners with skewed clocks agree. The take is one transaction
(``INSERT ... ON CONFLICT DO NOTHING``, then ``SELECT ... FOR UPDATE``), so exactly one of two
concurrent runs gets it. The table is releasegate's own: backups leave it out, so a restore never
rewinds who holds the environment.

The rules (who may take, renew, or is refused) are pure functions of the row and the database's
``now()``, apart from the I/O: ``verdict`` and ``holder_line``.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg import sql

from releasegate.config import Environment
from releasegate.errors import ActionError, ProbeError
from releasegate.ledger import operator
from releasegate.probes.postgres import Postgres

TABLE = "releasegate_lease"
Verdict = Literal["take", "renew", "held", "lost"]
Progress = Callable[[str], None]

_DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    name text PRIMARY KEY,
    token text,
    run_id text,
    kind text,
    release text,
    operator text,
    host text,
    pid integer,
    machine text,
    process_start bigint,
    phase text,
    since timestamptz,
    heartbeat timestamptz,
    expires_at timestamptz,
    duration_s double precision,
    released_at timestamptz,
    forced_by text
)
"""
_COLUMNS = (
    "token, run_id, kind, release, operator, host, pid, machine, process_start, phase, "
    "since, heartbeat, expires_at, duration_s, released_at, forced_by"
)


# The pure part --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Holder:
    """Who holds (or asks for) the lease. ``token`` is one process's claim: a second process of
    the same run (``--resume`` after a kill) is another claim. ``machine`` and
    ``process_start`` let a process on the same machine prove that the holder is gone."""

    token: str
    run_id: str
    kind: str
    release: str
    operator: str
    host: str
    pid: int
    machine: str = ""
    process_start: int | None = None
    phase: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LeaseState:
    """The lease row as read, with the database's ``now()`` at the moment of reading."""

    name: str
    now: datetime
    holder: Holder | None = None
    since: datetime | None = None
    heartbeat: datetime | None = None
    expires_at: datetime | None = None
    duration_s: float | None = None
    released_at: datetime | None = None
    forced_by: str | None = None

    @property
    def expired(self) -> bool:
        return self.expires_at is None or self.expires_at <= self.now

    @property
    def expires_in_s(self) -> float:
        return 0.0 if self.expires_at is None else max(0.0, (self.expires_at - self.now).total_seconds())

    def live(self, holder_gone: bool = False) -> bool:
        """Held by a holder that still renews it (and is not known to be dead)."""
        return self.holder is not None and self.released_at is None and not self.expired and not holder_gone


def verdict(
    state: LeaseState,
    token: str,
    *,
    holder_gone: bool = False,
    force: bool = False,
    held_before: bool = False,
) -> Verdict:
    """``renew`` when ``token`` holds it, ``take`` when it is free (never held, released, expired,
    its holder proven dead, or ``force``), else ``held``; ``lost`` for a claim that held it before
    and finds it another's, or released: someone had it meanwhile, so nothing is as this run left it."""
    mine = state.holder is not None and state.holder.token == token
    if mine and state.released_at is None:
        return "renew"  # even just expired: nobody took it meanwhile, so it is still ours
    if held_before:
        return "lost"
    if force or not state.live(holder_gone):
        return "take"
    return "held"


def _at(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "unknown"


def holder_text(state: LeaseState) -> str:
    """``run X (deploy 2.0.0, alice@ci-3, pid 4242 on ci-3, phase deploy, since ..., last heartbeat 3 s ago)``."""
    holder = state.holder
    if holder is None:
        return "nobody"
    beat = f"{(state.now - state.heartbeat).total_seconds():.0f} s ago" if state.heartbeat else "never"
    return (
        f"run {holder.run_id} ({holder.kind} {holder.release}, {holder.operator}, pid {holder.pid} on "
        f"{holder.host}, phase {holder.phase or 'starting'}, since {_at(state.since)}, last heartbeat {beat})"
    )


def holder_line(environment: str, state: LeaseState) -> str:
    """The one line a refused run prints: who holds the environment and what to do."""
    holder = state.holder
    assert holder is not None
    after = f"`pytest rollback/ --env={environment}`"
    if holder.kind == "deploy":
        after += f" or `pytest gates/ --env={environment} --release={holder.release} --resume`"
    return (
        f"{environment} is in use: {holder_text(state)} is in progress and holds its lease: wait for it to end "
        f"(or add --wait SECONDS); if its holder is gone, the lease expires at {_at(state.expires_at)} "
        f"(in {state.expires_in_s:.0f} s, {state.duration_s or 0:g} s after its last heartbeat), then run {after}"
    )


def free_text(state: LeaseState | None, holder_gone: bool = False) -> str:
    """How a lease that is not live came to be free, for the unfinished-run message."""
    if state is None or state.holder is None:
        return "nobody holds its lease"
    if state.released_at is not None:
        return f"its lease was released at {_at(state.released_at)}"
    if holder_gone and not state.expired:
        return f"its holder, pid {state.holder.pid} on {state.holder.host}, is gone"
    return f"its lease expired at {_at(state.expires_at)}"


# This process, and whether a holder's process is gone ----------------------------------------


def this_machine() -> str:
    """Where a pid means something: the boot and the pid namespace ("" where unknown)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return ""


def process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (None: no such process), so that a pid
    used again by another process is not mistaken for the holder."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def holder_gone(holder: Holder | None) -> bool:
    """Whether the holder's process is provably gone: only decidable on its own machine."""
    if holder is None or not holder.machine or holder.machine != this_machine():
        return False
    started = process_start(holder.pid)
    return started is None or (holder.process_start is not None and started != holder.process_start)


def holder_for(run_id: str, kind: str, release: str, token: str | None = None) -> Holder:
    pid = os.getpid()
    return Holder(
        token=token or os.urandom(8).hex(),
        run_id=run_id,
        kind=kind,
        release=release,
        operator=operator(),
        host=socket.gethostname(),
        pid=pid,
        machine=this_machine(),
        process_start=process_start(pid),
    )


# The I/O ---------------------------------------------------------------------------------------


def lease_name(env: Environment) -> str:
    return env.lease.name or env.name


class LeaseStore:
    """The lease table in the environment's application database."""

    def __init__(self, env: Environment) -> None:
        self.postgres = Postgres(env.database)
        self.name = lease_name(env)
        self._created = False

    def where(self) -> str:
        return f"{TABLE} in {self.postgres.describe()}"

    def read(self) -> LeaseState:
        """The lease as it is now, taking nothing (a missing table: nobody ever held it)."""
        with self.postgres.connect() as conn:
            try:
                now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
                exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [TABLE]).fetchone()[0]  # type: ignore[index]
                if not exists:
                    return LeaseState(self.name, now)
                row = conn.execute(
                    sql.SQL("SELECT {cols}, now() FROM {table} WHERE name = %s").format(
                        cols=sql.SQL(_COLUMNS), table=sql.Identifier(TABLE)
                    ),
                    [self.name],
                ).fetchone()
            except psycopg.Error as exc:
                raise ProbeError(self.where(), _first_line(exc)) from None
        return _state(self.name, row) if row else LeaseState(self.name, now)

    def acquire(
        self,
        me: Holder,
        duration_s: float,
        *,
        force: bool = False,
        forced_by: str | None = None,
        held_before: bool = False,
    ) -> tuple[Verdict, LeaseState]:
        """Take or renew the lease in one transaction; ``held`` and ``lost`` leave the row as it was."""
        self._create()
        with self.postgres.connect(autocommit=False) as conn:
            try:
                conn.execute("SET LOCAL lock_timeout = '10s'")
                conn.execute(
                    sql.SQL("INSERT INTO {} (name) VALUES (%s) ON CONFLICT DO NOTHING").format(
                        sql.Identifier(TABLE)
                    ),
                    [self.name],
                )
                row = conn.execute(
                    sql.SQL("SELECT {cols}, now() FROM {table} WHERE name = %s FOR UPDATE").format(
                        cols=sql.SQL(_COLUMNS), table=sql.Identifier(TABLE)
                    ),
                    [self.name],
                ).fetchone()
                state = _state(self.name, row)
                decided = verdict(
                    state,
                    me.token,
                    holder_gone=holder_gone(state.holder),
                    force=force,
                    held_before=held_before,
                )
                if decided == "take":
                    conn.execute(
                        sql.SQL(
                            "UPDATE {} SET token = %s, run_id = %s, kind = %s, release = %s, operator = %s, "
                            "host = %s, pid = %s, machine = %s, process_start = %s, phase = %s, since = now(), "
                            "heartbeat = now(), expires_at = now() + make_interval(secs => %s), duration_s = %s, "
                            "released_at = NULL, forced_by = %s WHERE name = %s"
                        ).format(sql.Identifier(TABLE)),
                        [
                            me.token,
                            me.run_id,
                            me.kind,
                            me.release,
                            me.operator,
                            me.host,
                            me.pid,
                            me.machine,
                            me.process_start,
                            me.phase,
                            duration_s,
                            duration_s,
                            forced_by if force and state.live() else None,
                            self.name,
                        ],
                    )
                elif decided == "renew":
                    conn.execute(
                        sql.SQL(
                            "UPDATE {} SET heartbeat = now(), expires_at = now() + make_interval(secs => %s), "
                            "duration_s = %s, phase = coalesce(%s, phase) WHERE name = %s"
                        ).format(sql.Identifier(TABLE)),
                        [duration_s, duration_s, me.phase, self.name],
                    )
                after = conn.execute(
                    sql.SQL("SELECT {cols}, now() FROM {table} WHERE name = %s").format(
                        cols=sql.SQL(_COLUMNS), table=sql.Identifier(TABLE)
                    ),
                    [self.name],
                ).fetchone()
                conn.commit()
            except psycopg.Error as exc:
                raise ProbeError(self.where(), _first_line(exc)) from None
        return decided, _state(self.name, after)

    def release(self, token: str) -> LeaseState | None:
        """Free the lease if ``token`` still holds it; the row keeps who held it last, and when."""
        with self.postgres.connect() as conn:
            try:
                row = conn.execute(
                    sql.SQL(
                        "UPDATE {table} SET released_at = now(), expires_at = now() WHERE name = %s "
                        "AND token = %s AND released_at IS NULL RETURNING {cols}, now()"
                    ).format(cols=sql.SQL(_COLUMNS), table=sql.Identifier(TABLE)),
                    [self.name, token],
                ).fetchone()
            except psycopg.Error as exc:
                raise ProbeError(self.where(), _first_line(exc)) from None
        return _state(self.name, row) if row else None

    def _create(self) -> None:
        if self._created:
            return
        with self.postgres.connect() as conn:
            try:
                conn.execute(_DDL)
            except psycopg.errors.UniqueViolation:
                pass  # another run created it at the same instant
            except psycopg.errors.InsufficientPrivilege as exc:
                raise ActionError(
                    f"cannot create the lease table {TABLE} in {self.postgres.describe()}: {_first_line(exc)}; "
                    "grant CREATE on its schema to this user, or create the table once as its owner "
                    "(the statement is in releasegate/lease.py)"
                ) from None
            except psycopg.Error as exc:
                raise ProbeError(self.where(), _first_line(exc)) from None
        self._created = True


def _state(name: str, row: Any) -> LeaseState:
    (token, run_id, kind, release, who, host, pid, machine, started, phase) = row[:10]
    since, heartbeat, expires_at, duration_s, released_at, forced_by, now = row[10:]
    holder = (
        Holder(
            token,
            run_id,
            kind or "",
            release or "",
            who or "",
            host or "",
            pid or 0,
            machine or "",
            started,
            phase,
        )
        if token
        else None
    )
    return LeaseState(name, now, holder, since, heartbeat, expires_at, duration_s, released_at, forced_by)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def lease_store(env: Environment) -> Any:
    """Where the environment's lease is held: a Kubernetes environment's in a Lease in its
    namespace (releasegate.lease_kubernetes), any other's in its database ([lease] store)."""
    store = env.lease.store
    if store == "kubernetes" or (store == "auto" and env.platform.kind == "kubernetes"):
        from releasegate.lease_kubernetes import KubernetesLeaseStore

        return KubernetesLeaseStore.from_environment(env)
    return LeaseStore(env)


def read_lease(env: Environment) -> LeaseState:
    """Who holds the environment now, taking nothing (``--dry-run``, ``python -m sandbox down``)."""
    return lease_store(env).read()


def live_lease(env: Environment) -> LeaseState | None:
    """The lease when a live holder has it, else None."""
    state = read_lease(env)
    return state if state.live(holder_gone(state.holder)) else None


def wait_for_lease(env: Environment, timeout_s: float, progress: Progress, poll_s: float = 1.0) -> LeaseState:
    """``--wait SECONDS``: until nobody live holds the environment, with a progress line now and
    then; the state that is still held when the time is up."""
    deadline = threading.Event()
    started = datetime.now()
    said: datetime | None = None
    store = lease_store(
        env
    )  # one connection setup, not one a second (a Kubernetes client loads its kubeconfig)
    while True:
        state = store.read()
        if not state.live(holder_gone(state.holder)):
            return state
        waited = (datetime.now() - started).total_seconds()
        if waited >= timeout_s:
            return state
        if said is None or (datetime.now() - said) >= timedelta(seconds=10):
            said = datetime.now()
            progress(
                f"waiting for {env.name} ({waited:.0f} of {timeout_s:g} s): held by {holder_text(state)}, "
                f"expires in {state.expires_in_s:.0f} s unless renewed"
            )
        deadline.wait(min(poll_s, max(0.05, timeout_s - waited)))


class Lease:
    """This run's claim on the environment: taken, renewed by a heartbeat thread, released."""

    def __init__(self, env: Environment, holder: Holder, progress: Progress) -> None:
        self.env = env
        self.store = lease_store(env)
        self.holder = holder
        self.progress = progress
        self.duration_s = env.lease.duration_s
        self.taken: LeaseState | None = None
        self.released: LeaseState | None = None
        self.forced_from: LeaseState | None = None
        self.lost: str | None = None
        self.renewals = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def held(self) -> bool:
        return self.taken is not None and self.released is None and self.lost is None

    def take(self, *, force: bool = False) -> tuple[Verdict, LeaseState]:
        """Try once; ``held`` means another live run has it (the state says who)."""
        before = self.store.read() if force else None
        with self._lock:
            decided, state = self.store.acquire(
                self.holder, self.duration_s, force=force, forced_by=operator()
            )
        if decided != "held" and self.taken is None:
            self.taken = state
            if (
                before is not None
                and before.holder is not None
                and before.live(holder_gone(before.holder))
                and before.holder.token != self.holder.token
            ):
                self.forced_from = before
        return decided, state

    def ensure(self, phase: str | None = None) -> None:
        """Before each change: the lease is this run's (renewed now), or the change must not happen."""
        if self.lost:
            raise ActionError(self.lost)
        me = replace(self.holder, phase=phase) if phase else self.holder
        try:
            with self._lock:
                decided, state = self.store.acquire(me, self.duration_s, held_before=self.taken is not None)
        except ProbeError as exc:
            raise ActionError(
                f"the lease on {self.env.name} could not be renewed, so nothing changes: {exc}"
            ) from None
        if decided in ("held", "lost"):
            self._lose(state)
            raise ActionError(self.lost or "lease lost")
        if self.taken is None:
            self.taken = state
        self.renewals += 1

    def start_heartbeat(self, phase: Callable[[], str | None]) -> None:
        """Renew every third of the duration until released; a renewal that finds another holder
        marks the lease lost, and every change after that is refused."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._beat, args=(phase,), name="releasegate-lease", daemon=True
        )
        self._thread.start()

    def _beat(self, phase: Callable[[], str | None]) -> None:
        failing = False
        while not self._stop.wait(self.duration_s / 3):
            try:
                current = phase()
                me = replace(self.holder, phase=current) if current else self.holder
                with self._lock:
                    if self._stop.is_set():
                        return
                    decided, state = self.store.acquire(
                        me, self.duration_s, held_before=self.taken is not None
                    )
            except Exception as exc:  # the database may be away for a moment: say so, keep trying
                if not failing:
                    self.progress(f"lease on {self.env.name} not renewed: {exc}; trying again")
                failing = True
                continue
            if failing:
                self.progress(f"lease on {self.env.name} renewed again")
                failing = False
            if decided in ("held", "lost"):
                self._lose(state)
                self.progress(self.lost or "lease lost")
                return
            if self.taken is None:
                self.taken = state
            self.renewals += 1

    def _lose(self, state: LeaseState) -> None:
        forced = f" (forced by {state.forced_by})" if state.forced_by else ""
        self.lost = f"the lease on {self.env.name} was lost to {holder_text(state)}{forced}: this run changes nothing more"

    def release(self) -> LeaseState | None:
        """Stop renewing and free the lease (if it is still ours)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
        if self.taken is None or self.released is not None or self.lost:
            return self.released
        with self._lock:
            self.released = self.store.release(self.holder.token)
        return self.released

    def record(self) -> dict[str, Any]:
        """What the ledger and the report keep: holder, when it was taken, renewed, released."""
        taken, released = self.taken, self.released
        return {
            "name": self.store.name,
            "where": self.store.where(),
            "holder": self.holder.to_dict(),
            "duration_s": self.duration_s,
            "taken_at": _at(taken.since) if taken else None,
            "released_at": _at(released.released_at) if released else None,
            "last_heartbeat": _at(released.heartbeat) if released else None,
            "renewals": self.renewals,
            "lost": self.lost,
            "forced_from": holder_text(self.forced_from) if self.forced_from else None,
        }


def describe_record(saved: dict[str, Any]) -> str:
    """The report's line for a run's lease, from what ``Lease.record`` saved."""
    holder = saved.get("holder", {})
    text = (
        f"{saved.get('name')} held by pid {holder.get('pid')} on {holder.get('host')} ({holder.get('operator')}) "
        f"from {saved.get('taken_at') or 'never'} to {saved.get('released_at') or 'not released (expired)'}, "
        f"renewed {saved.get('renewals', 0)} times, {saved.get('duration_s'):g} s lease, in {saved.get('where')}"
    )
    if saved.get("forced_from"):
        text += f"; FORCED from {saved['forced_from']}"
    if saved.get("lost"):
        text += f"; {saved['lost']}"
    return text
