"""Verifier: does the target hold exactly the mapped source? Chunked, bounded memory.

For each table mapping, the source is read in primary-key order in chunks; every row that
passes the mapping's filters is mapped and coerced to the target types; the target rows in the
same key range are read; rows are compared by a checksum of their canonical values. Missing
(in source, not target), extra (in target, not source) and differing keys are reported.
Key columns must be plain copies so that source and target key order agree.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, Float, MetaData, Table, and_, select, text, tuple_, type_coerce

from cdc.coerce import canonical, coercer, stores_decimal_as_float
from cdc.mapping import MappingError, MappingSpec, TableMapping

MAX_LISTED = 50


class VerifyError(RuntimeError):
    """The verifier cannot compare this mapping (e.g. a key column is computed)."""


@dataclass
class TableReport:
    source: str
    target: str
    key_columns: tuple[str, ...] = ()
    source_rows: int = 0
    target_rows: int = 0
    missing: list[tuple[Any, ...]] = field(default_factory=list)
    extra: list[tuple[Any, ...]] = field(default_factory=list)
    differing: list[tuple[tuple[Any, ...], list[str]]] = field(default_factory=list)
    missing_count: int = 0
    extra_count: int = 0
    differing_count: int = 0
    unmappable: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.missing_count or self.extra_count or self.differing_count or self.unmappable
        )


@dataclass
class VerifyReport:
    tables: list[TableReport]

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tables)

    @property
    def differences(self) -> int:
        return sum(
            t.missing_count + t.extra_count + t.differing_count + len(t.unmappable)
            for t in self.tables
        )


def format_key(columns: tuple[str, ...], key: tuple[Any, ...]) -> str:
    """`id=1` / `a=1, b=x`: how a key is shown to people."""
    return ", ".join(f"{c}={v}" for c, v in zip(columns, key, strict=False))


def _checksum(row: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(row, sort_keys=True, default=str).encode()).hexdigest()


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _exact_read(column: Any, dialect: str) -> Any:
    """The column as selected for comparison: a SQLite fixed-point column as the float it
    stores (SQLAlchemy's Decimal reading pads it to the scale with float noise, 1234567.1 as
    1234567.1000000001; canonical() reads the float by its shortest repr)."""
    if stores_decimal_as_float(column.type, dialect):
        return type_coerce(column, Float()).label(column.name)
    return column


def verify_table(
    source: Engine,
    target: Engine,
    tm: TableMapping,
    chunk: int = 5000,
    on_chunk: Callable[[int], None] | None = None,
    on_extra: Callable[[tuple[Any, ...]], None] | None = None,
) -> TableReport:
    """Compare one mapped table. `on_extra` gets the key (as stored) of every target row the
    source does not have, after the chunk that holds it was read."""
    by_target = {c.target: c for c in tm.columns}
    if not all(by_target[k].is_copy for k in tm.key):
        raise VerifyError(f"table {tm.source!r}: key columns must be plain copies to verify")
    ttable = Table(tm.target, MetaData(), autoload_with=target)
    dialect = target.dialect.name
    coercers = {c.target: coercer(ttable.c[c.target].type, dialect) for c in tm.columns}
    key_cols = [ttable.c[k] for k in tm.key]
    mapped_cols = [_exact_read(ttable.c[c.target], dialect) for c in tm.columns]
    skey = tm.source_key
    report = TableReport(tm.source, tm.target, tm.key)
    last: tuple[Any, ...] | None = None
    src_cols = ", ".join(_q(c) for c in skey)
    while True:
        where = ""
        params: dict[str, Any] = {}
        if last is not None:
            where = f"WHERE ({src_cols}) > ({', '.join(f':k{i}' for i in range(len(skey)))})"
            params = {f"k{i}": v for i, v in enumerate(last)}
        with source.connect() as conn:
            rows = (
                conn.execute(
                    text(
                        f"SELECT * FROM {_q(tm.source)} {where} ORDER BY {src_cols} LIMIT {int(chunk)}"
                    ),
                    params,
                )
                .mappings()
                .all()
            )
        is_last = len(rows) < chunk
        hi = tuple(rows[-1][c] for c in skey) if rows and not is_last else None
        expected: dict[tuple[Any, ...], dict[str, Any]] = {}
        for r in rows:
            row = dict(r)
            if not tm.matches(row):
                continue
            try:
                mapped = tm.forward(row)
                values = {k: canonical(coercers[k](v)) for k, v in mapped.items()}
            except (MappingError, ValueError, TypeError, ArithmeticError) as exc:
                report.unmappable.append(f"{tuple(row[c] for c in skey)}: {exc}")
                continue
            key = tuple(canonical(coercers[k](mapped[k])) for k in tm.key)
            expected[key] = values
        q = select(*mapped_cols)
        conds = []
        if last is not None:
            conds.append(
                tuple_(*key_cols) > tuple_(*last) if len(key_cols) > 1 else key_cols[0] > last[0]
            )
        if hi is not None:
            conds.append(
                tuple_(*key_cols) <= tuple_(*hi) if len(key_cols) > 1 else key_cols[0] <= hi[0]
            )
        if conds:
            q = q.where(and_(*conds))
        with target.connect() as conn:
            actual_rows = conn.execute(q.order_by(*key_cols)).mappings().all()
        report.source_rows += len(expected)
        report.target_rows += len(actual_rows)
        for ar in actual_rows:
            values = {k: canonical(v) for k, v in ar.items()}
            key = tuple(values[k] for k in tm.key)
            exp = expected.pop(key, None)
            if exp is None:
                report.extra_count += 1
                if len(report.extra) < MAX_LISTED:
                    report.extra.append(key)
                if on_extra is not None:
                    on_extra(tuple(ar[k] for k in tm.key))
            elif _checksum(exp) != _checksum(values):
                report.differing_count += 1
                if len(report.differing) < MAX_LISTED:
                    cols = sorted(k for k in exp if exp[k] != values.get(k))
                    report.differing.append((key, cols))
        for key in expected:
            report.missing_count += 1
            if len(report.missing) < MAX_LISTED:
                report.missing.append(key)
        if on_chunk:
            on_chunk(len(rows))
        if is_last:
            return report
        last = tuple(rows[-1][c] for c in skey)


def verify(
    source: Engine,
    target: Engine,
    mapping: MappingSpec,
    tables: list[str] | None = None,
    chunk: int = 5000,
    on_chunk: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Compare every (or the named) mapped table(s)."""
    wanted = tables or mapping.source_tables
    return VerifyReport(
        [verify_table(source, target, mapping.for_source(t), chunk, on_chunk) for t in wanted]
    )


@dataclass
class Removed:
    """What `remove_extra_rows` deleted from one target table, and what it could not."""

    table: str
    deleted: int = 0
    refused: list[str] = field(default_factory=list)  # `key: reason` (e.g. a foreign key)


def remove_extra_rows(
    source: Engine, target: Engine, tm: TableMapping, batch: int = 500, chunk: int = 5000
) -> Removed:
    """Delete the target rows whose key the source no longer has: the deletes a capture that
    was off never saw (a snapshot re-sends rows, never their absence). Paged like the
    verifier; a batch the database refuses is retried row by row and each refusal named.
    Only for a target nothing else writes meanwhile (the playbook holds the writes)."""
    out = Removed(tm.target)
    if tm.filters:
        out.refused.append(
            f"the mapping copies only some rows of {tm.source!r} (filters): the target's other "
            "rows are not the source's to delete; compare with `kit cdc verify`"
        )
        return out
    with source.connect() as conn:
        empty = conn.execute(text(f"SELECT 1 FROM {_q(tm.source)} LIMIT 1")).first() is None
    if empty:
        out.refused.append(
            f"{tm.source!r} is empty in the source: not deleting every row of the target "
            "(a wrong or reset database?)"
        )
        return out
    ttable = Table(tm.target, MetaData(), autoload_with=target)
    cols = [ttable.c[k] for k in tm.key]
    pending: list[tuple[Any, ...]] = []

    def matching(key: tuple[Any, ...]) -> Any:
        return and_(*(c == v for c, v in zip(cols, key, strict=True)))

    def delete(keys: list[tuple[Any, ...]]) -> None:
        """One transaction per batch; a refused batch again row by row, refusals named."""
        try:
            with target.begin() as conn:
                n = sum(conn.execute(ttable.delete().where(matching(k))).rowcount for k in keys)
        except Exception as exc:  # noqa: BLE001 - one row's refusal must not keep the others
            if len(keys) == 1:
                reason = str(exc).splitlines()[0][:200]
                out.refused.append(f"{format_key(tm.key, keys[0])}: {reason}")
            else:
                for key in keys:
                    delete([key])
            return
        out.deleted += n

    def collect(key: tuple[Any, ...]) -> None:
        pending.append(key)
        if len(pending) >= batch:
            delete(pending[:])
            pending.clear()

    verify_table(source, target, tm, chunk, on_extra=collect)
    if pending:
        delete(pending)
    return out
