"""The capture worker turns decoded pgoutput transactions into Debezium-shaped events and
confirms an LSN only for transactions the producer acknowledged."""

from __future__ import annotations

import datetime as dt
import json

import jsonschema
import pytest

from cdc.capture.pgoutput import (
    UNCHANGED_TOAST,
    Begin,
    Column,
    Commit,
    Delete,
    Insert,
    Relation,
    Truncate,
    Update,
)
from cdc.capture.postgres import (
    UNAVAILABLE_VALUE,
    CaptureError,
    PgCaptureConfig,
    PgCaptureWorker,
    TableRef,
    libpq_dsn,
)
from cdc.ports import Producer
from cdc.schema import load_schema
from cdc.transport.embedded import EmbeddedLog, EmbeddedLogConfig

WHEN = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
REL = Relation(
    7,
    "shop",
    "items",
    "f",
    (Column("id", 23, -1, True), Column("name", 25, -1, True), Column("qty", 23, -1, True)),
)


class RecordingProducer(Producer):
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list] = []
        self.topics: set[str] = set()
        self.fail = fail

    def send_batch(self, messages):
        if self.fail:
            raise ConnectionError("no ack")
        self.batches.append(list(messages))

    def ensure_topic(self, topic, partitions=None):
        self.topics.add(topic)

    def close(self):
        pass


def make(tmp_path, fail=False, **config):
    producer = RecordingProducer(fail)
    log = EmbeddedLog(EmbeddedLogConfig(log_dir=tmp_path / "log"))
    worker = PgCaptureWorker(
        "postgresql://unused/db",
        log,
        PgCaptureConfig(tables=("shop.items",), **config),
        producer=producer,
    )
    worker.db_name = "shopdb"
    worker._keys[("shop", "items")] = ("id",)  # what prepare() reads from the catalog
    return worker, producer


def feed(worker, *msgs, lsn=100):
    for i, m in enumerate(msgs):
        worker.handle(m, lsn + i)


def events(producer):
    return [
        (json.loads(m.key) if m.key else None, json.loads(m.value))
        for b in producer.batches
        for m in b
    ]


def test_a_transaction_becomes_events_with_postgres_source_and_a_confirmed_lsn(tmp_path):
    worker, producer = make(tmp_path)
    feed(
        worker,
        REL,
        Begin(500, WHEN, 901),
        Insert(7, ("1", "a", "2")),
        Update(7, "O", ("1", "a", "2"), ("1", "a", "3")),
        Delete(7, "O", ("1", "a", "3")),
        Commit(0, 490, 500, WHEN),
    )
    assert worker.flush() == 3 and worker.acked_lsn == 500
    got = events(producer)
    assert [v["op"] for _k, v in got] == ["c", "u", "d"]
    assert all(k == {"id": 1} for k, _v in got)
    schema = load_schema("envelope")
    for _k, v in got:
        jsonschema.validate(v, schema)
        src = v["source"]
        assert (src["connector"], src["db"], src["schema"], src["table"]) == (
            "postgresql",
            "shopdb",
            "shop",
            "items",
        )
        assert src["txId"] == 901 and src["ts_ms"] == int(WHEN.timestamp() * 1000)
    assert [v["source"]["lsn"] for _k, v in got] == [102, 103, 104]
    assert got[1][1]["before"] == {"id": 1, "name": "a", "qty": 2}
    assert producer.topics == {"monolith.shop.items"}


def test_nothing_is_confirmed_when_the_producer_fails(tmp_path):
    worker, _producer = make(tmp_path, fail=True)
    feed(worker, REL, Begin(500, WHEN, 1), Insert(7, ("1", "a", "2")), Commit(0, 490, 500, WHEN))
    with pytest.raises(ConnectionError):
        worker.flush()
    assert worker.acked_lsn == 0


def test_a_batch_cut_inside_a_transaction_confirms_only_the_previous_commit(tmp_path):
    worker, producer = make(tmp_path, batch_size=1)
    feed(worker, REL, Begin(300, WHEN, 1), Insert(7, ("1", "a", "1")), Commit(0, 290, 300, WHEN))
    feed(worker, Begin(500, WHEN, 2), Insert(7, ("2", "b", "1")), lsn=400)
    worker.flush()
    assert worker.acked_lsn == 300 and len(events(producer)) == 2
    feed(worker, Commit(0, 490, 500, WHEN), lsn=450)
    worker.flush()
    assert worker.acked_lsn == 500


def test_key_change_becomes_delete_and_create_like_debezium(tmp_path):
    worker, producer = make(tmp_path)
    feed(
        worker,
        REL,
        Begin(1, WHEN, 1),
        Update(7, "K", ("1", None, None), ("2", "a", "1")),
        Commit(0, 1, 2, WHEN),
    )
    worker.flush()
    got = events(producer)
    assert [(k, v["op"], v["before"]) for k, v in got] == [
        ({"id": 1}, "d", {"id": 1, "name": None, "qty": None}),
        ({"id": 2}, "c", None),
    ]


def test_unchanged_toast_uses_the_old_row_or_the_debezium_placeholder(tmp_path):
    worker, producer = make(tmp_path)
    feed(
        worker,
        REL,
        Begin(1, WHEN, 1),
        Update(7, "O", ("1", "long text", "1"), ("1", UNCHANGED_TOAST, "2")),
        Update(7, None, None, ("1", UNCHANGED_TOAST, "3")),
        Commit(0, 1, 2, WHEN),
    )
    worker.flush()
    (_k1, full), (_k2, default) = events(producer)
    assert full["after"]["name"] == "long text"
    assert default["after"]["name"] == UNAVAILABLE_VALUE and default["before"] is None


def test_truncate_is_a_debezium_t_event_unless_disabled(tmp_path):
    worker, producer = make(tmp_path)
    feed(worker, REL, Begin(1, WHEN, 1), Truncate((7,), False, False), Commit(0, 1, 2, WHEN))
    worker.flush()
    ((key, value),) = events(producer)
    assert key is None and value["op"] == "t" and value["before"] is None and value["after"] is None
    quiet, qproducer = make(tmp_path / "q", emit_truncate=False)
    feed(quiet, REL, Begin(1, WHEN, 1), Truncate((7,), False, False), Commit(0, 1, 2, WHEN))
    quiet.flush()
    assert events(qproducer) == [] and quiet.acked_lsn == 2


def test_a_change_before_its_relation_message_is_an_error(tmp_path):
    worker, _ = make(tmp_path)
    with pytest.raises(CaptureError, match="relation id 8"):
        feed(worker, Begin(1, WHEN, 1), Insert(8, ("1",)))


@pytest.mark.parametrize(
    "field, value",
    [
        ("tables", ()),
        ("slot", "Bad-Name"),
        ("publication", ""),
        ("snapshot", "always"),
        ("snapshot_chunk", 0),
        ("batch_size", 0),
        ("status_interval_s", 0),
    ],
)
def test_config_names_the_bad_field(field, value):
    kwargs = {"tables": ("t",), field: value}
    with pytest.raises(ValueError, match=field):
        PgCaptureConfig(**kwargs)


def test_table_names_and_urls_are_parsed():
    assert TableRef.parse("items") == TableRef("public", "items")
    assert TableRef.parse("shop.items").qualified == '"shop"."items"'
    with pytest.raises(CaptureError):
        TableRef.parse("a.b.c")
    assert libpq_dsn("postgresql+psycopg2://u@h:5/db") == "postgresql://u@h:5/db"
    with pytest.raises(CaptureError, match="postgresql"):
        libpq_dsn("sqlite:///x.db")
