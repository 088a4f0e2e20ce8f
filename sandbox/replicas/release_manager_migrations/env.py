"""alembic's environment for the Release Manager replica: the database is DATABASE_URL
(postgresql://...), reached with psycopg 3 (libpq reads PGOPTIONS and PGPASSWORD)."""

import os

from alembic import context
from sqlalchemy import create_engine

url = os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1)
if context.is_offline_mode():  # `alembic upgrade head --sql`: the guide's step 3, SQL to review
    context.configure(url=url, literal_binds=True, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    with create_engine(url).connect() as connection:
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
