"""2024.01.15-bad-migration: the strategy column without a default, NOT NULL on a table that has
rows: PostgreSQL refuses it ("column contains null values") and nothing is changed."""

from alembic import op

revision = "d81b6e04f5c2"
down_revision = "4a7e2c91d0b3"


def upgrade() -> None:
    op.execute("ALTER TABLE deployments ADD COLUMN strategy text NOT NULL")


def downgrade() -> None:
    op.execute("ALTER TABLE deployments DROP COLUMN strategy")
