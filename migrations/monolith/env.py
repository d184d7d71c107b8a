"""Alembic environment for the monolith database.

The URL is passed programmatically (`config.attributes["url"]`, see `kit.alembic_runner`);
`sqlalchemy.url` in a Config is accepted as a fallback. Nothing here hard-codes a database.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.pool import NullPool

from monolith.schema import metadata
from shoplib.db import make_engine

VERSION_TABLE = "alembic_version_monolith"

config = context.config
url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
if not url:
    raise RuntimeError("no database URL: pass config.attributes['url'] (kit db ... --url)")
version_table = config.attributes.get("version_table", VERSION_TABLE)
target_metadata = metadata()


def run_offline() -> None:
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        version_table=version_table,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as new_connection:
            _run(new_connection)
    finally:
        engine.dispose()


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=version_table,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
