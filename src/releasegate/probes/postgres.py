"""Read-only questions to PostgreSQL: is it a writable primary, is anything blocked, how big.

Every connection failure becomes one ProbeError line naming the server and the database, with
what to check; a query never returns "nothing" silently.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from releasegate.config import DatabaseSettings, Environment
from releasegate.errors import ProbeError
from releasegate.redaction import redact

SCHEMA_VERSION_SQL = "SELECT version FROM schema_migrations"
BLOCKING_LOCKS_SQL = "SELECT count(*) FROM pg_locks WHERE NOT granted"
OLDEST_TRANSACTION_SQL = (
    "SELECT coalesce(max(extract(epoch FROM now() - xact_start)), 0) FROM pg_stat_activity "
    "WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
)
PRIMARY_SQL = "SELECT pg_is_in_recovery(), pg_current_wal_lsn()::text"


def version_key(version: str) -> tuple[int, str]:
    """Order migration versions numerically (0002 < 0010 < 20260127000050)."""
    digits = "".join(ch for ch in version if ch.isdigit())
    return (int(digits) if digits else -1, version)


class Postgres:
    """A PostgreSQL server as one environment describes it, with its application database.

    ``version_query`` is how this application's schema version is read (``schema_migrations``,
    alembic's ``alembic_version``, flyway's history...): every check of "the schema is what it
    was" asks it, never an assumed table."""

    def __init__(self, settings: DatabaseSettings, version_query: str = SCHEMA_VERSION_SQL) -> None:
        self.settings = settings
        self.version_query = version_query
        parts = urlsplit(settings.dsn)
        self.host = parts.hostname or "localhost"
        self.port = parts.port or 5432
        self.dbname = parts.path.lstrip("/")

    @classmethod
    def of(cls, env: Environment) -> Postgres:
        """The environment's application database, read with its own ``migrate.version_query``."""
        return cls(env.database, env.migrate.version_query if env.migrate else SCHEMA_VERSION_SQL)

    def describe(self, dbname: str | None = None) -> str:
        return f"PostgreSQL database '{dbname or self.dbname}' at {self.host}:{self.port}"

    def conninfo(self, dbname: str | None = None) -> str:
        """A libpq connection string without the password (it travels in PGPASSWORD)."""
        params = conninfo_to_dict(self.settings.dsn)
        params.pop("password", None)
        if dbname:
            params["dbname"] = dbname
        params.setdefault("connect_timeout", str(max(1, round(self.settings.connect_timeout_s))))
        params.setdefault("application_name", "releasegate")
        return make_conninfo(**params)

    def url(self, dbname: str | None = None) -> str:
        """``postgresql://user@host:port/db`` for tools that want a URL (password in PGPASSWORD)."""
        user = conninfo_to_dict(self.settings.dsn).get("user")
        return f"postgresql://{user + '@' if user else ''}{self.host}:{self.port}/{dbname or self.dbname}"

    def source(self, query: str = "", dbname: str | None = None) -> str:
        """Where a measurement came from, fit for evidence (no password)."""
        where = f"postgresql://{self.host}:{self.port}/{dbname or self.dbname}"
        return redact(f"{where} {query}".strip())

    def client_env(self) -> dict[str, str]:
        """Environment for pg_dump, pg_restore and migration commands: password never in argv."""
        env = dict(os.environ)
        if self.settings.password:
            env["PGPASSWORD"] = self.settings.password.resolve()
        return env

    @contextmanager
    def connect(self, dbname: str | None = None, *, autocommit: bool = True) -> Iterator[psycopg.Connection]:
        password = self.settings.password.resolve() if self.settings.password else None
        try:
            conn = psycopg.connect(self.conninfo(dbname), autocommit=autocommit, password=password)
        except psycopg.OperationalError as exc:
            raise ProbeError(self.describe(dbname), _first_line(exc), _hint(exc)) from None
        try:
            yield conn
        finally:
            conn.close()

    def scalar(self, query: str, dbname: str | None = None) -> Any:
        rows = self.rows(query, dbname)
        return rows[0][0] if rows else None

    def rows(self, query: str, dbname: str | None = None) -> list[tuple[Any, ...]]:
        with self.connect(dbname) as conn:
            try:
                return conn.execute(query).fetchall()
            except psycopg.Error as exc:
                raise ProbeError(self.describe(dbname), f"query failed: {_first_line(exc)}") from None

    # The runbooks' questions -------------------------------------------------------------

    def primary_state(self) -> tuple[bool, str]:
        """(in recovery?, current WAL LSN): a primary that accepts writes is (False, an LSN)."""
        in_recovery, lsn = self.rows(PRIMARY_SQL)[0]
        return bool(in_recovery), str(lsn)

    def blocking_locks(self) -> int:
        return int(self.scalar(BLOCKING_LOCKS_SQL))

    def oldest_transaction_age_s(self) -> float:
        return float(self.scalar(OLDEST_TRANSACTION_SQL))

    def database_size(self, dbname: str) -> int:
        return int(self.scalar(f"SELECT pg_database_size({_literal(dbname)})"))

    def row_counts(self, tables: list[str], dbname: str | None = None) -> dict[str, int]:
        with self.connect(dbname) as conn:
            counts = {}
            for table in tables:
                query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*table.split(".")))
                try:
                    counts[table] = int(conn.execute(query).fetchone()[0])
                except psycopg.Error as exc:
                    raise ProbeError(
                        self.describe(dbname), f"cannot count {table}: {_first_line(exc)}"
                    ) from None
            return counts

    def query_ms(self, query: str = "SELECT 1") -> float:
        """How long one query takes on an open connection, in ms (the runbooks' "DB query time")."""
        with self.connect() as conn:
            started = time.perf_counter()
            try:
                conn.execute(query).fetchall()
            except psycopg.Error as exc:
                raise ProbeError(self.describe(), f"query failed: {_first_line(exc)}") from None
            return (time.perf_counter() - started) * 1000

    def existing_tables(self, tables: list[str], dbname: str | None = None) -> list[str]:
        """Those of ``tables`` (``name`` or ``schema.name``) that exist in the database."""
        with self.connect(dbname) as conn:
            return [
                t for t in tables if conn.execute("SELECT to_regclass(%s)", [t]).fetchone()[0] is not None
            ]

    def schema_version(self, dbname: str | None = None, query: str | None = None) -> str | None:
        """The latest applied migration version, None when no migration table exists yet."""
        query = query or self.version_query
        with self.connect(dbname) as conn:
            try:
                versions = [str(row[0]) for row in conn.execute(query).fetchall() if row[0] is not None]
            except psycopg.errors.UndefinedTable:
                return None
            except psycopg.Error as exc:
                raise ProbeError(
                    self.describe(dbname), f"cannot read schema version: {_first_line(exc)}"
                ) from None
        return max(versions, key=version_key) if versions else None

    def database_exists(self, dbname: str) -> bool:
        return bool(self.scalar(f"SELECT count(*) FROM pg_database WHERE datname = {_literal(dbname)}"))


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    if "failed:" in line and line.startswith("connection"):
        line = line.rsplit("failed:", 1)[1].strip()
    return redact(line)


def _hint(exc: BaseException) -> str:
    text = str(exc).lower()
    if "refused" in text or "no such file" in text:
        return "is the server running? check database.dsn in the environment file"
    if "timeout" in text or "timed out" in text:
        return "no answer within database.connect_timeout_s: check the host and the network"
    if "password" in text or "authentication" in text:
        return "check the user in database.dsn and the variable behind database.password"
    if "does not exist" in text:
        return "check the database name in database.dsn"
    return "check database.dsn in the environment file"
