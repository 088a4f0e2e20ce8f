"""2024.01.15: each deployment records its strategy (a column with a default: no rewrite)."""

from alembic import op

revision = "9c3f51e8a276"
down_revision = "4a7e2c91d0b3"


def upgrade() -> None:
    op.execute("ALTER TABLE deployments ADD COLUMN strategy text NOT NULL DEFAULT 'rolling'")


def downgrade() -> None:
    op.execute("ALTER TABLE deployments DROP COLUMN strategy")
