"""PostgreSQL types arrive in events as faithful values, the same in snapshot and stream."""

from __future__ import annotations

import base64
import json
from decimal import Decimal

import pytest

from cdc.capture.postgres import UNAVAILABLE_VALUE
from cdc.events import parse_event
from tests.integration.cdc_pg.helpers import (
    embedded,
    execute,
    make_worker,
    read_events,
    stream_events,
)

pytestmark = pytest.mark.integration

DDL = """CREATE TABLE typed (
    id int4 PRIMARY KEY, small int2, big int8, amount numeric(12, 2), ratio numeric,
    title text, code varchar(10), fixed char(3), flag bool,
    at_local timestamp, at_utc timestamptz, day date, ident uuid,
    doc json, docb jsonb, blob bytea, f4 float4, f8 float8, nothing text)"""

ROW = (
    "INSERT INTO typed VALUES ({id}, -32768, 9223372036854775807, 12345678.90, 'NaN', "
    "'héllo \"q\" \\ x', 'v', 'ab', true, '2024-02-29 13:14:15.123456', "
    "'2024-02-29 13:14:15.5+02', '2024-02-29', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', "
    "'{{\"a\": [1, 2.5, null]}}', '{{\"b\": {{\"c\": true}}}}', '\\x00ff10', 1.5, "
    "0.1, NULL)"
)

EXPECTED = {
    "small": -32768,
    "big": 9223372036854775807,
    "amount": "12345678.90",  # exact decimal as a JSON string
    "ratio": "NaN",
    "title": 'héllo "q" \\ x',
    "code": "v",
    "fixed": "ab ",
    "flag": True,
    "at_local": "2024-02-29T13:14:15.123456",  # naive: timestamp without time zone
    "at_utc": "2024-02-29T11:14:15.500000+00:00",  # aware, normalised to UTC
    "day": "2024-02-29",
    "ident": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    "doc": {"a": [1, 2.5, None]},
    "docb": {"b": {"c": True}},
    "blob": base64.b64encode(b"\x00\xff\x10").decode(),
    "f4": 1.5,
    "f8": 0.1,
    "nothing": None,
}


def test_every_supported_type_converts_the_same_in_snapshot_and_stream(pg_url, tmp_path):
    execute(pg_url, DDL, ROW.format(id=1))
    log = embedded(tmp_path)
    worker = make_worker(pg_url, log, ("typed",))
    try:
        worker.prepare()
        assert worker.run_snapshot()
        worker.start_stream()
        execute(pg_url, ROW.format(id=2))
        events = stream_events(worker, log, "monolith.public.typed", 2)
    finally:
        worker.close()
    snap, live = (e["value"] for e in events)
    assert snap["op"] == "r" and live["op"] == "c"
    for value in (snap, live):
        after = dict(value["after"])
        after.pop("id")
        assert after == EXPECTED
    assert snap["source"]["connector"] == "postgresql"
    assert snap["source"]["schema"] == "public" and snap["source"]["table"] == "typed"
    assert snap["source"]["snapshot"] == "last"
    assert live["source"]["snapshot"] == "false"
    assert isinstance(live["source"]["txId"], int) and isinstance(live["source"]["lsn"], int)
    assert live["source"]["lsn"] >= snap["source"]["lsn"]
    assert events[1]["key"] == {"id": 2}
    # our parser (and so the sink) reads it back; the decimal stays exact
    parsed = parse_event(json.dumps(live).encode())
    assert Decimal(parsed.after["amount"]) == Decimal("12345678.90")


def test_unchanged_toast_is_a_placeholder_with_default_identity_and_real_with_full(
    pg_url, tmp_path
):
    import random

    rng = random.Random(1)  # incompressible, so PostgreSQL stores it out of line (TOAST)
    big = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(20000))
    execute(
        pg_url,
        "CREATE TABLE notes (id int PRIMARY KEY, n int, body text)",
        "CREATE TABLE memos (id int PRIMARY KEY, n int, body text)",
    )
    execute(
        pg_url,
        "INSERT INTO notes VALUES (1, 0, %s)",
        "INSERT INTO memos VALUES (1, 0, %s)",
        params=(big,),
    )
    log = embedded(tmp_path)
    # notes keeps the default identity; memos gets FULL
    from cdc.capture.postgres import enable_capture

    enable_capture(pg_url, ["notes"], replica_identity_full=False)
    enable_capture(pg_url, ["memos"])
    worker = make_worker(pg_url, log, ("notes", "memos"), enable=False, snapshot="never")
    try:
        worker.prepare()
        worker.run_snapshot()
        worker.start_stream()
        execute(pg_url, "UPDATE notes SET n = 1", "UPDATE memos SET n = 1", "DELETE FROM notes")
        notes = stream_events(worker, log, "monolith.public.notes", 2)
        memos = stream_events(worker, log, "monolith.public.memos", 1)
    finally:
        worker.close()
    upd, dele = (e["value"] for e in notes)
    assert upd["op"] == "u" and upd["before"] is None
    assert upd["after"] == {"id": 1, "n": 1, "body": UNAVAILABLE_VALUE}
    assert dele["op"] == "d" and dele["before"] == {"id": 1}  # default identity: key only
    (full,) = (e["value"] for e in memos)
    assert full["before"] == {"id": 1, "n": 0, "body": big}
    assert full["after"] == {"id": 1, "n": 1, "body": big}


def test_events_read_back_in_order_with_a_single_partition(pg_url, tmp_path):
    execute(pg_url, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    log = embedded(tmp_path)
    worker = make_worker(pg_url, log, ("t",))
    try:
        worker.prepare()
        worker.run_snapshot()
        worker.start_stream()
        execute(pg_url, "INSERT INTO t VALUES (1, 'a')", "UPDATE t SET v = 'b'", "DELETE FROM t")
        events = stream_events(worker, log, "monolith.public.t", 3)
    finally:
        worker.close()
    assert [e["value"]["op"] for e in events] == ["c", "u", "d"]
    assert read_events(log, ["monolith.public.t"]) == events
