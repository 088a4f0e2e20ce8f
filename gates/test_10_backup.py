"""Backup: a full backup, proven restorable, before anything changes.

Summit GA 2.1 "backup.sh --full" + "backup-restore-validation.sh --latest" and 3.1
"pg_dump -Fc"; Granter step 1.1 "Backup created and verified". A failure ABORTS (exit 10).
"""

import pytest

from releasegate.actions.backup import list_archive, sha256

pytestmark = pytest.mark.phase("backup")


def test_each_database_is_dumped(backup, check):
    """pg_dump -Fc of every configured database: path, size, checksum and time recorded."""
    for dump in backup:
        check.at_least(f"{dump.database} dump size", dump.size_bytes, 1, unit="bytes", source=str(dump.path))
        check.record(f"{dump.database} dump sha256", dump.sha256, source=str(dump.path))
        check.record(f"{dump.database} dump took", round(dump.duration_s, 2), unit="s")


def test_each_dump_lists_cleanly(backup, postgres, env, previous_release, check):
    """pg_restore --list reads each archive's table of contents (before the initial release a
    database may still be empty: then it lists nothing, and says so)."""
    for dump in backup:
        entries = list_archive(postgres, dump, env.backup.pg_bin_dir)
        check.at_least(
            f"{dump.database} archive entries",
            entries,
            0 if previous_release is None else 1,
            source=f"pg_restore --list {dump.path.name}",
            detail="initial release: the database may be empty" if previous_release is None else "",
        )


@pytest.mark.threshold("backup.verify_tables")
def test_each_dump_restores_with_the_same_rows(backup, scratch_copies, postgres, check):
    """Restored into a scratch database, every verified table has the rows it had at the dump."""
    for dump in backup:
        restored = scratch_copies[dump.database]
        check.record(
            f"{dump.database} restored into",
            restored.database,
            detail=f"in {restored.duration_s:.1f} s",
            source=postgres.source(dbname=restored.database),
        )
        if not dump.row_counts:
            check.record(
                f"{dump.database} row counts",
                "not compared",
                detail="no backup.verify_tables for this database",
            )
        for table, rows in dump.row_counts.items():
            check.equals(
                f"{dump.database}.{table} rows restored",
                restored.row_counts.get(table),
                rows,
                source=postgres.source(f"SELECT count(*) FROM {table}", restored.database),
            )


def test_backup_checksum_holds(backup, check):
    """What a restore would read is what was written: the checksum is read back from disk."""
    for dump in backup:
        check.equals(f"{dump.database} sha256 on disk", sha256(dump.path), dump.sha256, source=str(dump.path))
