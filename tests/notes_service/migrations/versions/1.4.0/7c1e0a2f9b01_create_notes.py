"""1.4.0: the notes table."""

from alembic import op

revision = "7c1e0a2f9b01"
down_revision = None


def upgrade() -> None:
    op.execute(
        "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL, "
        "created_at timestamptz NOT NULL DEFAULT now())"
    )


def downgrade() -> None:
    op.execute("DROP TABLE notes")
