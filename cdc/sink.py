"""The sink: applies change events to a service database through the mapping.

Exactly-once in effect: the rows of a batch, its dead letters and the consumed offsets
(``_cdc_sink_offsets``) are written in ONE target transaction; on start the sink seeks the
consumer to the stored offsets, so whatever the transport redelivers is skipped, and a replay
of any stretch of the log only re-applies full-row upserts/deletes in log order (idempotent).

Per-key order: a key always lands on one partition and a batch is collapsed to the last event
per target key before it is written, which is the state the events in order would produce.
A batch that fails in the database (constraint violation, bad value) is rolled back and
retried event by event, each in its own transaction with its offset, so the poison event is
isolated into ``_cdc_dead_letters`` and the rest applies.

Origin tagging: with ``SinkConfig.origin_tag`` (the default) every sink transaction inserts a
row into ``_cdc_apply_marker`` first and deletes it before commit, so capture triggers on the
target tables (cdc/capture/sqlite.py) skip the sink's own writes and CDC running both ways
(forward and reverse after write cut-over) never loops an event back. On PostgreSQL the
sink's commits carry a replication origin instead (``pg_origin_name``), which the pgoutput
capture skips with ``PgCaptureConfig(origin="none")``.

PostgreSQL rights: every apply transaction sets ``session_replication_role = replica``, as
PostgreSQL's own logical replication does, which takes a superuser or, on PostgreSQL 15+,
``GRANT SET ON PARAMETER session_replication_role``; the origin takes a superuser or EXECUTE
on the origin functions. Building a Sink checks both, so a role without them fails at once,
not at the first apply: SinkPermissionError names the parameter and its remedies (the
origin's own permission error comes from creating it, ensure_pg_origin).
"""

from __future__ import annotations

import base64
import datetime as dt
import gc
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from itertools import groupby
from operator import itemgetter
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    delete,
    func,
    insert,
    inspect,
    or_,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from cdc.coerce import coercer
from cdc.events import READERS, EventDecodeError, JsonReaders, decode_envelope_plain, now_ms
from cdc.mapping import MappingError, MappingSpec, TableMapping
from cdc.ports import Consumer, Message, OutgoingMessage, Producer, TopicPartition, Transport
from cdc.retry import Backoff, TransientDatabaseError, sqlstate, transient_reason
from cdc.toast import (
    any_unavailable,
    may_hold_placeholder,
    plain_row_may_hold,
    unavailable_columns,
)

_log = logging.getLogger("cdc.sink")
SINK_OFFSETS = "_cdc_sink_offsets"
DEAD_LETTERS = "_cdc_dead_letters"
APPLY_MARKER = "_cdc_apply_marker"  # same name as cdc.capture.sqlite.APPLY_MARKER
DLQ_SUFFIX = ".dlq"  # dead-letter topic = <topic>.dlq (same as cdc.transport.kafka.dlq_topic)
DEAD_LETTER_STORES = ("table", "topic")
_meta = MetaData()
sink_offsets = Table(
    SINK_OFFSETS,
    _meta,
    Column("group", String(200), primary_key=True),
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True, autoincrement=False),
    Column("next_offset", BigInteger, nullable=False),
    Column("last_ts_ms", BigInteger),
    Column("updated_ms", BigInteger),
)
dead_letters = Table(
    DEAD_LETTERS,
    _meta,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("group", String(200), nullable=False),
    Column("topic", String(255), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("key", LargeBinary),
    Column("value", LargeBinary),
    Column("reason", Text, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
)
apply_marker = Table(APPLY_MARKER, _meta, Column("origin", String(200), primary_key=True))


class SinkError(RuntimeError):
    """The sink cannot start: the target schema does not fit the mapping, or (a
    SinkPermissionError) the target role lacks a right every apply needs."""


class SinkPermissionError(SinkError):
    """The target database role may not do what every apply transaction does."""


class UnavailableRowError(SQLAlchemyError):
    """An event left columns out (unchanged-TOAST placeholder) and the target has no row to
    complete: the row cannot be rebuilt, so the event is dead-lettered (apply-time failure)."""


def ensure_sink_tables(engine: Engine) -> None:
    """Create the sink's bookkeeping tables in the target database when absent."""
    _meta.create_all(engine, checkfirst=True)


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

    Every apply transaction sets it to ``replica`` (see _pg_apply_transaction), which takes a
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
def _pg_apply_transaction(engine: Engine, origin: str | None) -> Iterator[Connection]:
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


@dataclass(frozen=True)
class SinkConfig:
    group: str
    topics: tuple[str, ...]
    batch_size: int = 2000
    poll_timeout_s: float = 0.2
    commit_to_transport: bool = True
    origin_tag: bool = True
    # where dead letters go: "table" (_cdc_dead_letters in the target DB, in the batch's
    # transaction) or "topic" (<topic>.dlq on the transport, acknowledged before the commit)
    dead_letter_store: str = "table"

    def __post_init__(self) -> None:
        if not self.group:
            raise ValueError("group must be a non-empty name")
        if self.dead_letter_store not in DEAD_LETTER_STORES:
            raise ValueError(f"dead_letter_store must be one of {DEAD_LETTER_STORES}")
        if not self.topics:
            raise ValueError("topics must name at least one topic")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")


@dataclass
class BatchResult:
    applied: int = 0
    deleted: int = 0
    dead: int = 0
    skipped: int = 0
    row_by_row: bool = False
    retrying: str | None = None  # set: the batch waits for a retry (why, since when)


# One of each per event: NamedTuples, which the hot path builds with tuple.__new__ (no
# Python-level __init__ call), several times cheaper than a dataclass.
class _Action(NamedTuple):
    kind: str  # "upsert" | "delete" | "patch" | "truncate"
    mapping: TableMapping
    key: tuple[Any, ...]
    row: tuple[Any, ...] | None = None  # _TargetTable.prepare() parameters, column order
    patch: dict[str, Any] | None = None  # "patch": coerced target values the event carries
    after_delete: bool = False  # "patch" collapsed onto a delete: the row is gone


class _Decoded(NamedTuple):
    msg: Message
    actions: list[_Action]
    reason: str | None = None  # set: a dead letter
    ts_ms: int | None = None


_new = tuple.__new__
_topic_partition = itemgetter(0, 1)  # of a Message
_offset = itemgetter(2)


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Hold off the cyclic garbage collector while one batch is polled and applied.

    A batch allocates a dozen containers per event (messages, decoded documents, row tuples,
    actions) that live until the batch is written and form no cycles, so refcounting frees
    them all. With the collector on, every 700 allocations start a collection that walks the
    whole live batch again and promotes it into older generations that get walked again: a
    third of the sink's CPU time on a snapshot. Whatever cyclic garbage a batch does leave
    (from the database driver, say) is collected once the collector runs again after it.
    """
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


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


class _TargetTable:
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

    def write_upserts(self, conn: Connection, actions: Sequence[_Action]) -> None:
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


class Sink:
    """Consumes change events from the transport and applies them to one target database.

    Built, it checks what every apply needs (the target tables and columns, SinkError; on
    PostgreSQL the role's rights), so a sink that could not apply fails at once.
    """

    # reads each event value once (cdc.events.JsonReaders); tests swap in counting readers
    json_readers: JsonReaders = READERS

    def __init__(
        self,
        engine: Engine,
        mapping: MappingSpec,
        transport: Transport,
        config: SinkConfig,
    ) -> None:
        self.engine = engine
        self.mapping = mapping
        self.transport = transport
        self.config = config
        self.consumer: Consumer | None = None
        self._dlq_producer: Producer | None = None
        self._targets: dict[str, _TargetTable] = {}
        self._pending: list[Message] | None = None  # a batch waiting for a retry
        self._backoff = Backoff()
        self.last_batch_size = 0
        if engine.dialect.name == "postgresql":
            check_pg_replica_role(engine)  # before anything is created: fail fast, clearly
        ensure_sink_tables(engine)
        for tm in mapping.tables:
            self._targets[tm.source] = _TargetTable(engine, tm)
        self.pg_origin: str | None = None
        if config.origin_tag and engine.dialect.name == "postgresql":
            self.pg_origin = ensure_pg_origin(engine, pg_origin_name(engine, config.group))

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A target transaction marked as the sink's own (see origin tagging above)."""
        if self.engine.dialect.name == "postgresql":
            with _pg_apply_transaction(self.engine, self.pg_origin) as conn:
                yield conn
            return
        with self.engine.begin() as conn:
            if self.config.origin_tag:
                conn.execute(insert(apply_marker).values(origin=self.config.group))
            yield conn
            if self.config.origin_tag:
                conn.execute(delete(apply_marker).where(apply_marker.c.origin == self.config.group))

    # -- lifecycle
    def stored_offsets(self) -> dict[TopicPartition, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    sink_offsets.c.topic, sink_offsets.c.partition, sink_offsets.c.next_offset
                ).where(sink_offsets.c.group == self.config.group)
            ).all()
        return {TopicPartition(t, p): o for t, p, o in rows}

    def start(self) -> None:
        """Open the consumer and seek it to the offsets stored in the target database."""
        self.consumer = self.transport.consumer(self.config.group, self.config.topics)
        stored = {
            tp: o for tp, o in self.stored_offsets().items() if tp.topic in self.config.topics
        }
        if stored:
            self.consumer.seek(stored)

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None
        if self._dlq_producer is not None:
            self._dlq_producer.close()
            self._dlq_producer = None

    # -- decoding
    def _decode(self, msg: Message) -> _Decoded:
        value = msg.value
        try:
            # the key is in the row image; of the source only table and ts_ms are used
            env, plain = decode_envelope_plain(value, msg.topic, False, self.json_readers)
        except EventDecodeError as exc:
            return _Decoded(msg, [], f"undecodable event: {exc}")
        if env is None:
            return _Decoded(msg, [])  # tombstone: nothing to apply
        op, table, before, after, source, ts_ms = env
        source_ts = source.get("ts_ms")
        ts = source_ts if isinstance(source_ts, int) else ts_ms
        if plain:  # only str/int/bool/None values: only a scalar spelling is possible
            placeholders = after is not None and plain_row_may_hold(after)
        else:
            placeholders = may_hold_placeholder(value)
        try:
            actions = self._actions(op, table, before, after, placeholders)
        except MappingError as exc:
            return _Decoded(msg, [], f"mapping failed: {exc}", ts)
        return _new(_Decoded, (msg, actions, None, ts))

    def _actions(
        self,
        op: str,
        table: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        placeholders: bool = True,
    ) -> list[_Action]:
        target = self._targets.get(table)
        if target is None:
            raise MappingError(
                f"unknown table {table!r}: no mapping in service {self.mapping.service!r}"
            )
        tm = target.mapping
        if op == "d":
            assert before is not None
            return [_Action("delete", tm, target.coerce_key(target.target_key(before)))]
        if op == "t":
            return [_Action("truncate", tm, ())]
        assert after is not None
        if placeholders and any_unavailable(after):
            return self._patch_actions(op, target, before, after)
        if target.matches is not None and not target.matches(after):
            tm.check_drift(after)
            key = target.coerce_key(target.target_key(after))
            upsert = _Action("delete", tm, key)
        else:
            key, row = target.prepare(after)
            upsert = _new(_Action, ("upsert", tm, key, row, None, False))
        if op != "u" or before is None:
            return [upsert]
        actions = self._rekey_deletes(op, target, before, key)
        actions.append(upsert)
        return actions

    @staticmethod
    def _rekey_deletes(
        op: str, target: _TargetTable, before: dict[str, Any] | None, key: tuple[Any, ...]
    ) -> list[_Action]:
        """An update that moved the row to another target key first deletes the old key."""
        if op != "u" or before is None:
            return []
        try:
            old_key = target.coerce_key(target.target_key(before))
        except MappingError:
            return []
        return [] if old_key == key else [_Action("delete", target.mapping, old_key)]

    def _patch_actions(
        self,
        op: str,
        target: _TargetTable,
        before: dict[str, Any] | None,
        after: dict[str, Any],
    ) -> list[_Action]:
        """Row image with unchanged-TOAST placeholders: update only the columns it carries,
        so the stored values of the others stay (applied as an UPDATE of an existing row)."""
        tm = target.mapping
        gone = unavailable_columns(after)
        needs = {c.target: set(c.sources) for c in tm.columns}
        for k in tm.key:
            if needs.get(k, set()) & gone:
                raise MappingError(
                    f"table {tm.source!r}: key column {k!r} has the unavailable-value placeholder"
                )
        filtered = {f.column for f in tm.filters} & gone
        if filtered:
            raise MappingError(
                f"table {tm.source!r}: filter column(s) {', '.join(sorted(filtered))} unavailable "
                "(unchanged TOAST); set REPLICA IDENTITY FULL on the source table"
            )
        key = target.coerce_key(target.target_key(after))
        actions = self._rekey_deletes(op, target, before, key)
        if target.matches is not None and not target.matches(after):
            tm.check_drift(after)
            actions.append(_Action("delete", tm, key))
            return actions
        values = target.coerce(
            {
                c.target: c.apply(after, tm.source)
                for c in tm.columns
                if c.target not in tm.key and not needs[c.target] & gone
            }
        )
        actions.append(_Action("patch", tm, key, patch=values))
        return actions

    def _merge_patch(self, prev: _Action, patch: _Action) -> _Action:
        """`patch` applied on top of the earlier action of the same key in one batch."""
        assert patch.patch is not None
        if prev.kind == "upsert" and prev.row is not None:
            target = self._targets[prev.mapping.source]
            row = list(prev.row)
            for name, value in patch.patch.items():
                j = target.param_names.index(name)
                bind = target.binds[j]
                row[j] = bind(value) if bind is not None and value is not None else value
            return _Action("upsert", prev.mapping, prev.key, tuple(row))
        if prev.kind == "patch" and prev.patch is not None:
            merged = {**prev.patch, **patch.patch}
            return _Action(
                "patch", prev.mapping, prev.key, patch=merged, after_delete=prev.after_delete
            )
        return _Action("patch", patch.mapping, patch.key, patch=patch.patch, after_delete=True)

    def _write_patch(self, conn: Connection, action: _Action) -> None:
        target = self._targets[action.mapping.source]
        where = target.key_where([action.key])
        if action.after_delete:
            found = 0
        elif action.patch:
            found = conn.execute(update(target.table).where(where).values(**action.patch)).rowcount
        else:  # only unavailable columns changed: the row just has to exist
            found = conn.execute(select(func.count()).select_from(target.table).where(where))
            found = int(found.scalar() or 0)
        if not found:
            raise UnavailableRowError(
                f"{action.mapping.target} key {action.key!r}: the event has unchanged-TOAST "
                "placeholders (__debezium_unavailable_value) but the target has no row to keep "
                "those values from; set REPLICA IDENTITY FULL on the source table and re-snapshot "
                "or retry after the row exists"
            )

    def _store_dead(self, conn: Connection, dead: Sequence[tuple[Message, str]]) -> None:
        """Dead letters into the target table (same transaction) or to <topic>.dlq."""
        if self.config.dead_letter_store == "table":
            conn.execute(insert(dead_letters), [self._dead_row(m, r) for m, r in dead])
            return
        if self._dlq_producer is None:
            self._dlq_producer = self.transport.producer()
        self._dlq_producer.send_batch(
            [
                OutgoingMessage(
                    m.topic + DLQ_SUFFIX, m.key, encode_dead_letter(self._dead_row(m, r))
                )
                for m, r in dead
            ]
        )

    # -- applying
    def _write_actions(self, conn: Connection, actions: Iterable[_Action]) -> tuple[int, int]:
        """Write actions keeping their order, batching consecutive runs of one kind/table."""
        upserts = deletes = 0
        run: list[_Action] = []

        def flush() -> None:
            nonlocal upserts, deletes
            if not run:
                return
            target = self._targets[run[0].mapping.source]
            if run[0].kind == "upsert":
                target.write_upserts(conn, run)
                upserts += len(run)
            elif run[0].kind == "patch":
                for a in run:
                    self._write_patch(conn, a)
                upserts += len(run)
            elif run[0].kind == "truncate":
                deletes += conn.execute(delete(target.table)).rowcount or 0
            else:
                target.write_deletes(conn, [a.key for a in run])
                deletes += len(run)
            run.clear()

        kind, mapping = None, None
        append = run.append
        for a in actions:
            if a.kind != kind or a.mapping is not mapping:
                flush()
                kind, mapping = a.kind, a.mapping
            append(a)
        flush()
        return upserts, deletes

    def _write_offsets(
        self, conn: Connection, msgs: Sequence[Message], ts: int | None
    ) -> dict[TopicPartition, int]:
        ends: dict[tuple[str, int], int] = {}
        # A poll returns each partition's messages as one run: one max() per run, in C.
        for tp, run in groupby(msgs, _topic_partition):
            end = max(map(_offset, run)) + 1
            if end > ends.get(tp, 0):
                ends[tp] = end
        nxt = {TopicPartition(t, p): o for (t, p), o in ends.items()}
        now = now_ms()
        for tp, off in nxt.items():
            values = {"next_offset": off, "updated_ms": now}
            if ts is not None:
                values["last_ts_ms"] = ts
            res = conn.execute(
                update(sink_offsets)
                .where(
                    sink_offsets.c.group == self.config.group,
                    sink_offsets.c.topic == tp.topic,
                    sink_offsets.c.partition == tp.partition,
                )
                .values(**values)
            )
            if res.rowcount == 0:
                conn.execute(
                    insert(sink_offsets).values(
                        group=self.config.group, topic=tp.topic, partition=tp.partition, **values
                    )
                )
        return nxt

    def _dead_row(self, msg: Message, reason: str) -> dict[str, Any]:
        return {
            "group": self.config.group,
            "topic": msg.topic,
            "partition": msg.partition,
            "offset": msg.offset,
            "key": msg.key,
            "value": msg.value,
            "reason": reason[:4000],
            "created_ms": now_ms(),
            "attempts": 0,
        }

    def apply(
        self, msgs: Sequence[Message], resumed: bool = False
    ) -> tuple[BatchResult, dict[TopicPartition, int]]:
        """Apply one polled batch; returns counts and the next offsets now stored.

        A database failure that says nothing about the events (cdc.retry) raises
        TransientDatabaseError and dead-letters nothing; `resumed` applies such a batch again,
        less the events the target already stored (a row-by-row pass may have committed some).
        """
        try:
            if resumed:
                msgs = self._unapplied(msgs)
            if not msgs:
                return BatchResult(), {}
            with _no_cyclic_gc():
                return self._apply(msgs)
        except SQLAlchemyError as exc:
            reason = transient_reason(exc)
            if reason is None:
                raise
            raise TransientDatabaseError(reason) from exc

    def _unapplied(self, msgs: Sequence[Message]) -> list[Message]:
        stored = self.stored_offsets()
        return [m for m in msgs if m.offset >= stored.get(TopicPartition(m.topic, m.partition), 0)]

    def _apply(self, msgs: Sequence[Message]) -> tuple[BatchResult, dict[TopicPartition, int]]:
        decode = self._decode
        decoded = [decode(m) for m in msgs]
        ts: int | None = None
        dead: list[_Decoded] = []
        skipped = 0
        # Collapse: the last action per (target table, key) decides the final state; the dict
        # keeps keys in the order of their last action (pop + re-insert moves a key to the end).
        last: dict[tuple[str, tuple[Any, ...]], _Action] = {}
        for d in decoded:
            _msg, d_actions, reason, d_ts = d
            if d_ts is not None and (ts is None or d_ts > ts):
                ts = d_ts
            if reason:
                dead.append(d)
                continue
            if not d_actions:
                skipped += 1
                continue
            for a in d_actions:
                k = (a.mapping.target, a.key)
                if k in last:
                    if a.kind == "patch":
                        a = self._merge_patch(last[k], a)
                    del last[k]
                elif a.kind == "truncate":  # earlier actions on the table are wiped anyway
                    for gone in [g for g in last if g[0] == a.mapping.target]:
                        del last[gone]
                last[k] = a
        actions = list(last.values())
        result = BatchResult(dead=len(dead), skipped=skipped)
        try:
            with self.begin() as conn:
                result.applied, result.deleted = self._write_actions(conn, actions)
                if dead:
                    self._store_dead(conn, [(d.msg, d.reason or "") for d in dead])
                offsets = self._write_offsets(conn, msgs, ts)
            return result, offsets
        except SQLAlchemyError as exc:
            if transient_reason(exc):
                raise
            return self._apply_one_by_one(decoded)

    def _apply_one_by_one(
        self, decoded: list[_Decoded]
    ) -> tuple[BatchResult, dict[TopicPartition, int]]:
        result = BatchResult(row_by_row=True)
        offsets: dict[TopicPartition, int] = {}
        for d in decoded:
            reason = d.reason
            if reason is None:
                try:
                    with self.begin() as conn:
                        up, de = self._write_actions(conn, d.actions)
                        offsets.update(self._write_offsets(conn, [d.msg], d.ts_ms))
                    result.applied += up
                    result.deleted += de
                    if not d.actions:
                        result.skipped += 1
                    continue
                except SQLAlchemyError as exc:
                    reason = _rejection(exc)
            with self.begin() as conn:
                self._store_dead(conn, [(d.msg, reason)])
                offsets.update(self._write_offsets(conn, [d.msg], d.ts_ms))
            result.dead += 1
        return result, offsets

    # -- loop
    @property
    def retrying(self) -> str | None:
        """Why the sink is waiting to apply its batch again (None: it is not)."""
        return self._backoff.describe() if self._pending is not None else None

    def run_once(self) -> BatchResult:
        """Poll one batch (or take the one waiting for a retry), apply it, and tell the
        transport (best effort). A transient database failure keeps the batch for a retry
        after a backoff; a retry not yet due waits at most a poll timeout and returns."""
        if self.consumer is None:
            self.start()
        assert self.consumer is not None
        pending = self._pending
        if pending is not None and (wait := self._backoff.wait_s()) > 0:
            time.sleep(min(wait, self.config.poll_timeout_s))
            return BatchResult(retrying=self.retrying)
        with _no_cyclic_gc():
            if pending is not None:
                msgs = pending
            else:
                msgs = self.consumer.poll(self.config.batch_size, self.config.poll_timeout_s)
            self.last_batch_size = len(msgs)
            try:
                result, offsets = self.apply(msgs, resumed=pending is not None)
            except TransientDatabaseError as exc:
                self._pending = list(msgs)
                self._backoff.failed(str(exc))
                _log.warning("sink %s: %s", self.config.group, self.retrying)
                return BatchResult(retrying=self.retrying)
            if pending is not None:
                _log.info(
                    "sink %s: applied after %d retries", self.config.group, self._backoff.attempts
                )
                self._pending, self._backoff = None, Backoff()
            del msgs  # freed while the collector still waits: it never has to walk them
        if offsets and self.config.commit_to_transport:
            try:
                self.consumer.commit(offsets)
            except Exception:  # noqa: BLE001 - the target DB holds the authoritative offsets
                pass
        return result

    def run(
        self, stop: threading.Event, on_batch: Callable[[BatchResult, int], None] | None = None
    ) -> None:
        """Loop until `stop` is set."""
        while not stop.is_set():
            result = self.run_once()
            if on_batch and self.last_batch_size:
                on_batch(result, self.last_batch_size)

    def drain(self, idle_polls: int = 2, timeout_s: float = 30.0) -> int:
        """Apply until `idle_polls` consecutive polls return nothing; returns messages seen."""
        seen, idle = 0, 0
        deadline = time.monotonic() + timeout_s
        while idle < idle_polls and time.monotonic() < deadline:
            if self.run_once().retrying is not None:
                idle = 0
                continue
            seen += self.last_batch_size
            idle = idle + 1 if self.last_batch_size == 0 else 0
        return seen


def _rejection(exc: SQLAlchemyError) -> str:
    """The dead letter's reason for an error about the event; a transient one is re-raised
    (it says nothing about the event, cdc.retry)."""
    if transient_reason(exc):
        raise exc
    orig = getattr(exc, "orig", None) or exc
    return f"database rejected the event: {orig.__class__.__name__}: {orig}"


# ---------------------------------------------------------------------------------------------
# dead letters


@dataclass(frozen=True)
class DeadLetter:
    id: int
    group: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    created_ms: int
    attempts: int


def encode_dead_letter(row: dict[str, Any]) -> bytes:
    """Value of a <topic>.dlq message: the `_cdc_dead_letters` row as JSON (bytes in base64)."""
    doc = dict(row)
    for name in ("key", "value"):
        raw = doc.get(name)
        doc[name] = None if raw is None else base64.b64encode(bytes(raw)).decode()
    return json.dumps(doc, separators=(",", ":")).encode()


def decode_dead_letter(value: bytes, dlq_offset: int) -> DeadLetter:
    """A <topic>.dlq message back as a DeadLetter (id = its offset in the dead-letter topic)."""
    doc = json.loads(value)
    for name in ("key", "value"):
        raw = doc.get(name)
        doc[name] = None if raw is None else base64.b64decode(raw)
    return DeadLetter(id=dlq_offset, **doc)


def list_dead_letters(
    engine: Engine, group: str | None = None, limit: int = 100
) -> list[DeadLetter]:
    if not inspect(engine).has_table(DEAD_LETTERS):
        return []
    q = select(dead_letters).order_by(dead_letters.c.id).limit(limit)
    if group:
        q = q.where(dead_letters.c.group == group)
    with engine.connect() as conn:
        return [DeadLetter(**dict(r._mapping)) for r in conn.execute(q)]


def count_dead_letters(engine: Engine, group: str | None = None) -> int:
    if not inspect(engine).has_table(DEAD_LETTERS):
        return 0
    q = select(func.count()).select_from(dead_letters)
    if group:
        q = q.where(dead_letters.c.group == group)
    with engine.connect() as conn:
        return int(conn.execute(q).scalar() or 0)


def drop_dead_letters(
    engine: Engine, ids: Iterable[int] | None = None, group: str | None = None
) -> int:
    """Delete dead letters (all of a group, or by id); returns how many."""
    stmt = delete(dead_letters)
    if ids is not None:
        stmt = stmt.where(dead_letters.c.id.in_(list(ids)))
    if group:
        stmt = stmt.where(dead_letters.c.group == group)
    with engine.begin() as conn:
        return conn.execute(stmt).rowcount


def retry_dead_letters(sink: Sink, ids: Iterable[int] | None = None) -> tuple[int, int]:
    """Re-apply dead letters through the (possibly fixed) mapping and target schema.

    A success deletes the dead letter in the same transaction; a failure records the new
    reason. The event is applied as it was: retry soon, before newer changes to the same
    row, or compare with `kit cdc verify` afterwards. Returns (applied, still_failing).
    """
    letters = list_dead_letters(sink.engine, sink.config.group, limit=1_000_000)
    if ids is not None:
        wanted = set(ids)
        letters = [dl for dl in letters if dl.id in wanted]
    ok = failed = 0
    for dl in letters:
        msg = Message(dl.topic, dl.partition, dl.offset, dl.key, dl.value, dl.created_ms)
        d = sink._decode(msg)
        reason = d.reason
        if reason is None:
            try:
                with sink.begin() as conn:
                    sink._write_actions(conn, d.actions)
                    conn.execute(delete(dead_letters).where(dead_letters.c.id == dl.id))
                ok += 1
                continue
            except SQLAlchemyError as exc:
                reason = _rejection(exc)
        with sink.begin() as conn:
            conn.execute(
                update(dead_letters)
                .where(dead_letters.c.id == dl.id)
                .values(reason=reason, attempts=dead_letters.c.attempts + 1)
            )
        failed += 1
    return ok, failed
