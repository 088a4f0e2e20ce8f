"""Migrations against a real PostgreSQL: the built-in SQL runner and a configured command."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from releasegate.actions.migrate import apply_sql_migrations, migrate, revert_sql_migrations
from releasegate.config import MigrateSettings, load_environment
from releasegate.probes.postgres import Postgres

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def pg(module_sandbox_env: Path, request: pytest.FixtureRequest):
    """A fresh, empty database on the sandbox's PostgreSQL, dropped afterwards."""
    settings = load_environment(str(module_sandbox_env), ROOT).database
    server = Postgres(settings)
    name = f"migrate_{request.node.name[:40].lower()}"
    with server.connect("postgres") as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield Postgres(settings.model_copy(update={"dsn": server.url(name)}))
    with server.connect("postgres") as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def test_pending_migrations_apply_in_version_order_and_are_recorded(pg, tmp_path):
    v1 = write(
        tmp_path / "v1",
        {"0001_init.sql": "CREATE TABLE t (id int primary key); INSERT INTO t VALUES (1), (2);"},
    )
    v2 = write(
        tmp_path / "v2",
        {
            "0010_later.sql": "ALTER TABLE t ADD COLUMN b int; UPDATE t SET b = id * 10;",
            "0002_first.sql": "ALTER TABLE t ADD COLUMN a int; UPDATE t SET a = id;",
            "0002_first.down.sql": "ALTER TABLE t DROP COLUMN a;",
            "README.md": "not a migration",
        },
    )
    first = apply_sql_migrations(pg.conninfo(), v1)
    second = apply_sql_migrations(pg.conninfo(), v2)

    assert (first.ok, first.applied, first.version_after) == (True, ["0001"], "0001")
    assert (second.ok, second.applied, second.version_after, second.expected_version) == (
        True,
        ["0002", "0010"],
        "0010",
        "0010",
    )
    assert pg.scalar("SELECT sum(a + b) FROM t") == 1 + 10 + 2 + 20
    again = apply_sql_migrations(pg.conninfo(), v2)
    assert (again.ok, again.applied) == (True, []), "applying twice is a no-op"


def test_a_failing_file_stops_the_run_and_leaves_earlier_files_committed(pg, tmp_path):
    migrations = write(
        tmp_path / "m",
        {
            "0001_ok.sql": "CREATE TABLE t (v text); INSERT INTO t VALUES ('x'), ('x');",
            "0002_bad.sql": "ALTER TABLE t ADD COLUMN w int; CREATE UNIQUE INDEX ON t (v);",
        },
    )
    result = apply_sql_migrations(pg.conninfo(), migrations)

    assert (result.ok, result.applied, result.failed, result.version_after) == (
        False,
        ["0001"],
        "0002_bad",
        "0001",
    )
    assert "0002_bad.sql failed: could not create unique index" in result.error
    assert pg.scalar("SELECT count(*) FROM information_schema.columns WHERE column_name = 'w'") == 0


def test_a_migration_changed_after_it_was_applied_is_refused(pg, tmp_path):
    migrations = write(tmp_path / "m", {"0001_init.sql": "CREATE TABLE t (id int);"})
    assert apply_sql_migrations(pg.conninfo(), migrations).ok
    (migrations / "0001_init.sql").write_text("CREATE TABLE t (id bigint);")
    result = apply_sql_migrations(pg.conninfo(), migrations)
    assert not result.ok and "0001_init changed after it was applied" in result.error


def test_down_migrations_undo_newest_first(pg, tmp_path):
    migrations = write(
        tmp_path / "m",
        {
            "0001_init.sql": "CREATE TABLE t (id int);",
            "0002_a.sql": "ALTER TABLE t ADD COLUMN a int;",
            "0002_a.down.sql": "ALTER TABLE t DROP COLUMN a;",
            "0003_b.sql": "ALTER TABLE t ADD COLUMN b int;",
            "0003_b.down.sql": "ALTER TABLE t DROP COLUMN b;",
        },
    )
    apply_sql_migrations(pg.conninfo(), migrations)
    result = revert_sql_migrations(pg.conninfo(), migrations, ["0002", "0003"])
    assert (result.ok, result.applied, result.version_after) == (True, ["0003", "0002"], "0001")
    assert pg.scalar("SELECT count(*) FROM information_schema.columns WHERE table_name = 't'") == 1


def test_lock_timeout_keeps_a_migration_from_waiting_for_ever(pg, tmp_path):
    """A session holding a lock makes the migration fail after lock_timeout, not hang."""
    apply_sql_migrations(pg.conninfo(), write(tmp_path / "a", {"0001_init.sql": "CREATE TABLE t (id int);"}))
    holding = threading.Event()
    release = threading.Event()

    def hold_lock() -> None:
        with psycopg.connect(pg.conninfo()) as conn, conn.transaction():
            conn.execute("LOCK TABLE t IN ACCESS SHARE MODE")
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        holding.wait(10)
        result = apply_sql_migrations(
            pg.conninfo(),
            write(tmp_path / "b", {"0002_alter.sql": "ALTER TABLE t ADD COLUMN x int;"}),
            lock_timeout="300ms",
        )
    finally:
        release.set()
        holder.join()
    assert not result.ok and "lock timeout" in result.error
    assert result.duration_s < 5


COMMAND = """
import os, sys, psycopg
with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
    conn.execute("CREATE TABLE IF NOT EXISTS app_version (version text)")
    timeouts = conn.execute("SELECT current_setting('lock_timeout'), current_setting('statement_timeout')").fetchone()
    print("timeouts", *timeouts)
    if sys.argv[1] == "fail":
        print("error: relation \\"missing\\" does not exist", file=sys.stderr)
        sys.exit(3)
    conn.execute("DELETE FROM app_version")
    conn.execute("INSERT INTO app_version VALUES (%s)", [sys.argv[1]])
"""


@pytest.mark.parametrize(("argument", "ok"), [("{release}", True), ("fail", False)])
def test_a_configured_command_migrates_with_the_dsn_and_timeouts_it_is_given(pg, tmp_path, argument, ok):
    script = tmp_path / "migrate_app.py"
    script.write_text(COMMAND)
    settings = MigrateSettings(
        runner="command",
        command=[sys.executable, str(script), argument],
        version_query="SELECT version FROM app_version",
        expected_version="{release}",
        lock_timeout="4s",
        statement_timeout="90s",
    )
    result = migrate(pg, settings, "7.1.0")

    assert result.ok is ok
    assert result.expected_version == "7.1.0"
    if ok:
        assert (result.version_before, result.version_after) == (None, "7.1.0")
        assert "timeouts 4s 90s" in result.output
    else:
        assert "exited with 3" in result.error and 'relation "missing" does not exist' in result.error
