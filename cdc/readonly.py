"""Read-only replica tables: only a CDC sink may change them.

A service may keep a read-only copy of reference data it does not own (the manifest's
`replicas`). The copy is fed by a sink; a write by the service's own code would be lost (the
next event overwrites it) or, worse, hide a divergence. `protect` installs a guard in the
target database that refuses every write except a sink's:

- SQLite: `BEFORE INSERT/UPDATE/DELETE` triggers that abort unless the sink's origin marker
  (`_cdc_apply_marker`, written inside every sink transaction) is present;
- PostgreSQL: a statement trigger (insert, update, delete, truncate) raising
  `read_only_sql_transaction`; it is an ordinary trigger, so it does not fire in the sink's
  sessions, which run with `session_replication_role = replica`.

`unprotect` removes the guard (capture rollback empties the copy; a table that stops being
a replica becomes writable again). Both are idempotent.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Engine, inspect, text

from cdc.sink import APPLY_MARKER, ensure_sink_tables

GUARD = "_kit_replica_ro"
_PG_FUNCTION = "_kit_replica_read_only"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _message(table: str) -> str:
    return (
        f"table {table} is a read-only replica fed by CDC: write it on the side that owns "
        "its writes (the monolith, or the service that took it over)"
    )


def protect(engine: Engine, tables: Iterable[str]) -> list[str]:
    """Refuse writes to `tables` except a sink's; returns the tables now guarded."""
    tables = list(tables)
    if not tables:
        return []
    ensure_sink_tables(engine)
    if engine.dialect.name == "sqlite":
        with engine.begin() as conn:
            for t in tables:
                msg = _message(t).replace("'", "''")
                for op, suffix in (("INSERT", "ins"), ("UPDATE", "upd"), ("DELETE", "del")):
                    conn.exec_driver_sql(
                        f"CREATE TRIGGER IF NOT EXISTS {_q(f'{GUARD}_{t}_{suffix}')} "
                        f"BEFORE {op} ON {_q(t)} "
                        f"WHEN NOT EXISTS (SELECT 1 FROM {APPLY_MARKER}) "
                        f"BEGIN SELECT RAISE(ABORT, '{msg}'); END"
                    )
        return tables
    with engine.begin() as conn:
        conn.execute(  # text(): the '%' placeholder of RAISE is escaped for the driver
            text(
                f"CREATE OR REPLACE FUNCTION {_PG_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'table % is a read-only replica fed by CDC: write it on "
                "the side that owns its writes (the monolith, or the service that took it over)', "
                "TG_TABLE_NAME USING ERRCODE = 'read_only_sql_transaction'; END $$"
            )
        )
        for t in tables:
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {GUARD} ON {_q(t)}")
            conn.exec_driver_sql(
                f"CREATE TRIGGER {GUARD} BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON "
                f"{_q(t)} FOR EACH STATEMENT EXECUTE FUNCTION {_PG_FUNCTION}()"
            )
    return tables


def unprotect(engine: Engine, tables: Iterable[str]) -> None:
    """Make `tables` writable again (idempotent; missing tables are skipped)."""
    existing = set(inspect(engine).get_table_names())
    with engine.begin() as conn:
        for t in tables:
            if t not in existing:
                continue
            if engine.dialect.name == "sqlite":
                for suffix in ("ins", "upd", "del"):
                    conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {_q(f'{GUARD}_{t}_{suffix}')}")
            else:
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {GUARD} ON {_q(t)}")


def protected(engine: Engine, tables: Iterable[str]) -> dict[str, bool]:
    """Per table: is the read-only guard installed?"""
    tables = list(tables)
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            names = {
                r[0]
                for r in conn.exec_driver_sql(
                    "SELECT name FROM sqlite_master WHERE type = 'trigger'"
                )
            }
            return {t: f"{GUARD}_{t}_ins" in names for t in tables}
        rows = conn.exec_driver_sql(
            "SELECT c.relname FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid "
            f"WHERE g.tgname = '{GUARD}'"
        )
        names = {r[0] for r in rows}
        return {t: t in names for t in tables}
