"""PostgreSQL targets: the rights every apply needs, the replication origin, the apply
transaction.

Every apply transaction sets ``session_replication_role = replica``, as PostgreSQL's own
logical replication does, which takes a superuser or, on PostgreSQL 15+,
``GRANT SET ON PARAMETER session_replication_role``; the origin takes a superuser or EXECUTE
on the origin functions. Building a Sink checks both (check_pg_replica_role, ensure_pg_origin),
so a role without them fails at once, not at the first apply: SinkPermissionError names the
parameter and its remedies.

The sink's commits carry a replication origin (``pg_origin_name``), which the pgoutput
capture skips with ``PgCaptureConfig(origin="none")``, so CDC running both ways never loops
an event back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from cdc.retry import sqlstate
from cdc.target import SinkError


class SinkPermissionError(SinkError):
    """The target database role may not do what every apply transaction does."""


def pg_origin_name(engine: Engine, group: str) -> str:
    """The replication origin a PostgreSQL sink tags its commits with: one per target
    database and group (origins are server-wide, like slots)."""
    raw = f"cdc_{engine.url.database or ''}_{group}".lower()
    return "".join(c if c.isalnum() or c == "_" else "_" for c in raw)[:120]


def ensure_pg_origin(engine: Engine, name: str) -> str:
    """Create the replication origin `name` once (needs superuser or the origin functions
    granted); commits made after `pg_replication_origin_session_setup(name)` carry it, pgoutput
    announces it, and a capture with ``origin = "none"`` skips them. A role without the rights
    gets SinkPermissionError here, not at the first apply."""
    lookup = "SELECT pg_replication_origin_oid(%(n)s)"
    with engine.connect() as conn:
        try:
            if conn.exec_driver_sql(lookup, {"n": name}).scalar() is not None:
                return name
            try:
                conn.exec_driver_sql("SELECT pg_replication_origin_create(%(n)s)", {"n": name})
                conn.commit()
            except DBAPIError:
                conn.rollback()
                # another process may have created it meanwhile; anything else is the error
                if conn.exec_driver_sql(lookup, {"n": name}).scalar() is None:
                    raise
        except DBAPIError as exc:
            if _sqlstate(exc) != _INSUFFICIENT_PRIVILEGE:
                raise
            conn.rollback()
            role = conn.exec_driver_sql("SELECT current_user").scalar()
            raise SinkPermissionError(
                f"the sink's database role {role!r} may not use the replication origin "
                f"{name!r}, which tags the sink's own commits so reverse CDC skips them "
                "(origin_tag). Make the role a superuser, or grant it EXECUTE on "
                "pg_replication_origin_create, pg_replication_origin_oid, "
                "pg_replication_origin_session_setup and pg_replication_origin_session_reset. "
                f"The server said: {str(exc.orig).strip()}"
            ) from None
    return name


_INSUFFICIENT_PRIVILEGE = "42501"  # SQLSTATE of "permission denied ..."


def _sqlstate(exc: DBAPIError) -> str | None:
    return sqlstate(exc.orig)


def check_pg_replica_role(engine: Engine) -> None:
    """Fail before the first event if the role may not set ``session_replication_role``.

    Every apply transaction sets it to ``replica`` (see pg_apply_transaction), which takes a
    superuser or, on PostgreSQL 15 and later, ``GRANT SET ON PARAMETER``. Probed in a
    transaction that is rolled back, so the check changes nothing; without it a role lacking
    the right would only fail at the first apply, mid-stream. Raises SinkPermissionError.
    """
    with engine.connect() as conn:
        role = str(conn.exec_driver_sql("SELECT current_user").scalar())
        version = int(conn.exec_driver_sql("SHOW server_version_num").scalar() or 0)
        conn.rollback()
        try:
            with conn.begin() as probe:
                conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
                probe.rollback()
        except DBAPIError as exc:
            orig = exc.orig
            if _sqlstate(exc) != _INSUFFICIENT_PRIVILEGE:
                raise
            quoted = engine.dialect.identifier_preparer.quote(role)
            this_server = "" if version >= 150000 else f" (this server runs {version // 10000})"
            raise SinkPermissionError(
                f"the sink's database role {role!r} may not set session_replication_role, "
                "which every apply transaction sets to replica (foreign keys are not checked "
                "row by row, as in PostgreSQL's logical replication: events of different "
                "tables arrive in no global order). Fix it as a superuser: make the role a "
                f"superuser (`ALTER ROLE {quoted} SUPERUSER;`) or, on PostgreSQL 15 and later"
                f"{this_server}, grant it the parameter "
                f"(`GRANT SET ON PARAMETER session_replication_role TO {quoted};`). "
                f"The server said: {str(orig).strip()}"
            ) from None


@contextmanager
def pg_apply_transaction(engine: Engine, origin: str | None) -> Iterator[Connection]:
    """A PostgreSQL apply transaction, as PostgreSQL's own logical replication applies:
    ``session_replication_role = replica`` (foreign keys are not checked row by row: events
    of different tables and partitions arrive in no global order, and the source already
    enforced them), and, with `origin`, a commit record carrying that replication origin
    (set up for the session, reset right after the commit so a pooled connection never
    leaks it). The first needs a superuser or, on PostgreSQL 15+, ``GRANT SET ON PARAMETER
    session_replication_role`` (checked when the Sink is built: check_pg_replica_role); the
    second a superuser or EXECUTE on the replication origin functions."""
    with engine.connect() as conn:
        try:
            with conn.begin():
                conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
                if origin is not None:
                    conn.exec_driver_sql(
                        "SELECT pg_replication_origin_session_setup(%(n)s)", {"n": origin}
                    )
                yield conn
        finally:
            if origin is not None:
                try:
                    conn.exec_driver_sql("SELECT pg_replication_origin_session_reset()")
                    conn.commit()
                except DBAPIError:
                    conn.invalidate()  # setup never happened or the session is broken
