"""Decoder for PostgreSQL's `pgoutput` logical replication messages (protocol version 1).

Pure Python on `struct`, so the capture worker needs nothing beyond psycopg2 and the
decoder can be unit-tested on byte fixtures. Message layouts follow the PostgreSQL manual,
"Logical Replication Message Formats": every message starts with a one-byte tag; integers
are big-endian; strings are NUL-terminated; a TupleData is an Int16 column count followed,
per column, by 'n' (NULL), 'u' (unchanged TOASTed value, not sent), 't' (Int32 length +
text-format value) or 'b' (Int32 length + binary value, protocol 2+ with `binary`).

Values arrive in text format (the type's output function, run in the walsender with the
session settings the capture pins: DateStyle=ISO, TimeZone=UTC, bytea_output=hex,
extra_float_digits=3). `convert_text` turns them into Python values by type OID; the capture
uses the same function for snapshot rows (selected as ``col::text``), so snapshot and stream
values are identical by construction.
"""

from __future__ import annotations

import datetime as dt
import json
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
PG_EPOCH_MS = 946_684_800_000


class PgOutputError(ValueError):
    """Bytes that are not a pgoutput message we understand (the message says where)."""


class _Unchanged:
    """Marker for an unchanged TOASTed column: PostgreSQL did not send its value."""

    _instance: _Unchanged | None = None

    def __new__(cls) -> _Unchanged:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"

    def __reduce__(self) -> str:
        return "UNCHANGED_TOAST"


UNCHANGED_TOAST: Any = _Unchanged()


# ---------------------------------------------------------------------------------------------
# messages


@dataclass(frozen=True)
class Begin:
    final_lsn: int
    commit_ts: dt.datetime
    xid: int


@dataclass(frozen=True)
class Commit:
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_ts: dt.datetime


@dataclass(frozen=True)
class Origin:
    commit_lsn: int
    name: str


@dataclass(frozen=True)
class Column:
    name: str
    type_oid: int
    type_modifier: int
    is_key: bool  # part of the replica identity (every column under REPLICA IDENTITY FULL)


@dataclass(frozen=True)
class Relation:
    rel_id: int
    namespace: str  # '' means pg_catalog, as on the wire; see `schema`
    name: str
    replica_identity: str  # 'd' default, 'n' nothing, 'f' full, 'i' index
    columns: tuple[Column, ...]

    @property
    def schema(self) -> str:
        return self.namespace or "pg_catalog"


@dataclass(frozen=True)
class TypeInfo:
    type_oid: int
    namespace: str
    name: str


# A tuple: per column None (NULL), UNCHANGED_TOAST, str (text format) or bytes (binary format).
TupleData = tuple[Any, ...]


@dataclass(frozen=True)
class Insert:
    rel_id: int
    new: TupleData


@dataclass(frozen=True)
class Update:
    rel_id: int
    old_kind: str | None  # 'K' key columns only, 'O' whole old row (REPLICA IDENTITY FULL)
    old: TupleData | None
    new: TupleData


@dataclass(frozen=True)
class Delete:
    rel_id: int
    old_kind: str  # 'K' or 'O'
    old: TupleData


@dataclass(frozen=True)
class Truncate:
    rel_ids: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True)
class LogicalMessage:
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


PgMessage = (
    Begin
    | Commit
    | Origin
    | Relation
    | TypeInfo
    | Insert
    | Update
    | Delete
    | Truncate
    | LogicalMessage
)


def pg_timestamp(micros: int) -> dt.datetime:
    """A wire timestamp (µs since 2000-01-01 UTC) as an aware datetime."""
    return PG_EPOCH + dt.timedelta(microseconds=micros)


def format_lsn(lsn: int) -> str:
    """`0/16B3748` form of an LSN, as PostgreSQL prints it."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    """Inverse of `format_lsn`."""
    try:
        hi, lo = text.split("/")
        return (int(hi, 16) << 32) | int(lo, 16)
    except ValueError:
        raise ValueError(f"not an LSN: {text!r}") from None


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 1  # after the tag

    def _take(self, fmt: str, size: int) -> Any:
        end = self.pos + size
        if end > len(self.buf):
            raise PgOutputError(
                f"message {chr(self.buf[0])!r} truncated at byte {self.pos} "
                f"(needs {size} more, has {len(self.buf) - self.pos})"
            )
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos = end
        return value

    def u8(self) -> int:
        return self._take(">B", 1)

    def i16(self) -> int:
        return self._take(">h", 2)

    def i32(self) -> int:
        return self._take(">i", 4)

    def u32(self) -> int:
        return self._take(">I", 4)

    def i64(self) -> int:
        return self._take(">q", 8)

    def u64(self) -> int:
        return self._take(">Q", 8)

    def byte(self) -> str:
        return chr(self.u8())

    def string(self) -> str:
        end = self.buf.find(b"\x00", self.pos)
        if end < 0:
            raise PgOutputError(f"message {chr(self.buf[0])!r}: unterminated string")
        value = self.buf[self.pos : end].decode("utf-8")
        self.pos = end + 1
        return value

    def raw(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.buf):
            raise PgOutputError(f"message {chr(self.buf[0])!r}: value of {n} bytes truncated")
        value = self.buf[self.pos : end]
        self.pos = end
        return value

    def tuple_data(self) -> TupleData:
        n = self.i16()
        values: list[Any] = []
        for _ in range(n):
            kind = self.byte()
            if kind == "n":
                values.append(None)
            elif kind == "u":
                values.append(UNCHANGED_TOAST)
            elif kind == "t":
                values.append(self.raw(self.i32()).decode("utf-8"))
            elif kind == "b":
                values.append(self.raw(self.i32()))
            else:
                raise PgOutputError(f"unknown TupleData column kind {kind!r}")
        return tuple(values)

    def done(self) -> None:
        if self.pos != len(self.buf):
            raise PgOutputError(
                f"message {chr(self.buf[0])!r}: {len(self.buf) - self.pos} unexpected trailing bytes"
            )


def _begin(r: _Reader) -> Begin:
    return Begin(r.u64(), pg_timestamp(r.i64()), r.u32())


def _commit(r: _Reader) -> Commit:
    return Commit(r.u8(), r.u64(), r.u64(), pg_timestamp(r.i64()))


def _origin(r: _Reader) -> Origin:
    return Origin(r.u64(), r.string())


def _relation(r: _Reader) -> Relation:
    rel_id, namespace, name, ident = r.u32(), r.string(), r.string(), r.byte()
    columns = []
    for _ in range(r.i16()):
        flags = r.u8()
        columns.append(Column(r.string(), r.u32(), r.i32(), bool(flags & 1)))
    return Relation(rel_id, namespace, name, ident, tuple(columns))


def _type(r: _Reader) -> TypeInfo:
    return TypeInfo(r.u32(), r.string(), r.string())


def _insert(r: _Reader) -> Insert:
    rel_id = r.u32()
    if (tag := r.byte()) != "N":
        raise PgOutputError(f"insert: expected 'N' before the new tuple, got {tag!r}")
    return Insert(rel_id, r.tuple_data())


def _update(r: _Reader) -> Update:
    rel_id = r.u32()
    tag = r.byte()
    old_kind: str | None = None
    old: TupleData | None = None
    if tag in ("K", "O"):
        old_kind, old = tag, r.tuple_data()
        tag = r.byte()
    if tag != "N":
        raise PgOutputError(f"update: expected 'K', 'O' or 'N', got {tag!r}")
    return Update(rel_id, old_kind, old, r.tuple_data())


def _delete(r: _Reader) -> Delete:
    rel_id = r.u32()
    tag = r.byte()
    if tag not in ("K", "O"):
        raise PgOutputError(f"delete: expected 'K' or 'O', got {tag!r}")
    return Delete(rel_id, tag, r.tuple_data())


def _truncate(r: _Reader) -> Truncate:
    n, options = r.u32(), r.u8()
    return Truncate(tuple(r.u32() for _ in range(n)), bool(options & 1), bool(options & 2))


def _message(r: _Reader) -> LogicalMessage:
    flags = r.u8()
    lsn, prefix = r.u64(), r.string()
    return LogicalMessage(bool(flags & 1), lsn, prefix, r.raw(r.i32()))


_DECODERS: dict[int, Callable[[_Reader], Any]] = {
    ord("B"): _begin,
    ord("C"): _commit,
    ord("O"): _origin,
    ord("R"): _relation,
    ord("Y"): _type,
    ord("I"): _insert,
    ord("U"): _update,
    ord("D"): _delete,
    ord("T"): _truncate,
    ord("M"): _message,
}


def decode_message(payload: bytes | bytearray | memoryview) -> PgMessage:
    """Decode one pgoutput message (protocol version 1, non-streamed transactions)."""
    buf = bytes(payload)
    if not buf:
        raise PgOutputError("empty message")
    decoder = _DECODERS.get(buf[0])
    if decoder is None:
        raise PgOutputError(f"unknown pgoutput message type {chr(buf[0])!r}")
    reader = _Reader(buf)
    message = decoder(reader)
    reader.done()
    return message


# ---------------------------------------------------------------------------------------------
# text-format values → Python


class Oid:
    """Built-in type OIDs (pg_type.h); stable across PostgreSQL versions."""

    BOOL = 16
    BYTEA = 17
    CHAR = 18
    NAME = 19
    INT8 = 20
    INT2 = 21
    INT4 = 23
    TEXT = 25
    OID = 26
    JSON = 114
    XML = 142
    FLOAT4 = 700
    FLOAT8 = 701
    BPCHAR = 1042
    VARCHAR = 1043
    DATE = 1082
    TIME = 1083
    TIMESTAMP = 1114
    TIMESTAMPTZ = 1184
    INTERVAL = 1186
    TIMETZ = 1266
    NUMERIC = 1700
    UUID = 2950
    JSONB = 3802


def _bool(text: str) -> bool:
    if text in ("t", "true"):
        return True
    if text in ("f", "false"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _numeric(text: str) -> Decimal:
    # 'NaN', 'Infinity' and '-Infinity' (PostgreSQL 14+) are valid Decimals too.
    try:
        return Decimal(text)
    except InvalidOperation:
        raise ValueError(f"not a numeric: {text!r}") from None


def _bytea(text: str) -> bytes:
    if text.startswith("\\x"):
        return bytes.fromhex(text[2:])
    # bytea_output = escape: printable bytes as is, \\ for a backslash, \ooo octal escapes
    out = bytearray()
    i = 0
    raw = text.encode("latin-1")
    while i < len(raw):
        c = raw[i]
        if c == 0x5C:
            if raw[i + 1 : i + 2] == b"\\":
                out.append(0x5C)
                i += 2
            else:
                out.append(int(raw[i + 1 : i + 4], 8))
                i += 4
        else:
            out.append(c)
            i += 1
    return bytes(out)


def _split_bc(text: str) -> str:
    if text.endswith(" BC"):
        raise ValueError(f"{text!r}: dates before year 1 do not fit a Python date")
    return text


def _timestamp(text: str) -> dt.datetime:
    if text == "infinity":
        return dt.datetime.max
    if text == "-infinity":
        return dt.datetime.min
    return dt.datetime.fromisoformat(_split_bc(text))


def _timestamptz(text: str) -> dt.datetime:
    if text == "infinity":
        return dt.datetime.max.replace(tzinfo=dt.UTC)
    if text == "-infinity":
        return dt.datetime.min.replace(tzinfo=dt.UTC)
    value = dt.datetime.fromisoformat(_split_bc(text))
    if value.tzinfo is None:  # only when the session's TimeZone was not pinned
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def _date(text: str) -> dt.date:
    if text == "infinity":
        return dt.date.max
    if text == "-infinity":
        return dt.date.min
    return dt.date.fromisoformat(_split_bc(text))


def _time(text: str) -> dt.time:
    return dt.time.fromisoformat("00:00:00" if text == "24:00:00" else text)


def _text(text: str) -> str:
    return text


CONVERTERS: dict[int, Callable[[str], Any]] = {
    Oid.BOOL: _bool,
    Oid.BYTEA: _bytea,
    Oid.INT2: int,
    Oid.INT4: int,
    Oid.INT8: int,
    Oid.OID: int,
    Oid.NUMERIC: _numeric,
    Oid.FLOAT4: float,
    Oid.FLOAT8: float,
    Oid.TEXT: _text,
    Oid.VARCHAR: _text,
    Oid.BPCHAR: _text,
    Oid.CHAR: _text,
    Oid.NAME: _text,
    Oid.DATE: _date,
    Oid.TIME: _time,
    Oid.TIMESTAMP: _timestamp,
    Oid.TIMESTAMPTZ: _timestamptz,
    Oid.UUID: uuid.UUID,
    Oid.JSON: json.loads,
    Oid.JSONB: json.loads,
}


def convert_text(type_oid: int, value: Any) -> Any:
    """A column value from the wire (or ``col::text``) as a Python value.

    NULL → None and the unchanged-TOAST marker pass through. Types without a converter
    (arrays, intervals, enums, domains, geometric types, ...) stay their text form, which is
    exactly what PostgreSQL prints. A value that does not fit a Python type (a BC date, a
    timestamp past year 9999) also stays text rather than failing the whole stream.
    """
    if value is None or value is UNCHANGED_TOAST:
        return value
    if isinstance(value, bytes):  # binary format: not requested by the capture
        return value
    fn = CONVERTERS.get(type_oid)
    if fn is None:
        return value
    try:
        return fn(value)
    except (ValueError, OverflowError):
        return value


def tuple_to_row(relation: Relation, data: TupleData, only_keys: bool = False) -> dict[str, Any]:
    """A TupleData as ``{column: python value}`` by the relation's column types.

    `only_keys` keeps just the replica-identity columns (for 'K' old tuples, whose other
    columns are sent as NULL and mean "not known", not "NULL").
    """
    if len(data) != len(relation.columns):
        raise PgOutputError(
            f"relation {relation.schema}.{relation.name}: tuple has {len(data)} columns, "
            f"relation message announced {len(relation.columns)}"
        )
    return {
        col.name: convert_text(col.type_oid, value)
        for col, value in zip(relation.columns, data, strict=True)
        if not only_keys or col.is_key
    }


# ---------------------------------------------------------------------------------------------
# encoders (used by unit tests to build byte fixtures, and documentation of the layout)


def _cstr(s: str) -> bytes:
    return s.encode() + b"\x00"


def encode_tuple(values: TupleData) -> bytes:
    """TupleData bytes: None → 'n', UNCHANGED_TOAST → 'u', str → 't', bytes → 'b'."""
    out = [struct.pack(">h", len(values))]
    for v in values:
        if v is None:
            out.append(b"n")
        elif v is UNCHANGED_TOAST:
            out.append(b"u")
        elif isinstance(v, bytes):
            out.append(b"b" + struct.pack(">i", len(v)) + v)
        else:
            raw = str(v).encode()
            out.append(b"t" + struct.pack(">i", len(raw)) + raw)
    return b"".join(out)


def _micros(ts: dt.datetime) -> int:
    return (ts - PG_EPOCH) // dt.timedelta(microseconds=1)


def encode_message(msg: PgMessage) -> bytes:
    """The wire bytes of a message (inverse of `decode_message`)."""
    if isinstance(msg, Begin):
        return b"B" + struct.pack(">QqI", msg.final_lsn, _micros(msg.commit_ts), msg.xid)
    if isinstance(msg, Commit):
        return b"C" + struct.pack(
            ">BQQq", msg.flags, msg.commit_lsn, msg.end_lsn, _micros(msg.commit_ts)
        )
    if isinstance(msg, Origin):
        return b"O" + struct.pack(">Q", msg.commit_lsn) + _cstr(msg.name)
    if isinstance(msg, Relation):
        cols = b"".join(
            struct.pack(">B", int(c.is_key))
            + _cstr(c.name)
            + struct.pack(">Ii", c.type_oid, c.type_modifier)
            for c in msg.columns
        )
        return (
            b"R"
            + struct.pack(">I", msg.rel_id)
            + _cstr(msg.namespace)
            + _cstr(msg.name)
            + msg.replica_identity.encode()
            + struct.pack(">h", len(msg.columns))
            + cols
        )
    if isinstance(msg, TypeInfo):
        return b"Y" + struct.pack(">I", msg.type_oid) + _cstr(msg.namespace) + _cstr(msg.name)
    if isinstance(msg, Insert):
        return b"I" + struct.pack(">I", msg.rel_id) + b"N" + encode_tuple(msg.new)
    if isinstance(msg, Update):
        old = b"" if msg.old is None else (msg.old_kind or "O").encode() + encode_tuple(msg.old)
        return b"U" + struct.pack(">I", msg.rel_id) + old + b"N" + encode_tuple(msg.new)
    if isinstance(msg, Delete):
        return b"D" + struct.pack(">I", msg.rel_id) + msg.old_kind.encode() + encode_tuple(msg.old)
    if isinstance(msg, Truncate):
        options = (1 if msg.cascade else 0) | (2 if msg.restart_identity else 0)
        return (
            b"T"
            + struct.pack(">IB", len(msg.rel_ids), options)
            + b"".join(struct.pack(">I", r) for r in msg.rel_ids)
        )
    if isinstance(msg, LogicalMessage):
        return (
            b"M"
            + struct.pack(">BQ", int(msg.transactional), msg.lsn)
            + _cstr(msg.prefix)
            + struct.pack(">i", len(msg.content))
            + msg.content
        )
    raise TypeError(f"not a pgoutput message: {type(msg).__name__}")
