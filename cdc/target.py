"""A target table of the mapping: reflected, with its coercers, upsert statement and a
compiled ``prepare`` (source row → target key and statement parameters).

For throughput the mapping, the coercion and (on SQLite) the dialect's bind processing of one
row are generated once into one Python function per table; on SQLite the upsert is a prepared
``INSERT ... ON CONFLICT`` run with ``executemany`` on the driver, with no per-row SQLAlchemy
parameter processing. The sink turns each event into `Action`s and writes them here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import (
    Connection,
    DateTime,
    Engine,
    MetaData,
    Table,
    UniqueConstraint,
    and_,
    delete,
    insert,
    or_,
)
from sqlalchemy.exc import SQLAlchemyError

from cdc.coerce import coercer
from cdc.mapping import MappingError, TableMapping


class SinkError(RuntimeError):
    """The sink cannot start: the target schema does not fit the mapping, or (a
    SinkPermissionError) the target role lacks a right every apply needs."""


# One per event: a NamedTuple, which the hot path builds with tuple.__new__ (no Python-level
# __init__ call), several times cheaper than a dataclass.
class Action(NamedTuple):
    kind: str  # "upsert" | "delete" | "patch" | "truncate"
    mapping: TableMapping
    key: tuple[Any, ...]
    row: tuple[Any, ...] | None = None  # TargetTable.prepare() parameters, column order
    patch: dict[str, Any] | None = None  # "patch": coerced target values the event carries
    after_delete: bool = False  # "patch" collapsed onto a delete: the row is gone


# |int| below this has at most 15 digits: v / 10**k is the float nearest to the decimal, whose
# shortest repr is that decimal again (what float_exact demands of a SQLite NUMERIC value).
_EXACT = 10**15

_DECIMAL_SAMPLES = (Decimal("10.13"), Decimal("-0.07"), Decimal("123456789.123456789"))
_DATETIME_SAMPLES = (
    dt.datetime(2024, 1, 2, 3, 4, 5),
    dt.datetime(2024, 12, 31, 23, 59, 59, 999999),
    dt.datetime(5, 6, 7, 8, 9, 10, 11),
)


def _sample(bind: Callable[[Any], Any], value: Any) -> Any:
    try:
        return bind(value)
    except Exception:  # noqa: BLE001 - a processor for another type
        return None


def _fast_bind(bind: Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
    """A bind processor, or an equivalent faster one for SQLite's naive DATETIME text and
    for booleans stored as 0/1.

    SQLAlchemy's SQLite DATETIME formats with a %-template; ``isoformat`` gives the same text
    for naive datetimes. Its Boolean processor is two Python calls per value. Each shortcut is
    used only when the processor is shown to agree on sample values.
    """
    if bind is None:
        return None
    true, false = _sample(bind, True), _sample(bind, False)
    if type(true) is int and true == 1 and type(false) is int and false == 0:

        def bind_bool(value: Any) -> Any:
            if value is True:
                return 1
            if value is False:
                return 0
            return bind(value)

        return bind_bool
    try:
        same = all(bind(d) == d.isoformat(" ", "microseconds") for d in _DATETIME_SAMPLES)
    except Exception:  # noqa: BLE001 - not a datetime processor
        same = False
    if not same:
        return bind
    datetime = dt.datetime

    def bind_datetime(value: Any) -> Any:
        if type(value) is datetime and value.tzinfo is None:
            return value.isoformat(" ", "microseconds")
        return bind(value)

    bind_datetime.naive_text = True  # type: ignore[attr-defined]
    return bind_datetime


def _datetime_param(
    coerce: Callable[[Any], Any], bind: Callable[[Any], Any]
) -> Callable[[Any], Any]:
    """Coerce + bind of a naive DateTime column on SQLite, in one step.

    Text already in the stored form ``YYYY-MM-DD HH:MM:SS.ffffff`` is the bound value itself
    once it parses as a naive datetime (a bad value still raises); anything else takes the
    coercer and the bind processor.
    """
    fromisoformat = dt.datetime.fromisoformat

    def param(v: Any) -> Any:
        if (
            type(v) is str
            and len(v) == 26
            and v[10] == " "
            and v[19] == "."
            and v[4] == "-"
            and v[7] == "-"
            and v[13] == ":"
            and v[16] == ":"
            and fromisoformat(v).tzinfo is None
        ):
            return v
        c = coerce(v)
        return None if c is None else bind(c)

    return param


class TargetTable:
    """A reflected target table with per-column coercers and an upsert statement.

    For throughput the mapping, the coercion and (on SQLite) the dialect's bind processing of
    one row are compiled once into ``prepare``; on SQLite the upsert is a prepared
    ``INSERT ... ON CONFLICT`` run with ``executemany`` on the driver, with no per-row
    SQLAlchemy parameter processing.
    """

    def __init__(self, engine: Engine, mapping: TableMapping) -> None:
        try:
            self.table = Table(mapping.target, MetaData(), autoload_with=engine)
        except SQLAlchemyError as exc:
            raise SinkError(
                f"target table {mapping.target!r} (for source {mapping.source!r}) cannot be read: "
                f"{exc.__class__.__name__}: {exc}"
            ) from None
        missing = [c.target for c in mapping.columns if c.target not in self.table.c]
        if missing:
            raise SinkError(
                f"target table {mapping.target!r} has no column(s) {', '.join(missing)} "
                f"named in the mapping of source {mapping.source!r}"
            )
        self.mapping = mapping
        self.coercers = {
            c.target: coercer(self.table.c[c.target].type, engine.dialect.name)
            for c in mapping.columns
        }
        self.key_cols = [self.table.c[k] for k in mapping.key]
        self.dialect = engine.dialect.name
        non_key = [c.target for c in mapping.columns if c.target not in mapping.key]
        if self.dialect in {"sqlite", "postgresql"} and self._key_is_unique():
            if self.dialect == "sqlite":
                from sqlalchemy.dialects.sqlite import insert as dialect_insert
            else:
                from sqlalchemy.dialects.postgresql import insert as dialect_insert
            stmt = dialect_insert(self.table)
            if non_key:
                self.upsert = stmt.on_conflict_do_update(
                    index_elements=list(mapping.key),
                    set_={c: stmt.excluded[c] for c in non_key},
                )
            else:
                self.upsert = stmt.on_conflict_do_nothing(index_elements=list(mapping.key))
        else:
            self.upsert = None
        self.names = tuple(c.target for c in mapping.columns)
        self.matches = mapping.compile_matches()
        self.target_key = mapping.compile_target_key()
        self.driver_sql: str | None = None
        self.param_names = self.names  # order of prepare()'s parameters
        binds: list[Callable[[Any], Any] | None] = [None] * len(self.names)
        if self.dialect == "sqlite" and self.upsert is not None:
            compiled = self.upsert.compile(dialect=engine.dialect, column_keys=list(self.names))
            order = tuple(compiled.positiontup or ())
            if sorted(order) == sorted(self.names):
                self.driver_sql = compiled.string
                self.param_names = order
                binds = [
                    _fast_bind(
                        self.table.c[n]
                        .type.dialect_impl(engine.dialect)
                        .bind_processor(engine.dialect)
                    )
                    for n in order
                ]
        self.binds = binds
        self.prepare = self._compile_prepare()

    def _key_is_unique(self) -> bool:
        """Does a primary key, unique constraint or unique index of the target cover exactly
        the mapping's key? `ON CONFLICT` needs one; a table without (a keyless association
        table captured by its declared key) gets delete-then-insert instead."""
        key = set(self.mapping.key)
        sets = [{c.name for c in self.table.primary_key.columns}]
        sets += [
            {c.name for c in con.columns}
            for con in self.table.constraints
            if isinstance(con, UniqueConstraint)
        ]
        sets += [{c.name for c in ix.columns} for ix in self.table.indexes if ix.unique]
        return key in sets

    def _compile_prepare(
        self,
    ) -> Callable[[dict[str, Any]], tuple[tuple[Any, ...], tuple[Any, ...]]]:
        """Source row → (coerced target key, statement parameters), generated once.

        The mapping's expressions (TableMapping.forward_code), the coercers' exact-type check
        and the bind processors in one function, with no per-row dispatch. Any failure re-runs
        the reference path (forward, coerce), whose MappingError names table, column, value.
        """
        ns: dict[str, Any] = {"_slow": self._prepare_slow}
        drift, exprs = self.mapping.forward_code(ns)
        lines = [f"        {drift}\n"] if drift else []
        params = []
        fused = {}  # name index → param index: naive DateTime text on SQLite
        for j, name in enumerate(self.param_names):
            col_type = self.table.c[name].type
            if (
                getattr(self.binds[j], "naive_text", False)
                and name not in self.mapping.key
                and isinstance(col_type, DateTime)
                and not col_type.timezone
            ):
                fused[self.names.index(name)] = j
        scaled = self._scaled_to_float()
        for i, name in enumerate(self.names):
            if i in fused:
                ns[f"_d{i}"] = _datetime_param(self.coercers[name], self.binds[fused[i]])
                lines.append(f"        p{i} = _d{i}({exprs[i]})\n")
                continue
            coerce = self.coercers[name]
            ns[f"_c{i}"] = coerce
            exact = getattr(coerce, "exact", None)
            if exact is None and i not in scaled:
                lines.append(f"        c{i} = _c{i}({exprs[i]})\n")
                continue
            ns[f"_x{i}"] = exact  # the coercer returns a value of this type as it is
            indent = "        "
            if i in scaled:
                # int → Decimal(v).scaleb(-k) → float is v / 10**k exactly (both are the exact
                # quotient rounded once); anything else takes the general lines below.
                source, divisor = scaled[i]
                ns[f"_div{i}"] = divisor
                lines.append(f"        v{i} = row[{source!r}]\n")
                lines.append(f"        if type(v{i}) is int and -{_EXACT} < v{i} < {_EXACT}:\n")
                lines.append(f"            p{i} = v{i} / _div{i}\n")
                lines.append("        else:\n")
                indent += "    "
            j = self.param_names.index(name)
            if exact is None:
                lines.append(f"{indent}c{i} = _c{i}({exprs[i]})\n")
            else:
                lines.append(f"{indent}c{i} = {exprs[i]}\n")
                lines.append(
                    f"{indent}if c{i} is not None and type(c{i}) is not _x{i}: c{i} = _c{i}(c{i})\n"
                )
            if i in scaled:
                ns[f"_b{j}"] = self.binds[j]
                lines.append(f"{indent}p{i} = _b{j}(c{i}) if c{i} is not None else None\n")
        for j, name in enumerate(self.param_names):
            i = self.names.index(name)
            if i in fused or i in scaled:
                params.append(f"p{i}, ")
            elif self.binds[j] is not None:
                ns[f"_b{j}"] = self.binds[j]
                params.append(f"_b{j}(c{i}) if c{i} is not None else None, ")
            else:
                params.append(f"c{i}, ")
        key = "".join(f"c{self.names.index(k)}, " for k in self.mapping.key)
        src = (
            "def prepare(row):\n"
            "    try:\n"
            f"{''.join(lines)}"
            f"        return ({key}), ({''.join(params)})\n"
            "    except Exception:\n"
            "        return _slow(row)\n"
        )
        exec(compile(src, f"<sink {self.mapping.target}>", "exec"), ns)  # noqa: S102 - names are repr()-quoted
        return ns["prepare"]

    def _scaled_to_float(self) -> dict[int, tuple[str, int]]:
        """Columns computed by ``scale`` with a negative exponent into a Decimal column whose
        bind processor stores float(value) (SQLite's Numeric): name index → (source, 10**k)."""
        out = {}
        for i, c in enumerate(self.mapping.columns):
            if c.transform != "scale" or len(c.sources) != 1 or c.target in self.mapping.key:
                continue
            exp = c.args.get("exp")
            if type(exp) is not int or not -22 <= exp < 0:  # 10**22: the last exact power
                continue
            coerce = self.coercers[c.target]
            if getattr(coerce, "exact", None) is not Decimal and not getattr(
                coerce, "float_checked", False
            ):
                continue
            bind = self.binds[self.param_names.index(c.target)]
            if bind is None or any(
                type(b := _sample(bind, d)) is not float or b != float(d) for d in _DECIMAL_SAMPLES
            ):
                continue
            out[i] = (c.sources[0], 10**-exp)
        return out

    def _prepare_slow(self, row: dict[str, Any]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        coerced = self.coerce(self.mapping.forward(row))  # raises the precise MappingError
        values = []
        for name, bind in zip(self.param_names, self.binds, strict=True):
            value = coerced[name]
            try:
                values.append(bind(value) if bind is not None and value is not None else value)
            except (ValueError, TypeError, ArithmeticError) as exc:
                raise MappingError(
                    f"table {self.mapping.source!r}: value {value!r} for column "
                    f"{self.mapping.target}.{name} cannot be bound: {exc}"
                ) from None
        return tuple(coerced[k] for k in self.mapping.key), tuple(values)

    def coerce(self, row: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for name, value in row.items():
            try:
                out[name] = self.coercers[name](value)
            except (ValueError, TypeError, ArithmeticError) as exc:
                raise MappingError(
                    f"table {self.mapping.source!r}: value {value!r} for column "
                    f"{self.mapping.target}.{name} ({self.table.c[name].type}) is invalid: {exc}"
                ) from None
        return out

    def coerce_key(self, key: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(self.coercers[k](v) for k, v in zip(self.mapping.key, key, strict=True))

    def key_where(self, keys: Sequence[tuple[Any, ...]]) -> Any:
        if len(self.key_cols) == 1:
            return self.key_cols[0].in_([k[0] for k in keys])
        return or_(*(and_(*(c == v for c, v in zip(self.key_cols, k, strict=True))) for k in keys))

    def write_upserts(self, conn: Connection, actions: Sequence[Action]) -> None:
        """Upsert the rows (prepare() parameters) of "upsert" actions of this table."""
        rows = [a.row for a in actions if a.row is not None]
        if self.driver_sql is not None:
            conn.exec_driver_sql(self.driver_sql, rows)
            return
        dicts = [dict(zip(self.param_names, r, strict=True)) for r in rows]
        if self.upsert is not None:
            conn.execute(self.upsert, dicts)
            return
        conn.execute(delete(self.table).where(self.key_where([a.key for a in actions])))
        conn.execute(insert(self.table), dicts)

    def write_deletes(self, conn: Connection, keys: list[tuple[Any, ...]]) -> None:
        for i in range(0, len(keys), 500):
            conn.execute(delete(self.table).where(self.key_where(keys[i : i + 500])))
