"""Alembic environment of the notes app; its history is recorded in `notes_schema_version`."""

import os

from alembic import context
from notesapp.models import metadata
from sqlalchemy import create_engine, pool

config = context.config
url = (
    config.attributes.get("url")
    or config.get_main_option("sqlalchemy.url")
    or os.environ["DATABASE_URL"]
)
engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table="notes_schema_version",
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
