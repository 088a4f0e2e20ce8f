"""1.5.0-lock: the same column, but the table is locked for seconds first (a backfill written as
one long statement under ACCESS EXCLUSIVE): every user request waits behind it."""

from alembic import op

revision = "b2a7e81d4f33"
down_revision = "7c1e0a2f9b01"
LOCK_S = 6


def upgrade() -> None:
    op.execute("LOCK TABLE notes IN ACCESS EXCLUSIVE MODE")
    op.execute(f"SELECT pg_sleep({LOCK_S})")
    op.execute("ALTER TABLE notes ADD COLUMN pinned boolean NOT NULL DEFAULT false")


def downgrade() -> None:
    op.execute("ALTER TABLE notes DROP COLUMN pinned")
