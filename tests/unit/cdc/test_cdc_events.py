"""The event envelope: what we emit (validated against the JSON Schema) and what we parse."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import jsonschema
import pytest
from sqlalchemy import text

from cdc.capture.sqlite import CaptureConfig, CaptureWorker, enable_capture, request_snapshot
from cdc.events import (
    EventDecodeError,
    build_event,
    parse_event,
    parse_key,
    source_block,
    topic_name,
)
from cdc.schema import load_schema
from cdc.transport.embedded import EmbeddedLog, EmbeddedLogConfig
from tests.unit.cdc import debezium_samples as dbz
from tests.unit.cdc.synthetic import insert_product, make_source


def test_topic_is_prefix_schema_table() -> None:
    assert topic_name("monolith", "main", "products") == "monolith.main.products"


def test_built_event_round_trips_through_the_parser() -> None:
    src = source_block(name="m", db="shop", schema="main", table="products", seq=7, ts_ms=5)
    key, value = build_event(
        "u",
        {"id": 1, "p": Decimal("1.50")},
        {"id": 1, "p": 2},
        key_columns=["id"],
        source=src,
        ts_ms=9,
    )
    assert json.loads(key) == {"id": 1}
    event = parse_event(value, key, "m.main.products")
    assert event is not None
    assert (event.op, event.table, event.before, event.after, event.ts_ms) == (
        "u",
        "products",
        {"id": 1, "p": "1.50"},
        {"id": 1, "p": 2},
        9,
    )
    assert event.key == {"id": 1}
    jsonschema.validate(json.loads(value), load_schema("envelope"))


def test_events_emitted_by_the_capture_worker_validate_against_the_schema(tmp_path: Path) -> None:
    src = make_source(tmp_path / "src.db")
    insert_product(src, 1)
    enable_capture(src, ["products"])
    insert_product(src, 2)
    with src.begin() as conn:
        conn.execute(text("UPDATE products SET price_cents = 5 WHERE id = 2"))
        conn.execute(text("UPDATE products SET id = 20 WHERE id = 2"))
        conn.execute(text("DELETE FROM products WHERE id = 1"))
    request_snapshot(src, ["products"])
    log = EmbeddedLog(EmbeddedLogConfig(tmp_path / "log", partitions=1))
    worker = CaptureWorker(src, log, CaptureConfig(topic_prefix="mono", emit_tombstones=True))
    while worker.run_once():
        pass
    worker.close()
    consumer = log.consumer("t", ["mono.main.products"])
    msgs = consumer.poll(100, 0.5)
    envelope, key_schema = load_schema("envelope"), load_schema("key")
    ops = []
    for m in msgs:
        if m.value is None:
            ops.append("tombstone")
            continue
        jsonschema.validate(json.loads(m.value), envelope)
        jsonschema.validate(json.loads(m.key), key_schema)
        ops.append(json.loads(m.value)["op"])
    # c(2), u(2), pk change → d(2)+tombstone+c(20), d(1)+tombstone, snapshot r(20, last)
    assert ops == ["c", "u", "d", "tombstone", "c", "d", "tombstone", "r"]
    last = json.loads(msgs[-1].value)
    assert last["source"]["snapshot"] == "last" and last["after"]["id"] == 20


def test_tombstone_parses_to_none() -> None:
    assert parse_event(None) is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"op": "x", "after": {}}', "unsupported op"),
        (
            b'{"op": "d", "before": null, "after": null, "source": {"table": "t"}}',
            "without a 'before'",
        ),
        (
            b'{"op": "c", "before": null, "after": null, "source": {"table": "t"}}',
            "without an 'after'",
        ),
        (b'{"op": "c", "after": {"a": 1}, "source": {}}', "names no table"),
    ],
)
def test_malformed_values_raise_a_specific_decode_error(value: bytes, reason: str) -> None:
    with pytest.raises(EventDecodeError, match=reason):
        parse_event(value)


def test_debezium_wrapped_event_decodes_logical_types() -> None:
    payload = dbz.product_payload("c", None, dbz.product_row(1), lsn=100)
    event = parse_event(dbz.wrapped(payload), dbz.wrapped_key(1), "dbserver1.public.products")
    assert event is not None and event.op == "c" and event.table == "products"
    assert event.schema == "public"
    assert event.after["created_at"] == dt.datetime(2024, 1, 2, 3, 4, 5)
    assert event.after["updated_at"] == dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert event.key == {"id": 1}


def test_debezium_plain_event_keeps_json_values() -> None:
    payload = dbz.product_payload("u", dbz.product_row(1), dbz.product_row(1, 2500), lsn=101)
    event = parse_event(dbz.plain(payload), b'{"id": 1}')
    assert event is not None and event.op == "u"
    assert event.after["price_cents"] == 2500
    assert event.after["created_at"] == 1704164645000000  # coerced later by the target type
    assert not event.snapshot


def test_debezium_decimal_date_and_time_types_decode() -> None:
    fields = [
        dbz._field("id", "int32", optional=False),
        dbz._field(
            "price",
            "bytes",
            "org.apache.kafka.connect.data.Decimal",
            parameters={"scale": "2", "connect.decimal.precision": "10"},
        ),
        dbz._field("ratio", "struct", "io.debezium.data.VariableScaleDecimal"),
        dbz._field("born", "int32", "io.debezium.time.Date"),
        dbz._field("at", "int64", "io.debezium.time.Timestamp"),
        dbz._field("at_ns", "int64", "io.debezium.time.NanoTimestamp"),
        dbz._field("opens", "int64", "io.debezium.time.MicroTime"),
        dbz._field("blob", "bytes"),
    ]
    after = {
        "id": 3,
        "price": dbz.decimal_bytes(-12345),
        "ratio": {"scale": 3, "value": dbz.decimal_bytes(1500)},
        "born": 19000,
        "at": 1704164645123,
        "at_ns": 1704164645123456000,  # PostgreSQL keeps microseconds: nanoseconds end in 000
        "opens": 34200000000,
        "blob": "AQI=",
    }
    payload = {
        "before": None,
        "after": after,
        "source": dbz.source("prices", 5, "true"),
        "op": "r",
        "ts_ms": 1,
    }
    event = parse_event(dbz.wrapped(payload, "prices", fields))
    assert event is not None and event.snapshot
    a = event.after
    assert a["price"] == Decimal("-123.45")
    assert a["ratio"] == Decimal("1.500")
    assert a["born"] == dt.date(2022, 1, 8)
    assert a["at"] == dt.datetime(2024, 1, 2, 3, 4, 5, 123000)
    assert a["at_ns"] == dt.datetime(2024, 1, 2, 3, 4, 5, 123456)
    assert a["opens"] == dt.time(9, 30)
    assert a["blob"] == b"\x01\x02"
    # schema-less VariableScaleDecimal is self-describing and still decodes
    plain = parse_event(dbz.plain({**payload, "after": {"id": 3, "ratio": after["ratio"]}}))
    assert plain is not None and plain.after["ratio"] == Decimal("1.500")
    # a sub-microsecond part would be dropped by any target: refused, not truncated
    finer = {**payload, "after": {**after, "at_ns": 1704164645123456789}}
    with pytest.raises(EventDecodeError, match="sub-microsecond"):
        parse_event(dbz.wrapped(finer, "prices", fields))


def test_key_parser_accepts_wrapped_plain_and_garbage() -> None:
    assert parse_key(dbz.wrapped_key(4)) == {"id": 4}
    assert parse_key(b'{"id": 4}') == {"id": 4}
    assert parse_key(b"\x00garbage") is None
    assert parse_key(None) is None
