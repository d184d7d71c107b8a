"""Which key identifies a captured row: the table's primary key, or the key its mapping declares.

An association table often has no primary key in the real database even when the
application's model declares one. Capture then identifies rows by the mapping's key (its
source columns): SQLite triggers carry those columns, PostgreSQL logs whole old rows
(``REPLICA IDENTITY FULL``). `check_keys` tells, before anything runs, where the database,
the mapping and the model disagree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import NoSuchTableError

from cdc.mapping import MappingSpec


def declared_keys(mapping: MappingSpec) -> dict[str, tuple[str, ...]]:
    """Source table → the source columns of its declared key (what `enable` captures a table
    without a primary key by)."""
    return {t.source: t.source_key for t in mapping.tables}


def _split(table: str) -> tuple[str | None, str]:
    schema, _, name = table.rpartition(".")
    return schema or None, name


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def duplicate_key(conn: Connection, table_sql: str, key: Sequence[str]) -> tuple | None:
    """A key value several rows of `table_sql` (quoted) share, or None when `key` is unique."""
    cols = ", ".join(_q(c) for c in key)
    row = conn.execute(
        text(f"SELECT {cols} FROM {table_sql} GROUP BY {cols} HAVING count(*) > 1 LIMIT 1")
    ).first()
    return None if row is None else tuple(row)


def check_keys(
    engine: Engine,
    mapping: MappingSpec,
    model_keys: Mapping[str, Sequence[str]] | None = None,
) -> list[str]:
    """Problems with the keys of the mapped source tables in the real database (empty: none).

    - a mapped table that does not exist;
    - a primary key other than the columns the mapping's key is mapped from (events are keyed
      and partitioned by the primary key, the sink upserts by the mapping's key);
    - no primary key and a declared key that is not unique in the data;
    - `model_keys` (table → primary key the application's model declares): a model key the
      database does not have.
    """
    problems: list[str] = []
    insp = inspect(engine)
    model_keys = model_keys or {}
    for tm in mapping.tables:
        schema, name = _split(tm.source)
        declared = tm.source_key
        try:
            pk = tuple(insp.get_pk_constraint(name, schema=schema).get("constrained_columns") or ())
            columns = {c["name"] for c in insp.get_columns(name, schema=schema)}
        except NoSuchTableError:
            problems.append(f"table {tm.source!r}: it does not exist in the source database")
            continue
        model = tuple(model_keys.get(tm.source, ()))
        if model and model != pk:
            found = f"({', '.join(pk)})" if pk else "none"
            problems.append(
                f"table {tm.source!r}: the model declares primary key ({', '.join(model)}) but "
                f"the database has {found}"
                + ("; capture uses the mapping's key instead" if not pk else "")
            )
        if pk:
            if pk != declared:
                problems.append(
                    f"table {tm.source!r}: the database's primary key is ({', '.join(pk)}) but "
                    f"the mapping's key is mapped from ({', '.join(declared)}); events are keyed "
                    "by the primary key, so map the key from those columns"
                )
            continue
        missing = [c for c in declared if c not in columns]
        if missing:
            problems.append(
                f"table {tm.source!r}: no primary key, and the mapping's key names missing "
                f"column(s) {', '.join(missing)}"
            )
            continue
        ref = f"{_q(schema)}.{_q(name)}" if schema else _q(name)
        with engine.connect() as conn:
            dup = duplicate_key(conn, ref, declared)
        if dup is not None:
            problems.append(
                f"table {tm.source!r}: no primary key, and the mapping's key "
                f"({', '.join(declared)}) is not unique (several rows have {tuple(dup)})"
            )
    return problems
