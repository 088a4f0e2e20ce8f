"""The migration's SQL reviewed before it runs (issue 16, item 4; Release Manager production 3):
the exact SQL kept with the run's evidence, linted by the real squawk for what locks users out,
a warning by default and a stop before the rehearsal where the environment says "fail"."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from gate_runs import environment, run_gates
from sandbox_env import running_sandbox, variant, write_sandbox_env

from releasegate.actions.migration_review import lint
from releasegate.config import SQUAWK_STYLE_RULES

LOCKING = """\
ALTER TABLE customers ADD COLUMN tier text;
ALTER TABLE customers ALTER COLUMN tier SET NOT NULL;
CREATE INDEX customers_tier ON customers (tier);
"""


def test_squawk_names_what_locks_users_out_and_not_matters_of_style(tmp_path: Path) -> None:
    sql = tmp_path / "0002_tier.sql"
    sql.write_text(LOCKING)

    found = lint(sql, exclude=SQUAWK_STYLE_RULES)

    rules = {f.rule for f in found}
    assert {"adding-not-nullable-field", "require-concurrent-index-creation"} <= rules, found
    assert not rules & set(SQUAWK_STYLE_RULES), "style and the timeouts releasegate sets do not count"
    index = next(f for f in found if f.rule == "require-concurrent-index-creation")
    assert (index.file, index.line) == ("0002_tier.sql", 3)
    quiet = [*SQUAWK_STYLE_RULES, "adding-not-nullable-field", "require-concurrent-index-creation"]
    assert lint(sql, exclude=quiet) == []


@pytest.mark.integration
def test_the_sql_is_kept_with_the_evidence_and_a_locking_finding_stops_the_run_where_it_must(
    sandbox_dir: Path,
) -> None:
    """2.0.0's migration sets NOT NULL on a full table and validates a constraint at once: with
    lint = "fail" the run ABORTS before the rehearsal, the schema untouched; with the default
    ("warn") it goes out, the findings and the SQL in the report for a person to read."""
    with running_sandbox(write_sandbox_env(sandbox_dir, metrics=None)) as env_file:
        strict = variant(env_file, "strict", **{"migrate.review.lint": "fail"})
        stopped = run_gates(strict, "2.0.0")
        dsn = environment(env_file).database.dsn
        with psycopg.connect(dsn) as conn:
            version = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
            scratch = conn.execute(
                "SELECT count(*) FROM pg_database WHERE datname LIKE 'releasegate_scratch%'"
            )
            scratch_dbs = scratch.fetchone()[0]

        assert stopped.code == 10, stopped.output
        assert "test_the_migration_sql_is_reviewed_before_it_runs" in stopped.output
        assert "locking operations found by squawk" in stopped.report
        assert (
            "not rehearsing: squawk found" in stopped.output or "rehearsing migrations" not in stopped.output
        )
        assert version == "0001" and scratch_dbs == 0, "nothing ran, not even on the scratch copy"

        gone_out = run_gates(env_file, "2.0.0")
        assert gone_out.code == 0, gone_out.output
        kept = gone_out.reports / "migration-2.0.0.sql"
        assert "ALTER TABLE customers ADD COLUMN tier text;" in kept.read_text()
        report = gone_out.report
        assert f"| migration SQL | {kept} (sha256 " in report, report
        assert "| squawk adding-not-nullable-field | 0002_customer_tier.sql:" in report
        assert "migrate.review.lint = warn: for a person to read before production" in report
