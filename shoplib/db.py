"""The database extension: one engine and session factory per app, built in `init_app`.

SQLite (the embedded default) and PostgreSQL work through the same code; SQLite gets the
pragmas that make it behave under several gunicorn workers (WAL, busy timeout, foreign keys).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask import Flask, current_app, g
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


def is_postgres(url: str | None) -> bool:
    """A PostgreSQL URL, whatever the driver (`postgresql+psycopg://...`); what picks logical
    decoding over triggers for capture, and `public` over `main` as the schema."""
    return bool(url) and url.split("://", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for `url`; SQLite files get their folder created and sane pragmas."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        # SQLAlchemy 2.1 picks psycopg (3) for a bare `postgresql://`; we ship psycopg2.
        url = parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": 30})
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class Database:
    """Flask extension holding the engine; sessions live for one app context."""

    def __init__(self, app: Flask | None = None) -> None:
        self.engine: Engine | None = None
        self.session_factory: sessionmaker[Session] | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        self.engine = app.config.get("DATABASE_ENGINE") or make_engine(app.config["DATABASE_URL"])
        self.session_factory = sessionmaker(self.engine, expire_on_commit=False)
        app.extensions["database"] = self
        app.teardown_appcontext(self._close_session)

    def _close_session(self, _exc: BaseException | None) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()

    def ping(self) -> None:
        """Raise if the database cannot answer a trivial query."""
        assert self.engine is not None
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))


def database() -> Database:
    return current_app.extensions["database"]


def session() -> Session:
    """The session of the current app context (created on first use)."""
    if "db_session" not in g:
        factory = database().session_factory
        assert factory is not None, "Database.init_app was not called"
        g.db_session = factory()
    return g.db_session


@contextmanager
def transaction() -> Iterator[Session]:
    """One unit of work: commit on success, roll back everything on any error."""
    current = session()
    try:
        yield current
        current.commit()
    except BaseException:
        current.rollback()
        raise
