"""1.5.0: notes can be pinned (a column with a default: no rewrite, a lock held for milliseconds)."""

from alembic import op

revision = "3f9d4b6a2c10"
down_revision = "7c1e0a2f9b01"


def upgrade() -> None:
    op.execute("ALTER TABLE notes ADD COLUMN pinned boolean NOT NULL DEFAULT false")


def downgrade() -> None:
    op.execute("ALTER TABLE notes DROP COLUMN pinned")
