"""1.5.0-bad-migration: adds the column, then a backfill that fails; alembic prints a long
traceback whose last line is SQLAlchemy's "Background on this error", not the cause."""

from alembic import op

revision = "e5c2d90a7b44"
down_revision = "7c1e0a2f9b01"


def upgrade() -> None:
    op.execute("ALTER TABLE notes ADD COLUMN pinned boolean NOT NULL DEFAULT false")
    op.execute("UPDATE notes SET pinned = (id / 0 > 0)")


def downgrade() -> None:
    op.execute("ALTER TABLE notes DROP COLUMN pinned")
