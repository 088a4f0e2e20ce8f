"""Backups with pg_dump, proven restorable before anything is allowed to change.

A dump is taken inside an exported snapshot, and the row counts of the configured tables are
read in that same snapshot, so "the restored copy has the same rows" compares like with like
even while the application keeps writing. Verification lists the archive (``pg_restore
--list``) and restores it into a scratch database; the restore of the real database uses
``--single-transaction``, so it either happens completely or not at all.
"""

from __future__ import annotations

import glob
import hashlib
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from psycopg import sql

from releasegate.errors import ActionError
from releasegate.probes.postgres import Postgres
from releasegate.redaction import redact

LEASE_TABLE_PATTERN = "*.releasegate_lease"
"""releasegate's lease on the environment (releasegate/lease.py): left out of every backup, so that
no restore rewinds who holds the environment."""


@dataclass
class Dump:
    database: str
    path: Path
    size_bytes: int
    sha256: str
    duration_s: float
    row_counts: dict[str, int] = field(default_factory=dict)


@dataclass
class Restore:
    database: str
    duration_s: float
    row_counts: dict[str, int]
    schema_version: str | None


def pg_tool(name: str, bin_dir: str | None = None) -> str:
    """Path of pg_dump/pg_restore: the configured dir, else the newest installed, else PATH."""
    if bin_dir:
        return str(Path(bin_dir) / name)
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_major_version)
    if candidates:
        return candidates[-1]
    found = shutil.which(name)
    if not found:
        raise ActionError(f"{name} not found: install the PostgreSQL client or set backup.pg_bin_dir")
    return found


def dump_database(
    pg: Postgres,
    dbname: str,
    directory: Path,
    label: str,
    *,
    tables: list[str],
    bin_dir: str | None = None,
    timeout_s: float = 900,
) -> Dump:
    """``pg_dump -Fc`` of one database into ``directory``, with row counts from the same snapshot."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{dbname}-{label}.dump"
    started = time.monotonic()
    with pg.connect(dbname, autocommit=False) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        counts = {t: int(conn.execute(_count(t)).fetchone()[0]) for t in tables}
        _run(
            [
                pg_tool("pg_dump", bin_dir),
                "--format=custom",
                f"--snapshot={snapshot}",
                f"--exclude-table={LEASE_TABLE_PATTERN}",  # who holds the environment is never restored
                f"--file={path}",
                f"--dbname={pg.conninfo(dbname)}",
            ],
            pg,
            timeout_s,
            f"pg_dump of {dbname}",
        )
        conn.rollback()
    return Dump(dbname, path, path.stat().st_size, sha256(path), time.monotonic() - started, counts)


def list_archive(pg: Postgres, dump: Dump, bin_dir: str | None = None) -> int:
    """``pg_restore --list``: the number of entries in the archive's table of contents."""
    output = _run([pg_tool("pg_restore", bin_dir), "--list", str(dump.path)], pg, 120, "pg_restore --list")
    return sum(1 for line in output.splitlines() if line.strip() and not line.startswith(";"))


def restore_into_scratch(
    pg: Postgres,
    dump: Dump,
    scratch: str,
    *,
    tables: list[str],
    bin_dir: str | None = None,
    timeout_s: float = 900,
) -> Restore:
    """Restore a dump into a fresh scratch database (dropped first if left over)."""
    started = time.monotonic()
    drop_database(pg, scratch)
    with pg.connect("postgres") as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
    _run(
        [
            pg_tool("pg_restore", bin_dir),
            "--no-owner",
            "--no-acl",
            "--exit-on-error",
            f"--dbname={pg.conninfo(scratch)}",
            str(dump.path),
        ],
        pg,
        timeout_s,
        f"restore into scratch database {scratch}",
    )
    return Restore(
        scratch, time.monotonic() - started, pg.row_counts(tables, scratch), pg.schema_version(scratch)
    )


def restore_in_place(
    pg: Postgres,
    dump: Dump,
    *,
    tables: list[str],
    bin_dir: str | None = None,
    timeout_s: float = 900,
) -> Restore:
    """Put the database back as it was at the dump: all or nothing (``--single-transaction``)."""
    if sha256(dump.path) != dump.sha256:
        raise ActionError(f"backup {dump.path} does not match its recorded checksum: not restoring from it")
    started = time.monotonic()
    _run(
        [
            pg_tool("pg_restore", bin_dir),
            "--clean",
            "--if-exists",
            "--single-transaction",
            "--exit-on-error",
            f"--dbname={pg.conninfo(dump.database)}",
            str(dump.path),
        ],
        pg,
        timeout_s,
        f"restore of {dump.database}",
    )
    return Restore(
        dump.database,
        time.monotonic() - started,
        pg.row_counts(tables, dump.database),
        pg.schema_version(dump.database),
    )


def drop_database(pg: Postgres, dbname: str) -> None:
    with pg.connect("postgres") as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


def drop_scratch_copies(pg: Postgres, names: list[str], say: Callable[[str], None]) -> list[str]:
    """Drop the scratch databases that still exist (a restored copy holds the production data it
    was restored from: it must not outlive its use); returns those dropped."""
    dropped = []
    for name in names:
        if pg.database_exists(name):
            drop_database(pg, name)
            say(f"dropped scratch database {name}")
            dropped.append(name)
    return dropped


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _run(argv: list[str], pg: Postgres, timeout_s: float, what: str) -> str:
    try:
        proc = subprocess.run(
            argv, env=pg.client_env(), capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except FileNotFoundError:
        raise ActionError(f"{what}: {argv[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise ActionError(f"{what} did not finish within {timeout_s:.0f} s") from None
    if proc.returncode != 0:
        detail = redact(
            proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        )
        raise ActionError(f"{what} failed: {detail}")
    return proc.stdout


def _count(table: str) -> sql.Composed:
    return sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*table.split(".")))


def _major_version(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0
