"""The one Alembic environment every database's `env.py` runs, so they cannot drift apart.

Each `migrations/<name>/env.py` only names its metadata, its version table and (for a
service) where its default URL comes from. The URL is `config.attributes["url"]`, then the
`sqlalchemy.url` option, then `default_url()`; without any, the run fails naming the flag.
A caller may pass an open connection in `config.attributes["connection"]` to run inside it.
"""

from __future__ import annotations

from collections.abc import Callable

from alembic import context
from sqlalchemy import Connection, MetaData, pool

from shoplib.db import make_engine


def run_migrations(
    target_metadata: MetaData,
    version_table: str,
    default_url: Callable[[], str] | None = None,
) -> None:
    """Run the migrations Alembic asked for (offline SQL or online), for one database."""
    config = context.config
    table = config.attributes.get("version_table", version_table)
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if not url and default_url is not None:
        url = default_url()
    if not url:
        raise RuntimeError("no database URL: pass config.attributes['url'] (kit db ... --url)")

    def configure(**kwargs: object) -> None:
        context.configure(
            target_metadata=target_metadata, version_table=table, compare_type=True, **kwargs
        )

    def run(connection: Connection) -> None:
        configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()

    if context.is_offline_mode():
        configure(
            url=url,
            literal_binds=True,
            dialect_opts={"paramstyle": "named"},
            render_as_batch=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        run(connection)
        return
    engine = make_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as new_connection:
            run(new_connection)
    finally:
        engine.dispose()
