"""The migration's SQL, for review before it runs: kept with the run's evidence, linted by squawk.

Release Manager production 3 prints ``alembic upgrade --sql`` for a person to read before the
real upgrade. Here the SQL is what the sql runner will apply (the release's pending files, in
order) or what ``migrate.review.sql_command`` prints (alembic's offline mode), written to the
reports directory with its SHA-256, and linted with squawk (a kept linter for PostgreSQL
migrations, installed with releasegate) for the operations that lock users out: a NOT NULL set
on a full table, an index built without CONCURRENTLY, a constraint validated at once. Its rules
about style, and the timeouts releasegate sets itself, do not count (``migrate.review.exclude``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from releasegate.actions.migrate import (
    command_workdir,
    migrations_directory,
    pending_migrations,
    read_migrations,
    release_for_templates,
)
from releasegate.config import MigrateSettings
from releasegate.errors import ActionError
from releasegate.probes.postgres import Postgres
from releasegate.redaction import redact
from releasegate.release_names import fill

TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Finding:
    """One thing squawk says of the SQL: the rule, where, and why it matters."""

    rule: str
    file: str
    line: int
    message: str

    def describe(self) -> str:
        return f"{self.rule} at {self.file}:{self.line}: {self.message}"


@dataclass
class Review:
    """The SQL the release will run, where it came from, and what the lint found in it."""

    sql_path: str | None
    sha256: str | None
    source: str
    statements_from: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    linted: bool = False

    @classmethod
    def from_dict(cls, data: dict) -> Review:
        return cls(**{**data, "findings": [Finding(**f) for f in data.get("findings", [])]})


def review_migration(pg: Postgres, settings: MigrateSettings, release: str, reports: Path) -> Review:
    """Write the SQL ``release`` will run to ``reports/migration-<release>.sql`` and lint it."""
    name = release_for_templates(release)
    path = reports / f"migration-{name}.sql"
    reports.mkdir(parents=True, exist_ok=True)
    if settings.runner == "sql":
        pending = _pending_files(pg, settings, release)
        text = "".join(f"-- {f.name}\n{f.read_text(encoding='utf-8').rstrip()}\n\n" for f in pending)
        source, files = (
            f"the pending files of {migrations_directory(settings, release)}",
            [str(f) for f in pending],
        )
    else:
        if not settings.review.sql_command:
            return Review(
                None, None, "migrate.review.sql_command is not set: the command's SQL cannot be shown"
            )
        text, source = _printed_sql(pg, settings, release), "migrate.review.sql_command"
        files = []
    path.write_text(text, encoding="utf-8")
    review = Review(str(path), hashlib.sha256(text.encode()).hexdigest(), source, files)
    if settings.review.lint != "off" and text.strip():  # the release's own files, where it has them
        review.findings = lint(*([Path(f) for f in files] or [path]), exclude=settings.review.exclude)
        review.linted = True
    return review


def lint(*paths: Path, exclude: list[str]) -> list[Finding]:
    """squawk's findings on ``paths``, without the ``exclude`` rules."""
    argv = [_squawk(), "--reporter", "json"]
    if exclude:
        argv += ["--exclude", ",".join(exclude)]
    names = ", ".join(p.name for p in paths)
    try:
        proc = subprocess.run(
            [*argv, *map(str, paths)], capture_output=True, text=True, timeout=TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise ActionError(f"squawk did not finish linting {names} within {TIMEOUT_S:.0f} s") from None
    try:
        found = json.loads(proc.stdout or "[]")
    except json.JSONDecodeError:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise ActionError(f"squawk could not lint {names}: {detail[-1] if detail else 'no output'}") from None
    return [
        Finding(f["rule_name"], Path(f["file"]).name, int(f.get("line", 0)) + 1, f["message"])
        for f in found
        if f.get("rule_name") not in exclude
    ]


def _pending_files(pg: Postgres, settings: MigrateSettings, release: str) -> list[Path]:
    """The sql runner's files that are not applied yet, in the order it will apply them."""
    pending = set(pending_migrations(pg, settings, release))
    return [m.path for m in read_migrations(migrations_directory(settings, release)) if m.label in pending]


def _printed_sql(pg: Postgres, settings: MigrateSettings, release: str) -> str:
    """What ``sql_command`` prints, run as an argv (no shell) in migrate.workdir with the DSN."""
    assert settings.review.sql_command is not None
    now = pg.schema_version(query=settings.version_query) or "base"
    name = release_for_templates(release)
    argv = [fill(part, name).replace("{from}", now) for part in settings.review.sql_command]
    env = pg.client_env()
    env[settings.dsn_env] = pg.url(pg.dbname)
    try:
        proc = subprocess.run(
            argv,
            env=env,
            cwd=command_workdir(settings, release),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError:
        raise ActionError(f"migrate.review.sql_command not found: {argv[0]}") from None
    except subprocess.TimeoutExpired:
        raise ActionError(f"migrate.review.sql_command did not finish within {TIMEOUT_S:.0f} s") from None
    if proc.returncode:
        last = [line for line in redact(proc.stderr).splitlines() if line.strip()]
        raise ActionError(
            f"`{' '.join(argv)}` exited with {proc.returncode}: {last[-1] if last else 'no output'}"
        )
    return proc.stdout


def _squawk() -> str:
    """squawk from releasegate's own environment (pip's squawk-cli), else from PATH."""
    beside = Path(sys.executable).parent / "squawk"
    found = str(beside) if beside.exists() else shutil.which("squawk")
    if found is None:
        raise ActionError("squawk is not installed: pip install releasegate installs it (squawk-cli)")
    return found
