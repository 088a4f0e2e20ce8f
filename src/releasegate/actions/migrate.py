"""Schema migrations: the built-in SQL runner and a configured command (alembic, npm, ...).

The built-in runner reads ``NNNN_name.sql`` files (and optional ``NNNN_name.down.sql``) from
the release's directory, applies the pending ones in version order, one transaction per file,
and records each in ``schema_migrations``. A command runner gets the target database in an
environment variable (``DATABASE_URL`` by default) and its password in ``PGPASSWORD``; both get
``lock_timeout`` and ``statement_timeout`` so a migration waits on a lock for seconds, not for
ever.

A command is an argv, never a shell string: each element gets ``{release}`` filled in on its own,
and only a release name of letters, digits and ``. _ - +`` is put into a template. It runs in
``migrate.workdir`` (a relative ``alembic.ini``). When it fails, the last 30 lines of its stderr
(redacted) are kept: a traceback's cause is rarely on its last line.

Either runner's backends carry an ``application_name`` of their own (the command gets it in
``PGAPPNAME``), so ``probes.locks`` can watch which locks the migration holds while it runs.

The version a release expects comes from what it ships: the sql runner's newest file; for a
command, ``migrate.expected_version`` set by hand, else what ``migrate.expected_version_command``
prints (``alembic heads`` on the release's script directory), else nothing (the gates then expect
what the rehearsal reached). A migration that reaches another version did not do what was shipped.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from releasegate.config import MigrateSettings, check_release
from releasegate.errors import ActionError, ConfigError
from releasegate.probes.locks import LockReport, LockWatch
from releasegate.probes.postgres import Postgres, version_key
from releasegate.probes.traffic import TrafficStats
from releasegate.redaction import redact
from releasegate.release_names import fill

STDERR_LINES = 30
"""A failed command's evidence keeps this many of its last stderr lines."""
EXPECTED_VERSION_TIMEOUT_S = 60.0
"""How long ``expected_version_command`` may take: it reads a script directory, nothing more."""
_CAUSE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Timeout\w*): |\b(?:ERROR|FATAL|[Ee]rror):")

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
    stderr_tail: list[str] = field(default_factory=list)
    """A failed command's last lines of stderr, redacted: where the cause usually is."""
    locks: LockReport | None = None
    """The locks users would wait on that it held while it ran (pg_locks, sampled)."""
    traffic: TrafficStats | None = None
    """The probe traffic to user routes while it ran (the production migration only)."""
    unwatched: str = ""
    """Why no probe traffic was sent while it ran, when none was."""
    expected_from: str = ""
    """Where ``expected_version`` came from (the setting, the command, the newest file)."""

    @property
    def reached_expected(self) -> bool:
        return self.expected_version is not None and self.version_after == self.expected_version

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MigrationResult:
        """Back from the ledger's JSON (``dataclasses.asdict``)."""
        locks, traffic = data.get("locks"), data.get("traffic")
        return cls(
            **{
                **data,
                "locks": LockReport.from_dict(locks) if locks else None,
                "traffic": TrafficStats(**traffic) if traffic else None,
            }
        )


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
    application_name: str | None = None,
) -> MigrationResult:
    """Apply the pending migrations of ``directory``, one transaction each, stopping at the first error."""
    started = time.monotonic()
    migrations = read_migrations(directory)
    if application_name:
        conninfo = make_conninfo(conninfo, application_name=application_name)
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
            expected_from=f"the newest migration file in {directory}" if migrations else "nothing shipped",
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


@dataclass(frozen=True)
class CommandOutcome:
    ok: bool
    output: str
    """The tail of stdout and stderr together (redacted), for the evidence of a success."""
    error: str = ""
    """One line: what failed and how, with the line of its output most likely to be the cause."""
    stderr_tail: list[str] = field(default_factory=list)


def run_migration_command(
    command: list[str],
    env: Mapping[str, str],
    *,
    lock_timeout: str,
    statement_timeout: str,
    timeout_s: float,
    cwd: Path | None = None,
) -> CommandOutcome:
    """Run a migration command (``alembic upgrade head``) as an argv, never through a shell."""
    env = dict(env)
    env["PGOPTIONS"] = (
        f"{env.get('PGOPTIONS', '')} -c lock_timeout={lock_timeout} -c statement_timeout={statement_timeout}".strip()
    )
    shown = " ".join(command)
    if cwd is not None and not cwd.is_dir():
        return CommandOutcome(False, "", f"migrate.workdir {cwd} is not a directory: `{shown}` did not run")
    try:
        proc = subprocess.run(
            command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except FileNotFoundError:
        return CommandOutcome(False, "", f"migration command not found: {command[0]}")
    except subprocess.TimeoutExpired as exc:
        return CommandOutcome(
            False,
            "",
            f"migration command did not finish within {timeout_s:.0f} s: {shown}",
            _tail(_text(exc.stderr) or _text(exc.stdout)),
        )
    output = "\n".join(redact((proc.stdout + proc.stderr).strip()).splitlines()[-20:])
    if proc.returncode == 0:
        return CommandOutcome(True, output)
    tail = _tail(proc.stderr) or _tail(proc.stdout)
    return CommandOutcome(
        False, output, f"`{shown}` exited with {proc.returncode}: {cause_line(tail)}".strip(), tail
    )


def cause_line(lines: list[str]) -> str:
    """The line of a failed command's output most likely to say why: the last exception or error
    line (``sqlalchemy.exc.OperationalError: ... lock timeout``), else the last line. A traceback
    often ends with a pointer ("Background on this error at: ...") after its cause."""
    for line in reversed(lines):
        if _CAUSE.search(line):
            return line.strip()
    return lines[-1].strip() if lines else ""


def _text(data: str | bytes | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else data or ""


def _tail(text: str) -> list[str]:
    """The last STDERR_LINES non-blank lines, redacted."""
    lines = [line.rstrip() for line in redact(text).splitlines() if line.strip()]
    return lines[-STDERR_LINES:]


def release_for_templates(release: str) -> str:
    """``release`` when it may be put into a path or an argv template; one line naming it otherwise
    (the command line refuses such a name first: this guards callers that did not come through it)."""
    try:
        return check_release(release)
    except ConfigError as exc:
        raise ActionError(str(exc)) from None


def command_argv(settings: MigrateSettings, release: str) -> list[str]:
    """The command with ``{release}`` filled into each element on its own: an argv, no shell."""
    assert settings.command is not None
    name = release_for_templates(release)
    return [fill(part, name) for part in settings.command]


@dataclass(frozen=True)
class ExpectedVersion:
    """The schema version a release expects of the command runner, and where that was read."""

    version: str | None
    source: str


def expected_version_of(
    settings: MigrateSettings, release: str, env: Mapping[str, str] | None = None
) -> ExpectedVersion:
    """What ``release`` expects: ``expected_version`` by hand, else what ``expected_version_command``
    prints (the first word of its stdout's last non-empty line), else unknown (None). A command
    that fails or prints nothing raises: a version nobody could read is never a pass."""
    name = release_for_templates(release)
    if settings.expected_version:
        return ExpectedVersion(fill(settings.expected_version, name), "migrate.expected_version")
    if not settings.expected_version_command:
        return ExpectedVersion(None, "")
    argv = [fill(part, name) for part in settings.expected_version_command]
    cwd = command_workdir(settings, release)
    shown = " ".join(argv) + (f" (in {cwd})" if cwd else "")
    source = f"migrate.expected_version_command `{shown}`"
    try:
        proc = subprocess.run(
            argv,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=EXPECTED_VERSION_TIMEOUT_S,
            check=False,
        )
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise ActionError(f"{source} could not start: {exc}") from None
    except subprocess.TimeoutExpired:
        raise ActionError(f"{source} did not finish within {EXPECTED_VERSION_TIMEOUT_S:g} s") from None
    if proc.returncode != 0:
        tail = _tail(proc.stderr) or _tail(proc.stdout)
        raise ActionError(f"{source} exited with {proc.returncode}: {cause_line(tail)}".strip())
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    if not lines:
        raise ActionError(f"{source} printed no version")
    return ExpectedVersion(redact(lines[-1].split()[0]), source)


def command_workdir(settings: MigrateSettings, release: str) -> Path | None:
    """Where the command runs: ``migrate.workdir`` (placeholders such as {root} expanded at load)."""
    if not settings.workdir:
        return None
    return Path(fill(settings.workdir, release_for_templates(release)))


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
    """The sql runner's directory of ``release``; a relative one is under ``migrate.workdir``."""
    assert settings.directory is not None
    directory = Path(fill(settings.directory, release_for_templates(release)))
    workdir = command_workdir(settings, release)
    return workdir / directory if workdir is not None and not directory.is_absolute() else directory


def migrate(
    pg: Postgres,
    settings: MigrateSettings,
    release: str,
    dbname: str | None = None,
    *,
    scratch: bool = False,
) -> MigrationResult:
    """Bring ``dbname`` (default: the application database) to what ``release`` expects, watching
    the locks it holds while it runs. On a ``scratch`` copy every backend of the database is the
    migration's (nobody else uses it); elsewhere its backends are known by application_name."""
    password = pg.settings.password.resolve() if pg.settings.password else None
    app = f"releasegate-migrate-{secrets.token_hex(4)}"
    database = dbname or pg.dbname
    watch = LockWatch(
        pg.conninfo(dbname),
        application_name=app,
        database=database,
        password=password,
        whole_database=scratch,
        source=pg.source("pg_locks x pg_stat_activity", dbname)
        + (" (every backend of the scratch copy)" if scratch else f" (application_name {app})"),
    )
    if settings.runner == "sql":
        directory = migrations_directory(settings, release)
        with watch:
            result = apply_sql_migrations(
                pg.conninfo(dbname),
                directory,
                lock_timeout=settings.lock_timeout,
                statement_timeout=settings.statement_timeout,
                password=password,
                application_name=app,
            )
        result.locks = watch.report
        return result
    argv, cwd = command_argv(settings, release), command_workdir(settings, release)
    started = time.monotonic()
    before = pg.schema_version(dbname, settings.version_query)
    env = pg.client_env()
    env[settings.dsn_env] = pg.url(dbname)
    env["PGAPPNAME"] = app
    try:  # before anything changes: a release whose expected version cannot be read is not migrated
        expected = expected_version_of(settings, release, env)
    except ActionError as exc:
        return MigrationResult(
            ok=False,
            version_before=before,
            version_after=before,
            expected_version=None,
            error=f"not migrated: {exc}",
            duration_s=time.monotonic() - started,
        )
    with watch:
        outcome = run_migration_command(
            argv,
            env,
            lock_timeout=settings.lock_timeout,
            statement_timeout=settings.statement_timeout,
            timeout_s=settings.timeout_s,
            cwd=cwd,
        )
    after = pg.schema_version(dbname, settings.version_query)
    return MigrationResult(
        ok=outcome.ok,
        version_before=before,
        version_after=after,
        expected_version=expected.version,
        expected_from=expected.source,
        applied=[after] if outcome.ok and after and after != before else [],
        error=outcome.error,
        duration_s=time.monotonic() - started,
        output=outcome.output,
        stderr_tail=outcome.stderr_tail,
        locks=watch.report,
    )


def pending_migrations(pg: Postgres, settings: MigrateSettings, release: str) -> list[str]:
    """Labels of what the sql runner would apply now (for the plan and the ledger intent)."""
    if settings.runner != "sql":
        return [" ".join(command_argv(settings, release))]
    try:
        with pg.connect() as conn:
            applied = {str(r[0]) for r in conn.execute("SELECT version FROM schema_migrations").fetchall()}
    except psycopg.errors.UndefinedTable:
        applied = set()
    return [
        m.label for m in read_migrations(migrations_directory(settings, release)) if m.version not in applied
    ]
