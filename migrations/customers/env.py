"""Alembic environment of the customers service's own database (version table of its own).

The URL comes from `config.attributes["url"]`, then the `sqlalchemy.url` option, then
`CUSTOMERS_DATABASE_URL` / the service default; a caller may pass an open connection in
`config.attributes["connection"]` to run inside it.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, pool

from extracted.customers.config import CustomersConfig
from extracted.customers.models import Base
from shoplib.db import make_engine

VERSION_TABLE = "alembic_version_customers"

config = context.config
target_metadata = Base.metadata
version_table = config.attributes.get("version_table", VERSION_TABLE)


def _url() -> str:
    return (
        config.attributes.get("url")
        or config.get_main_option("sqlalchemy.url")
        or CustomersConfig().database_url
    )


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        version_table=version_table,
        compare_type=True,
        **kwargs,
    )


def run_offline() -> None:
    _configure(
        url=_url(),
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as new_connection:
            _run(new_connection)
    finally:
        engine.dispose()


def _run(connection: Connection) -> None:
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
