"""alembic's environment for the notes service: the database is DATABASE_URL (postgresql://...),
reached with psycopg 3; libpq reads PGOPTIONS (the lock and statement timeouts) and PGPASSWORD."""

import os

from alembic import context
from sqlalchemy import create_engine

url = os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1)
with create_engine(url).connect() as connection:
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
