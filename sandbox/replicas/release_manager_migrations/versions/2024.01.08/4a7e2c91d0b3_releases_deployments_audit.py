"""2024.01.08: releases, their deployments, and the audit log."""

from alembic import op

revision = "4a7e2c91d0b3"
down_revision = None


def upgrade() -> None:
    op.execute(
        "CREATE TABLE releases (id serial PRIMARY KEY, name text NOT NULL UNIQUE, "
        "created_at timestamptz NOT NULL DEFAULT now())"
    )
    op.execute(
        "CREATE TABLE deployments (id serial PRIMARY KEY, release_id integer NOT NULL REFERENCES releases, "
        "environment text NOT NULL, status text NOT NULL, started_at timestamptz NOT NULL DEFAULT now())"
    )
    op.execute(
        "CREATE TABLE audit_log (id bigserial PRIMARY KEY, actor text NOT NULL, action text NOT NULL, "
        "at timestamptz NOT NULL DEFAULT now())"
    )


def downgrade() -> None:
    op.execute("DROP TABLE audit_log")
    op.execute("DROP TABLE deployments")
    op.execute("DROP TABLE releases")
