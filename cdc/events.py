"""Change events in Debezium's JSON envelope: building ours, parsing ours and Debezium's.

Emitted value: ``{before, after, source{version, connector, name, db, schema, table, snapshot,
txId, seq, ts_ms}, op, ts_ms}``; key: the primary-key columns as a JSON object; topic
``<prefix>.<schema>.<table>``. The parser also accepts events exactly as Debezium's PostgreSQL
connector writes them with the JSON converter, with or without the ``{schema, payload}``
wrapper; when a schema is present, Kafka Connect logical types (decimals as base64 bytes,
micro-timestamps, dates as days, ...) are decoded into Python values.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

from kitcore.jsonscan import may_hold_big_int

ENVELOPE_VERSION = "strangler-cdc-0.1"
CONNECTOR = "sqlite"
OPS = frozenset({"c", "u", "d", "r", "t"})  # "t": Debezium's truncate (no row images)
ROW_OPS = frozenset({"c", "u", "d", "r"})
EPOCH = dt.datetime(1970, 1, 1)
SNAPSHOT_FLAGS = frozenset(
    {"true", "last", "first", "first_in_data_collection", "last_in_data_collection", "incremental"}
)


class EventDecodeError(ValueError):
    """Bytes on the wire are not a change event we understand."""


@dataclass(frozen=True)
class ChangeEvent:
    """A decoded change event, whatever its wire shape was."""

    op: str
    table: str
    schema: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    source: dict[str, Any]
    ts_ms: int | None
    key: dict[str, Any] | None = None

    @property
    def snapshot(self) -> bool:
        flag = self.source.get("snapshot")
        return flag is True or flag in SNAPSHOT_FLAGS

    @property
    def row(self) -> dict[str, Any] | None:
        """The row image that identifies the row: after for c/u/r, before for d."""
        return self.before if self.op == "d" else self.after


def topic_name(prefix: str, schema: str, table: str) -> str:
    """Topic of a table, as Debezium names it."""
    return f"{prefix}.{schema}.{table}"


def now_ms() -> int:
    return int(time.time() * 1000)


def json_default(value: Any) -> Any:
    """JSON form of values a row may hold: exact decimals, ISO-8601 times, base64 bytes."""
    if isinstance(value, Decimal):
        return str(value)  # exact: a JSON float would round
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    raise TypeError(f"cannot encode {type(value).__name__} in a change event")


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), default=json_default, ensure_ascii=False)


def encode_key(key: Mapping[str, Any]) -> bytes:
    """Event key bytes: the primary-key columns, in key order."""
    return dumps(dict(key)).encode()


def source_block(
    *,
    name: str,
    db: str,
    schema: str,
    table: str,
    snapshot: str = "false",
    tx_id: int | None = None,
    seq: int | None = None,
    ts_ms: int | None = None,
    connector: str = CONNECTOR,
) -> dict[str, Any]:
    """The `source` metadata block of an event."""
    return {
        "version": ENVELOPE_VERSION,
        "connector": connector,
        "name": name,
        "db": db,
        "schema": schema,
        "table": table,
        "snapshot": snapshot,
        "txId": tx_id,
        "seq": seq,
        "ts_ms": ts_ms,
    }


def encode_value_raw(
    op: str, before_json: str | None, after_json: str | None, source_json: str, ts_ms: int
) -> bytes:
    """Event value from row images that are already JSON text (the fast capture path)."""
    if op not in ROW_OPS:
        raise ValueError(f"op must be one of c, u, d, r; got {op!r}")
    return "".join(
        (
            '{"before":',
            before_json or "null",
            ',"after":',
            after_json or "null",
            ',"source":',
            source_json,
            ',"op":"',
            op,
            '","ts_ms":',
            str(int(ts_ms)),
            "}",
        )
    ).encode()


def build_event(
    op: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    *,
    key_columns: tuple[str, ...] | list[str],
    source: Mapping[str, Any],
    ts_ms: int | None = None,
) -> tuple[bytes, bytes]:
    """Key and value bytes of one event from Python row images."""
    image = before if op == "d" else after
    if image is None:
        raise ValueError(f"op {op!r} needs a {'before' if op == 'd' else 'after'} image")
    key = {k: image[k] for k in key_columns}
    value = encode_value_raw(
        op,
        dumps(dict(before)) if before is not None else None,
        dumps(dict(after)) if after is not None else None,
        dumps(dict(source)),
        ts_ms if ts_ms is not None else now_ms(),
    )
    return encode_key(key), value


# ---------------------------------------------------------------------------------------------
# parsing (ours and Debezium's)


def _decimal_from_bytes(raw: str, scale: int) -> Decimal:
    unscaled = int.from_bytes(base64.b64decode(raw), "big", signed=True)
    return Decimal(f"{unscaled}E{-scale}")  # exact at any precision (scaleb would round at 28)


def _micros_of_nanos(value: Any) -> int:
    """Nanoseconds as microseconds, refusing to drop digits (Python times hold microseconds)."""
    micros, rest = divmod(int(value), 1000)
    if rest:
        raise ValueError(f"{value} ns has a sub-microsecond part no target time can hold")
    return micros


def _decode_logical(value: Any, fschema: Mapping[str, Any]) -> Any:
    """Decode one field value using its Kafka Connect schema (logical type name)."""
    if value is None:
        return None
    name = fschema.get("name")
    ftype = fschema.get("type")
    if name == "org.apache.kafka.connect.data.Decimal":
        scale = int((fschema.get("parameters") or {}).get("scale", 0))
        return _decimal_from_bytes(value, scale) if isinstance(value, str) else Decimal(value)
    if name == "io.debezium.data.VariableScaleDecimal":
        return _decimal_from_bytes(value["value"], int(value["scale"]))
    if name in {"io.debezium.time.Date", "org.apache.kafka.connect.data.Date"}:
        return dt.date(1970, 1, 1) + dt.timedelta(days=int(value))
    if name in {"io.debezium.time.Timestamp", "org.apache.kafka.connect.data.Timestamp"}:
        return EPOCH + dt.timedelta(milliseconds=int(value))
    if name == "io.debezium.time.MicroTimestamp":
        return EPOCH + dt.timedelta(microseconds=int(value))
    if name == "io.debezium.time.NanoTimestamp":
        return EPOCH + dt.timedelta(microseconds=_micros_of_nanos(value))
    if name == "io.debezium.time.ZonedTimestamp":
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if name in {"io.debezium.time.Time", "org.apache.kafka.connect.data.Time"}:
        return (EPOCH + dt.timedelta(milliseconds=int(value))).time()
    if name == "io.debezium.time.MicroTime":
        return (EPOCH + dt.timedelta(microseconds=int(value))).time()
    if name == "io.debezium.time.NanoTime":
        return (EPOCH + dt.timedelta(microseconds=_micros_of_nanos(value))).time()
    if ftype == "bytes" and isinstance(value, str) and name is None:
        return base64.b64decode(value)
    return value


def _decode_row(row: Any, struct_schema: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    if not isinstance(row, dict):
        raise EventDecodeError(f"row image must be an object, got {type(row).__name__}")
    try:
        if struct_schema is None:
            for v in row.values():
                if type(v) is dict:
                    break
            else:
                return row
            # Schema-less: the one self-describing logical type we can still decode.
            return {
                k: _decimal_from_bytes(v["value"], int(v["scale"]))
                if isinstance(v, dict) and set(v) == {"scale", "value"}
                else v
                for k, v in row.items()
            }
        fields = {f["field"]: f for f in struct_schema.get("fields", [])}
        return {k: _decode_logical(v, fields[k]) if k in fields else v for k, v in row.items()}
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        raise EventDecodeError(f"cannot decode row values: {exc}") from None


def _unwrap(doc: Any) -> tuple[Any, Mapping[str, Any] | None]:
    if type(doc) is dict and len(doc) == 2 and "payload" in doc and "schema" in doc:
        return doc["payload"], doc["schema"]
    return doc, None


try:  # the sink decodes every event: orjson is several times faster than json
    from orjson import loads as _orjson_loads
except ImportError:  # pragma: no cover - optional speed-up
    _orjson_loads = None


def _loads(value: bytes | str) -> Any:
    """json.loads of the text as UTF-8, the wire encoding (json.loads would guess UTF-16/32)."""
    return json.loads(value.decode() if isinstance(value, bytes) else value)


class JsonReaders(NamedTuple):
    """The JSON readers that decode event values (a seam: tests count reads through them).

    ``fast`` (orjson, several times faster) reads every event it can; its document is used
    as it is unless the text may hold an integer beyond 64 bits, which it reads as a float.
    ``exact`` (the standard library's rules) reads only text that ``fast`` refused (not JSON,
    or NaN, Infinity, numbers beyond the float range, lone surrogate escapes), or that may
    hold such an integer, or every event when there is no ``fast``.
    """

    fast: Callable[[bytes | str], Any] | None
    exact: Callable[[bytes | str], Any]


READERS = JsonReaders(_orjson_loads, _loads)


def _field_schema(schema: Mapping[str, Any] | None, name: str) -> Mapping[str, Any] | None:
    if not schema:
        return None
    for f in schema.get("fields", []):
        if f.get("field") == name:
            return f
    return None


def parse_key(key: bytes | None) -> dict[str, Any] | None:
    """Decode key bytes (ours or Debezium's, wrapped or not); None when absent or not JSON."""
    if key is None:
        return None
    try:
        doc = json.loads(key)
    except (ValueError, UnicodeDecodeError):
        return None
    payload, schema = _unwrap(doc)
    if not isinstance(payload, dict):
        return None
    try:
        return _decode_row(payload, schema)
    except EventDecodeError:
        return None


def parse_event(
    value: bytes | None, key: bytes | None = None, topic: str = ""
) -> ChangeEvent | None:
    """Decode a message value into a ChangeEvent; None for a tombstone.

    Raises EventDecodeError with a specific reason for anything else that is not an event.
    """
    decoded = decode_envelope(value, topic)
    if decoded is None:
        return None
    op, table, before, after, source, ts = decoded
    return ChangeEvent(
        op=op,
        table=table,
        schema=source.get("schema"),
        before=before,
        after=after,
        source=source,
        ts_ms=ts,
        key=parse_key(key),
    )


Envelope = tuple[str, str, dict[str, Any] | None, dict[str, Any] | None, dict[str, Any], int | None]

_PLAIN = frozenset({str, int, bool, type(None)})
_PLAIN_OK = _PLAIN.issuperset


def _fast_envelope(doc: Any, topic: str, exact_source: bool) -> Envelope | None:
    """The envelope of the common event, or None to take the general path (_decode_doc).

    Only an unwrapped document whose row images and source hold no floats or nested values
    (so orjson read them exactly), and that is valid as it stands, is answered here: exactly
    what the general path returns for it. Everything else (tombstones, Debezium's wrapper,
    truncates, errors) gets None.
    """
    if type(doc) is not dict or "payload" in doc:
        return None
    op = doc.get("op")
    source = doc.get("source")
    after = doc.get("after")
    before = doc.get("before")
    ts = doc.get("ts_ms")
    if (
        op not in OPS
        or op == "t"
        or type(source) is not dict
        or type(ts) is float
        or (
            after is not None
            and (type(after) is not dict or not _PLAIN_OK(map(type, after.values())))
        )
        or (
            before is not None
            and (type(before) is not dict or not _PLAIN_OK(map(type, before.values())))
        )
        or (
            not _PLAIN_OK(map(type, source.values()))
            if exact_source
            else type(source.get("ts_ms")) not in _PLAIN
        )
    ):
        return None
    if (after if op != "d" else before) is None:
        return None  # the general path names the missing image
    table = source.get("table") or (topic.rsplit(".", 1)[-1] if topic else None)
    if not table:
        return None
    return op, table, before, after, source, int(ts) if isinstance(ts, int) else None


def decode_envelope(
    value: bytes | str | None, topic: str = "", exact_source: bool = True
) -> Envelope | None:
    """parse_event's work without building a ChangeEvent (the sink's hot path).

    Returns (op, table, before, after, source, ts_ms), None for a tombstone; raises
    EventDecodeError with the same reasons as parse_event. Row images are always decoded
    exactly as json.loads would; with ``exact_source=False`` source values other than
    ``ts_ms`` may be read by orjson's rules (an integer beyond 64 bits as a float).
    """
    return decode_envelope_plain(value, topic, exact_source)[0]


def decode_envelope_plain(
    value: bytes | str | None,
    topic: str = "",
    exact_source: bool = True,
    readers: JsonReaders = READERS,
) -> tuple[Envelope | None, bool]:
    """decode_envelope, plus whether the common fast path answered: then the row images hold
    nothing but strings, integers, booleans and nulls (no bytes, decimals, nested values),
    which lets the sink skip checks those other values would need.

    The text is read once (see JsonReaders): only text orjson refuses, or that may hold an
    integer beyond 64 bits, is read again by the exact reader, whose errors dead letters keep.
    """
    if value is None:
        return None, False
    fast = readers.fast
    if fast is not None:
        try:
            doc = fast(value)
        except ValueError:  # orjson's JSONDecodeError: the exact reader decides, says why
            pass
        else:
            env = _fast_envelope(doc, topic, exact_source)
            if env is not None:
                return env, True
            if not may_hold_big_int(value):
                return _decode_doc(doc, topic), False
    try:
        doc = readers.exact(value)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise EventDecodeError(f"value is not JSON: {exc}") from None
    return _decode_doc(doc, topic), False


def _decode_doc(doc: Any, topic: str) -> Envelope | None:
    """The envelope of a document read exactly as json.loads reads it (any wire shape)."""
    if doc is None:
        return None
    payload, schema = _unwrap(doc)
    if not isinstance(payload, dict):
        raise EventDecodeError("event payload must be a JSON object")
    op = payload.get("op")
    if op not in OPS:
        raise EventDecodeError(f"unsupported op {op!r} (expected c, u, d, r or t)")
    source = payload.get("source") or {}
    if not isinstance(source, dict):
        raise EventDecodeError("'source' must be an object")
    table = source.get("table") or (topic.rsplit(".", 1)[-1] if topic else None)
    if not table:
        raise EventDecodeError("event names no table (source.table) and has no topic")
    if schema is None:
        before = _decode_row(payload.get("before"), None)
        after = _decode_row(payload.get("after"), None)
    else:
        before = _decode_row(payload.get("before"), _field_schema(schema, "before"))
        after = _decode_row(payload.get("after"), _field_schema(schema, "after"))
    if op == "t":
        before = after = None  # a truncate names a table, not a row
    elif op == "d" and before is None:
        raise EventDecodeError("delete event without a 'before' image")
    elif op != "d" and after is None:
        raise EventDecodeError(f"op {op!r} event without an 'after' image")
    ts = payload.get("ts_ms")
    if isinstance(ts, float):  # Infinity/NaN (the standard library reads them) have no int
        ts = int(ts) if math.isfinite(ts) else None
    return op, table, before, after, source, int(ts) if isinstance(ts, int) else None
