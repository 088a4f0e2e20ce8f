"""PostgreSQL for the sandbox: its own cluster in ``<sandbox>/postgres``, on 127.0.0.1 only.

PostgreSQL refuses to run as root, so when we are root every server command runs as the
``postgres`` user (``runuser``), which must be able to traverse every parent directory.
"""

from __future__ import annotations

import os
import pwd
import re
import stat
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from releasegate.probes.postgres import version_key
from sandbox.common import ComponentStatus, SandboxError, pid_from_file, run, tail_file

SERVER_OPTIONS = "-c shared_buffers=32MB -c max_connections=50"
"""Small, so that several sandboxes (one per test) fit on one machine."""


class Postgres:
    name = "postgresql"

    def __init__(self, sandbox_dir: Path, dsn: str, bin_dir: str | None = None) -> None:
        parts = urlsplit(dsn)
        self.port = parts.port or 5432
        self.dbname = parts.path.lstrip("/")
        self.user = parts.username or "postgres"
        self.dir = sandbox_dir / "postgres"
        self.data = self.dir / "data"
        self.sockets = self.dir / "run"
        self.log = self.dir / "postgres.log"
        self._bin_dir = Path(bin_dir) if bin_dir else None

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            self._bin_dir = _find_bin_dir()
        return self._bin_dir

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def conninfo(self, dbname: str | None = None) -> str:
        return f"host=127.0.0.1 port={self.port} user={self.user} dbname={dbname or self.dbname} connect_timeout=3"

    def pid(self) -> int | None:
        return pid_from_file(self.data / "postmaster.pid", "postgres")

    def accepting(self) -> bool:
        try:
            with psycopg.connect(self.conninfo("postgres"), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def start(self) -> str:
        """initdb when there is no cluster yet, then start it and wait until it accepts connections."""
        self._prepare_dirs()
        created = ""
        if not (self.data / "PG_VERSION").exists():
            run(
                self._as_postgres(
                    [
                        str(self.bin_dir / "initdb"),
                        "-D",
                        str(self.data),
                        "-U",
                        self.user,
                        "--auth=trust",
                        "-E",
                        "UTF8",
                        "--locale=C.UTF-8",
                        "--no-sync",
                    ]
                ),
                "PostgreSQL initdb",
            )
            created = "new cluster, "
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sockets} {SERVER_OPTIONS}"
        try:
            run(
                self._as_postgres(
                    [
                        str(self.bin_dir / "pg_ctl"),
                        "-D",
                        str(self.data),
                        "-l",
                        str(self.log),
                        "-w",
                        "-t",
                        "30",
                        "-o",
                        options,
                        "start",
                    ]
                ),
                "PostgreSQL",
            )
        except SandboxError as exc:
            raise SandboxError(f"PostgreSQL did not start on {self.address}: {tail_file(self.log)}") from exc
        return f"{created}started on {self.address} (pid {self.pid()})"

    def stop(self) -> str:
        if self.pid() is None:
            return "not running"
        run(
            self._as_postgres(
                [str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]
            ),
            "PostgreSQL stop",
        )
        return "stopped"

    def ensure_database(self) -> bool:
        """Create the application database when missing; True when it was created."""
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [self.dbname]).fetchone()
            if exists:
                return False
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.dbname)))
            return True

    def status(self) -> ComponentStatus:
        pid = self.pid()
        if pid is None:
            return ComponentStatus(self.name, False, self.address, None, "not running")
        if not self.accepting():
            return ComponentStatus(
                self.name, False, self.address, pid, "running but not accepting connections"
            )
        return ComponentStatus(
            self.name, True, self.address, pid, f"database {self.dbname}, {self._schema()}"
        )

    def _schema(self) -> str:
        try:
            with psycopg.connect(self.conninfo(), connect_timeout=2) as conn:
                versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]
        except psycopg.Error:
            return "no schema yet"
        return f"schema {max(versions, key=version_key)}" if versions else "no migration applied"

    def _prepare_dirs(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(exist_ok=True)
        if os.geteuid() != 0:
            return
        owner = pwd.getpwnam("postgres")
        for path in (self.dir, self.sockets):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        # The postgres user must traverse every parent (a pytest tmp dir is 0700): add o+x only.
        for parent in self.dir.resolve().parents:
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                parent.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)

    def _as_postgres(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _find_bin_dir() -> Path:
    """The newest installed PostgreSQL's bin directory (Debian: /usr/lib/postgresql/N/bin)."""
    candidates = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()]
    if not candidates:
        raise SandboxError(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run `make setup`"
        )
    return max(candidates, key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0))
