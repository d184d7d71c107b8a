"""The product's one engine factory: every database the kit touches (CDC source and target,
route store, state store, Alembic runs) gets its engine here, with SQLite tuned for
concurrent use by several processes."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


def is_postgres(url: str | None) -> bool:
    """A PostgreSQL URL, whatever the driver (`postgresql+psycopg://...`); what picks logical
    decoding over triggers for capture, and `public` over `main` as the schema."""
    return bool(url) and url.split("://", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for `url`; SQLite files get their folder, WAL, a busy timeout and NORMAL sync.

    WAL lets the capture worker, the sink and the applications read while one of them writes;
    the busy timeout turns short write-lock waits into waiting instead of errors.
    """
    if url.startswith("postgres://"):  # Heroku-style scheme SQLAlchemy no longer accepts
        url = "postgresql://" + url[len("postgres://") :]
    parsed = make_url(url)
    if (
        parsed.get_backend_name() == "postgresql"
        and parsed.get_driver_name() in ("psycopg", "psycopg2")
        and importlib.util.find_spec("psycopg") is None
    ):
        # The project installs psycopg2; SQLAlchemy 2.1 defaults `postgresql://` to psycopg 3.
        parsed = parsed.set(drivername="postgresql+psycopg2")
        url = parsed.render_as_string(hide_password=False)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        connect_args = kwargs.setdefault("connect_args", {})
        connect_args.setdefault("timeout", 60)
        connect_args.setdefault("check_same_thread", False)
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            if parsed.database and parsed.database != ":memory:":
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)
