"""PostgreSQL → Kafka → service database on the real servers: random changes converge,
Debezium-shaped events from a plain kafka-python producer apply, unchanged TOAST values and
truncates are handled, and offsets reach Kafka only after the sink's transaction commits."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal

import psycopg2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from cdc.capture.postgres import PgCaptureConfig, PgCaptureWorker, enable_capture
from cdc.dlq import read_topic_dead_letters
from cdc.events import topic_name
from cdc.mapping import parse_mapping
from cdc.ports import TopicPartition
from cdc.sink import Sink, SinkConfig, count_dead_letters
from cdc.transport.kafka import KafkaTransport
from cdc.verify import verify
from kitcore.db import make_engine
from tests.integration.cdc_pg.helpers import confirmed_flush, execute, pump_until, scalar
from tests.integration.cdc_pg.test_pg_snapshot import _lsn
from tests.unit.cdc import debezium_samples as dbz
from tests.unit.cdc.synthetic import make_target, write_mapping

pytestmark = pytest.mark.integration

PRODUCTS_MAPPING = {
    "service": "svc",
    "tables": [
        {
            "source": "products",
            "target": "catalog",
            "key": ["id"],
            "columns": {
                "id": "id",
                "title": {"from": "name", "transform": "lower"},
                "qty": "qty",
                "price": "price",
            },
        }
    ],
}
TARGET_DDL = (
    "CREATE TABLE catalog (id INTEGER PRIMARY KEY, title TEXT, qty INTEGER, price NUMERIC(12, 2))"
)


@pytest.fixture
def kafka(kafka_config) -> Iterator[KafkaTransport]:
    transport = KafkaTransport(kafka_config)
    yield transport
    transport.close()


def _pg_engine(url: str):
    return make_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))


def _drain_capture(worker: PgCaptureWorker, url: str, slot: str) -> None:
    target = _lsn(scalar(url, "SELECT pg_current_wal_lsn()::text"))
    pump_until(worker, lambda: confirmed_flush(url, slot) >= target, timeout_s=30)


def _drain_sink(sink: Sink, transport: KafkaTransport, topics: list[str], timeout_s=30) -> None:
    """Apply until the offsets stored in the target reach the end of every partition."""
    ends = {tp: o for tp, o in transport.end_offsets(topics).items() if o}
    deadline = time.monotonic() + timeout_s
    while True:
        stored = sink.stored_offsets()
        if all(stored.get(tp, 0) >= o for tp, o in ends.items()):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"sink stuck at {stored}, ends {ends}")
        sink.run_once()


# ---------------------------------------------------------------------------------------------
# property: random changes converge

ids = st.integers(1, 15)
op = st.one_of(
    st.tuples(
        st.just("upsert"),
        ids,
        st.text("abcXYZ é", min_size=1, max_size=8),
        st.integers(-5, 50),
        st.decimals(0, 999, places=2, allow_nan=False),
    ),
    st.tuples(st.just("update"), ids, st.integers(-5, 50)),
    st.tuples(st.just("delete"), ids),
    st.tuples(st.just("move"), ids, ids),
)
transactions = st.lists(st.lists(op, min_size=1, max_size=5), min_size=1, max_size=4)


def _run_ops(cur, txs) -> None:
    for tx in txs:
        for o in tx:
            if o[0] == "upsert":
                cur.execute(
                    "INSERT INTO products VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO UPDATE "
                    "SET name = excluded.name, qty = excluded.qty, price = excluded.price",
                    o[1:],
                )
            elif o[0] == "update":
                cur.execute("UPDATE products SET qty = %s WHERE id = %s", (o[2], o[1]))
            elif o[0] == "delete":
                cur.execute("DELETE FROM products WHERE id = %s", (o[1],))
            else:
                cur.execute(
                    "UPDATE products SET id = %s WHERE id = %s AND NOT EXISTS "
                    "(SELECT 1 FROM products WHERE id = %s)",
                    (o[2], o[1], o[2]),
                )
        cur.connection.commit()


def test_random_changes_through_kafka_leave_the_target_equal_to_the_mapped_source(
    pg_url, kafka, tmp_path
):
    execute(
        pg_url,
        "CREATE TABLE products (id int PRIMARY KEY, name text, qty int, price numeric(12, 2))",
        "INSERT INTO products SELECT g, 'P' || g, g, g * 1.5 FROM generate_series(1, 8) g",
    )
    enable_capture(pg_url, ["products"])
    prefix = f"prop{uuid.uuid4().hex[:6]}"
    topic = topic_name(prefix, "public", "products")
    mapping = parse_mapping(PRODUCTS_MAPPING)
    target = make_engine(f"sqlite:///{tmp_path / 'target.db'}")
    with target.begin() as conn:
        conn.execute(text(TARGET_DDL))
    source = _pg_engine(pg_url)
    worker = PgCaptureWorker(
        pg_url,
        kafka,
        PgCaptureConfig(
            tables=("products",),
            topic_prefix=prefix,
            snapshot_chunk=3,
            status_interval_s=0.3,
            idle_wait_s=0.05,
        ),
    )
    sink = Sink(target, mapping, kafka, SinkConfig("svc-prop", (topic,), poll_timeout_s=0.05))
    writer = psycopg2.connect(pg_url)
    try:
        worker.prepare()
        worker.run_snapshot()
        worker.start_stream()
        sink.start()
        sink.consumer.wait_for_assignment(30)  # one group join for every example

        @settings(
            max_examples=8,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        @given(txs=transactions)
        def check(txs) -> None:
            with writer.cursor() as cur:
                _run_ops(cur, txs)
            _drain_capture(worker, pg_url, "strangler_cdc")
            _drain_sink(sink, kafka, [topic])
            report = verify(source, target, mapping)
            assert report.ok, report.tables

        check()
        assert count_dead_letters(target) == 0
        committed = kafka.committed("svc-prop", [topic])
        assert committed == {tp: o for tp, o in sink.stored_offsets().items()}
    finally:
        writer.close()
        sink.close()
        worker.close()
        source.dispose()
        target.dispose()


# ---------------------------------------------------------------------------------------------
# default replica identity: unchanged TOAST; truncate; dead letters on <topic>.dlq


def test_unchanged_toast_and_truncate_from_postgres_apply_and_dead_letters_go_to_the_dlq_topic(
    pg_url, kafka, tmp_path
):
    execute(
        pg_url,
        "CREATE TABLE docs (id int PRIMARY KEY, title text, body text)",
        "ALTER TABLE docs ALTER body SET STORAGE EXTERNAL",  # out of line, uncompressed
        "INSERT INTO docs SELECT g, 't' || g, repeat(md5(g::text), 200) FROM generate_series(1, 3) g",
    )
    enable_capture(pg_url, ["docs"], replica_identity_full=False)
    prefix = f"toast{uuid.uuid4().hex[:6]}"
    topic = topic_name(prefix, "public", "docs")
    kafka.ensure_topic(topic, 1)  # a truncate (no key) is ordered only within its partition
    mapping = parse_mapping(
        {
            "service": "docs",
            "tables": [
                {
                    "source": "docs",
                    "target": "docs",
                    "key": ["id"],
                    "columns": {"id": "id", "title": "title", "body": "body"},
                }
            ],
        }
    )
    target = make_engine(f"sqlite:///{tmp_path / 'target.db'}")
    with target.begin() as conn:
        conn.execute(text("CREATE TABLE docs (id INTEGER PRIMARY KEY, title TEXT, body TEXT)"))
    source = _pg_engine(pg_url)
    worker = PgCaptureWorker(
        pg_url,
        kafka,
        PgCaptureConfig(
            tables=("docs",), topic_prefix=prefix, status_interval_s=0.3, idle_wait_s=0.05
        ),
    )
    sink = Sink(
        target,
        mapping,
        kafka,
        SinkConfig("svc-docs", (topic,), poll_timeout_s=0.05, dead_letter_store="topic"),
    )

    def body(i: int) -> str:
        with target.connect() as conn:
            return conn.execute(text("SELECT body FROM docs WHERE id = :i"), {"i": i}).scalar()

    try:
        worker.prepare()
        worker.run_snapshot()
        worker.start_stream()
        sink.start()
        sink.consumer.wait_for_assignment(30)

        def settle() -> None:
            _drain_capture(worker, pg_url, "strangler_cdc")
            _drain_sink(sink, kafka, [topic])

        settle()
        assert body(2) == "c81e728d9d4c2f636f067f89cc14862c" * 200
        execute(pg_url, "UPDATE docs SET title = 'new' WHERE id IN (1, 2)")
        settle()
        assert body(1) == "c4ca4238a0b923820dcc509a6f75849b" * 200  # kept, not the placeholder
        assert verify(source, target, mapping).ok
        with target.begin() as conn:  # the service lost row 3: its update cannot be rebuilt
            conn.execute(text("DELETE FROM docs WHERE id = 3"))
        execute(pg_url, "UPDATE docs SET title = 'again' WHERE id = 3")
        settle()
        (letter,) = read_topic_dead_letters(kafka, [topic], "svc-docs")
        assert "unchanged-TOAST" in letter.reason and letter.topic == topic
        assert json.loads(letter.value)["after"]["body"] == "__debezium_unavailable_value"
        assert count_dead_letters(target) == 0  # nothing in the table store
        execute(pg_url, "TRUNCATE docs", "INSERT INTO docs VALUES (9, 'after', 'short')")
        settle()
        with target.connect() as conn:
            assert conn.execute(text("SELECT id, title, body FROM docs")).all() == [
                (9, "after", "short")
            ]
        assert verify(source, target, mapping).ok
    finally:
        sink.close()
        worker.close()
        source.dispose()
        target.dispose()


# ---------------------------------------------------------------------------------------------
# interop: Debezium's PostgreSQL connector output, produced by plain kafka-python


def test_debezium_shaped_events_from_a_plain_kafka_producer_apply(kafka, kafka_bootstrap, tmp_path):
    from kafka import KafkaProducer

    topic = f"dbz{uuid.uuid4().hex[:6]}.public.products"
    kafka.ensure_topic(topic, 1)
    deleted = dict.fromkeys(dbz.product_row(3), None) | {"id": 3}
    records = [
        (dbz.wrapped_key(1), dbz.wrapped(dbz.product_payload("r", None, dbz.product_row(1), 9))),
        (b'{"id":2}', dbz.plain(dbz.product_payload("c", None, dbz.product_row(2, 250), 10))),
        (
            b'{"id":2}',
            dbz.plain(
                dbz.product_payload(
                    "u", dbz.product_row(2, 250), dbz.product_row(2, 300, "Oak Chair"), 11
                )
            ),
        ),
        (dbz.wrapped_key(3), dbz.wrapped(dbz.product_payload("c", None, dbz.product_row(3), 12))),
        (dbz.wrapped_key(3), dbz.wrapped(dbz.product_payload("d", deleted, None, 13))),
        (dbz.wrapped_key(3), None),  # tombstone after the delete
        (  # unchanged TOAST column in a plain event: the stored name stays
            dbz.wrapped_key(1),
            dbz.plain(
                dbz.product_payload(
                    "u", None, dbz.product_row(1, 2599, "__debezium_unavailable_value"), 14
                )
            ),
        ),
    ]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        for key, value in records:
            producer.send(topic, key=key, value=value)
        producer.flush(15)
    finally:
        producer.close()
    target = make_target(tmp_path / "target.db")
    mapping = write_mapping(tmp_path / "mapping.toml")
    sink = Sink(target, mapping, kafka, SinkConfig("dbz-interop", (topic,), poll_timeout_s=0.05))
    try:
        sink.start()
        sink.consumer.wait_for_assignment(30)
        _drain_sink(sink, kafka, [topic])
    finally:
        sink.close()
    assert count_dead_letters(target) == 0
    with target.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id, title, slug, price_amount, created_at FROM catalog_product ORDER BY id"
            )
        ).all()
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (1, "Oak Bench", "oak-bench-1"),
        (2, "Oak Chair", "oak-chair-2"),
    ]
    assert Decimal(str(rows[0][3])) == Decimal("25.99")
    assert Decimal(str(rows[1][3])) == Decimal("3")
    assert str(rows[0][4]).startswith("2024-01-02 03:04:05")
    assert kafka.committed("dbz-interop", [topic]) == {TopicPartition(topic, 0): len(records)}
    target.dispose()


# ---------------------------------------------------------------------------------------------
# offsets: Kafka hears about a batch only after the target transaction committed


def test_offsets_reach_kafka_only_after_the_target_commit_and_a_restart_neither_loses_nor_repeats(
    kafka, tmp_path
):
    from cdc.events import build_event, source_block
    from cdc.ports import OutgoingMessage

    topic = f"off{uuid.uuid4().hex[:6]}.public.products"
    mapping = parse_mapping(PRODUCTS_MAPPING)
    path = tmp_path / "target.db"
    # a short busy timeout so a locked target fails fast instead of waiting a minute
    target = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.2})
    with target.begin() as conn:
        conn.execute(text(TARGET_DDL))

    def publish(first: int, count: int) -> None:
        src = source_block(name="m", db="m", schema="public", table="products", ts_ms=1)
        msgs = []
        for i in range(first, first + count):
            row = {"id": i, "name": f"N{i}", "qty": i, "price": "1.25"}
            key, value = build_event("c", None, row, key_columns=["id"], source=src)
            msgs.append(OutgoingMessage(topic, key, value))
        producer = kafka.producer()
        producer.send_batch(msgs)
        producer.close()

    def new_sink() -> Sink:
        sink = Sink(target, mapping, kafka, SinkConfig("svc-off", (topic,), poll_timeout_s=0.1))
        sink.start()
        sink.consumer.wait_for_assignment(30)
        return sink

    kafka.ensure_topic(topic)
    publish(1, 30)
    sink = new_sink()
    seen = 0
    try:
        lock = target.raw_connection()  # another writer holds the target's write lock
        lock.execute("BEGIN EXCLUSIVE")
        retrying = None
        deadline = time.monotonic() + 30
        while retrying is None and time.monotonic() < deadline:
            # the first non-empty batch fails inside the target transaction: a lock says
            # nothing about the events, so the batch is kept for a retry, not dead-lettered
            retrying = sink.run_once().retrying
        assert retrying is not None and "locked" in retrying
        lock.rollback()
        lock.close()
        assert kafka.committed("svc-off", [topic]) == {}  # nothing committed to Kafka
        assert sink.stored_offsets() == {}
    finally:
        sink.close()
    sink = new_sink()  # restart: resumes from the (empty) stored offsets
    try:
        _drain_sink(sink, kafka, [topic])
        committed = kafka.committed("svc-off", [topic])
        assert committed == sink.stored_offsets() and sum(committed.values()) == 30
    finally:
        sink.close()
    publish(31, 20)
    sink = new_sink()  # restart after success: only the 20 new events arrive
    try:
        deadline = time.monotonic() + 30
        while seen < 20 and time.monotonic() < deadline:
            sink.run_once()
            seen += sink.last_batch_size
        for _ in range(3):
            sink.run_once()
            seen += sink.last_batch_size
        assert seen == 20
        assert sum(kafka.committed("svc-off", [topic]).values()) == 50
    finally:
        sink.close()
    with target.connect() as conn:
        assert conn.execute(text("SELECT count(*), sum(qty) FROM catalog")).one() == (
            50,
            sum(range(1, 51)),
        )
    target.dispose()
