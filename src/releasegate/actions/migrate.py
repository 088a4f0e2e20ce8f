"""Schema migrations: the built-in SQL runner and a configured command (alembic, npm, ...).

The built-in runner reads ``NNNN_name.sql`` files (and optional ``NNNN_name.down.sql``) from
the release's directory, applies the pending ones in version order, one transaction per file,
and records each in ``schema_migrations``. A command runner gets the target database in an
environment variable (``DATABASE_URL`` by default) and its password in ``PGPASSWORD``; both get
``lock_timeout`` and ``statement_timeout`` so a migration waits on a lock for seconds, not for
ever.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from releasegate.config import MigrateSettings
from releasegate.errors import ActionError
from releasegate.probes.postgres import Postgres, version_key
from releasegate.redaction import redact

_FILE = re.compile(r"^(?P<version>\d+)_(?P<name>[A-Za-z0-9_.-]+?)(?P<down>\.down)?\.sql$")

SCHEMA_TABLE_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path
    down_path: Path | None

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.version}_{self.name}"


@dataclass
class MigrationResult:
    """What a migration run did, enough for evidence and for undoing it."""

    ok: bool
    version_before: str | None
    version_after: str | None
    expected_version: str | None
    applied: list[str] = field(default_factory=list)
    failed: str | None = None
    error: str = ""
    duration_s: float = 0.0
    output: str = ""

    @property
    def reached_expected(self) -> bool:
        return self.expected_version is not None and self.version_after == self.expected_version


def read_migrations(directory: Path) -> list[Migration]:
    """The migrations a release ships, in version order; a missing directory is an error."""
    if not directory.is_dir():
        raise ActionError(f"migrations directory not found: {directory} (is the release name right?)")
    ups: dict[str, tuple[str, Path]] = {}
    downs: dict[str, Path] = {}
    for path in directory.iterdir():
        match = _FILE.match(path.name)
        if not match:
            continue
        if match["down"]:
            downs[match["version"]] = path
        elif match["version"] in ups:
            raise ActionError(f"two migrations with version {match['version']} in {directory}")
        else:
            ups[match["version"]] = (match["name"], path)
    return [
        Migration(version, name, path, downs.get(version))
        for version, (name, path) in sorted(ups.items(), key=lambda item: version_key(item[0]))
    ]


def expected_version(migrations: list[Migration], current: str | None) -> str | None:
    """The schema version a release expects: its newest migration, or what is there already."""
    return migrations[-1].version if migrations else current


def apply_sql_migrations(
    conninfo: str,
    directory: Path,
    *,
    lock_timeout: str = "5s",
    statement_timeout: str = "5min",
    password: str | None = None,
) -> MigrationResult:
    """Apply the pending migrations of ``directory``, one transaction each, stopping at the first error."""
    started = time.monotonic()
    migrations = read_migrations(directory)
    with _connect(conninfo, password) as conn:
        conn.execute(SCHEMA_TABLE_DDL)
        conn.execute("SELECT set_config('lock_timeout', %s, false)", [lock_timeout])
        conn.execute("SELECT set_config('statement_timeout', %s, false)", [statement_timeout])
        applied = dict(conn.execute("SELECT version, checksum FROM schema_migrations").fetchall())
        before = _latest(applied)
        result = MigrationResult(
            ok=True,
            version_before=before,
            version_after=before,
            expected_version=expected_version(migrations, before),
        )
        changed = [m.label for m in migrations if m.version in applied and applied[m.version] != m.checksum]
        if changed:
            result.ok = False
            result.error = (
                f"{', '.join(changed)} changed after it was applied (checksum differs): refusing to go on"
            )
            return result
        for migration in (m for m in migrations if m.version not in applied):
            try:
                with conn.transaction():
                    conn.execute(migration.path.read_text(encoding="utf-8"))
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                        [migration.version, migration.name, migration.checksum],
                    )
            except psycopg.Error as exc:
                result.ok = False
                result.failed = migration.label
                result.error = f"{migration.label}.sql failed: {_first_line(exc)}"
                break
            result.applied.append(migration.version)
        result.version_after = _latest(
            dict(conn.execute("SELECT version, checksum FROM schema_migrations").fetchall())
        )
    result.duration_s = time.monotonic() - started
    return result


def revert_sql_migrations(
    conninfo: str,
    directory: Path,
    versions: list[str],
    *,
    lock_timeout: str = "5s",
    statement_timeout: str = "5min",
    password: str | None = None,
) -> MigrationResult:
    """Run the down migrations of ``versions`` (newest first), each in its own transaction."""
    started = time.monotonic()
    by_version = {m.version: m for m in read_migrations(directory)}
    missing = [v for v in versions if v not in by_version or by_version[v].down_path is None]
    if missing:
        raise ActionError(f"no down migration for version(s) {', '.join(missing)} in {directory}")
    with _connect(conninfo, password) as conn:
        conn.execute("SELECT set_config('lock_timeout', %s, false)", [lock_timeout])
        conn.execute("SELECT set_config('statement_timeout', %s, false)", [statement_timeout])
        before = _latest(dict(conn.execute("SELECT version, checksum FROM schema_migrations").fetchall()))
        result = MigrationResult(ok=True, version_before=before, version_after=before, expected_version=None)
        for version in sorted(versions, key=version_key, reverse=True):
            migration = by_version[version]
            assert migration.down_path is not None
            try:
                with conn.transaction():
                    conn.execute(migration.down_path.read_text(encoding="utf-8"))
                    conn.execute("DELETE FROM schema_migrations WHERE version = %s", [version])
            except psycopg.Error as exc:
                result.ok = False
                result.failed = migration.label
                result.error = f"{migration.label}.down.sql failed: {_first_line(exc)}"
                break
            result.applied.append(version)
        result.version_after = _latest(
            dict(conn.execute("SELECT version, checksum FROM schema_migrations").fetchall())
        )
    result.duration_s = time.monotonic() - started
    return result


def run_migration_command(
    command: list[str],
    env: Mapping[str, str],
    *,
    lock_timeout: str,
    statement_timeout: str,
    timeout_s: float,
    cwd: Path | None = None,
) -> tuple[bool, str]:
    """Run a migration command (``alembic upgrade head``); returns (succeeded, its output's tail)."""
    env = dict(env)
    env["PGOPTIONS"] = (
        f"{env.get('PGOPTIONS', '')} -c lock_timeout={lock_timeout} -c statement_timeout={statement_timeout}".strip()
    )
    try:
        proc = subprocess.run(
            command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except FileNotFoundError:
        return False, f"migration command not found: {command[0]}"
    except subprocess.TimeoutExpired:
        return False, f"migration command did not finish within {timeout_s:.0f} s: {' '.join(command)}"
    output = redact((proc.stdout + proc.stderr).strip())
    tail = "\n".join(output.splitlines()[-20:])
    if proc.returncode != 0:
        last = tail.splitlines()[-1] if tail else ""
        return False, f"`{' '.join(command)}` exited with {proc.returncode}: {last}".strip()
    return True, tail


def _connect(conninfo: str, password: str | None) -> psycopg.Connection:
    try:
        return psycopg.connect(conninfo, autocommit=True, password=password)
    except psycopg.OperationalError as exc:
        raise ActionError(f"cannot connect to run migrations: {_first_line(exc)}") from None


def _latest(applied: dict[str, str]) -> str | None:
    return max(applied, key=version_key) if applied else None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return redact(lines[0] if lines else type(exc).__name__)


def migrations_directory(settings: MigrateSettings, release: str) -> Path:
    assert settings.directory is not None
    return Path(settings.directory.replace("{release}", release))


def migrate(
    pg: Postgres, settings: MigrateSettings, release: str, dbname: str | None = None
) -> MigrationResult:
    """Bring ``dbname`` (default: the application database) to what ``release`` expects."""
    password = pg.settings.password.resolve() if pg.settings.password else None
    if settings.runner == "sql":
        return apply_sql_migrations(
            pg.conninfo(dbname),
            migrations_directory(settings, release),
            lock_timeout=settings.lock_timeout,
            statement_timeout=settings.statement_timeout,
            password=password,
        )
    assert settings.command is not None
    started = time.monotonic()
    before = pg.schema_version(dbname, settings.version_query)
    env = pg.client_env()
    env[settings.dsn_env] = pg.url(dbname)
    ok, output = run_migration_command(
        [part.replace("{release}", release) for part in settings.command],
        env,
        lock_timeout=settings.lock_timeout,
        statement_timeout=settings.statement_timeout,
        timeout_s=settings.timeout_s,
    )
    after = pg.schema_version(dbname, settings.version_query)
    expected = settings.expected_version.replace("{release}", release) if settings.expected_version else None
    return MigrationResult(
        ok=ok,
        version_before=before,
        version_after=after,
        expected_version=expected,
        applied=[after] if ok and after and after != before else [],
        error="" if ok else output,
        duration_s=time.monotonic() - started,
        output=output,
    )


def pending_migrations(pg: Postgres, settings: MigrateSettings, release: str) -> list[str]:
    """Labels of what the sql runner would apply now (for the plan and the ledger intent)."""
    if settings.runner != "sql":
        return [" ".join(settings.command or [])]
    try:
        with pg.connect() as conn:
            applied = {str(r[0]) for r in conn.execute("SELECT version FROM schema_migrations").fetchall()}
    except psycopg.errors.UndefinedTable:
        applied = set()
    return [
        m.label for m in read_migrations(migrations_directory(settings, release)) if m.version not in applied
    ]
