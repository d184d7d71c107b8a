"""The kit's topics read by a second, independent Kafka client (aiokafka, not the kafka-python
the kit ships with): topic names, keys, Debezium envelopes, partitioning by key (Java's
murmur2 partitioner), per-key order, tombstones and the dead-letter topic. Against the test
broker, or the Kafka named by KAFKA_BOOTSTRAP_SERVERS.

The reads never trust ListOffsets: they read until the broker has nothing more to give
(docs/infrastructure.md: the test broker's "latest" offset lags inside record batches).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from cdc.capture.sqlite import CaptureConfig, CaptureWorker, enable_capture
from cdc.events import topic_name
from cdc.mapping import parse_mapping
from cdc.sink import Sink, SinkConfig
from cdc.transport.kafka import KafkaTransport
from kitcore.db import make_engine

aiokafka = pytest.importorskip("aiokafka")
pytestmark = pytest.mark.integration

MAPPING = parse_mapping(
    {
        "service": "svc",
        "tables": [
            {
                "source": "things",
                "target": "things",
                "key": ["id"],
                "columns": {"id": "id", "name": "name", "n": "n"},
            }
        ],
    }
)


async def _read_all(bootstrap: str, topic: str) -> list[Any]:
    """Every record of `topic` from the start, by an unassigned-group aiokafka consumer."""
    consumer = aiokafka.AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        assert partitions, f"aiokafka does not see topic {topic}"
        tps = [aiokafka.TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        idle = 0
        while idle < 3:
            batch = await consumer.getmany(timeout_ms=500)
            records = [r for rs in batch.values() for r in rs]
            idle = 0 if records else idle + 1
            out += records
        return out
    finally:
        await consumer.stop()


async def _topics(bootstrap: str) -> set[str]:
    consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        return set(await consumer.topics())
    finally:
        await consumer.stop()


def test_a_second_kafka_client_reads_the_kits_topics_as_debezium_topics(
    kafka_config, kafka_bootstrap: str, tmp_path: Path
) -> None:
    prefix = f"k{uuid.uuid4().hex[:8]}"
    topic = topic_name(prefix, "main", "things")
    source = make_engine(f"sqlite:///{tmp_path / 'src.db'}")
    target = make_engine(f"sqlite:///{tmp_path / 'tgt.db'}")
    with source.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE things (id INTEGER PRIMARY KEY, name TEXT NOT NULL, n INTEGER)"
        )
    with target.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE things (id INTEGER PRIMARY KEY, name TEXT CHECK (name != 'poison'), n INTEGER)"
        )
    enable_capture(source, ["things"])
    transport = KafkaTransport(kafka_config)
    capture = CaptureWorker(
        source, transport, CaptureConfig(topic_prefix=prefix, emit_tombstones=True)
    )
    sink = Sink(
        target, MAPPING, transport, SinkConfig(f"{prefix}-g", (topic,), dead_letter_store="topic")
    )
    try:
        with source.begin() as conn:
            for i in range(1, 31):
                conn.execute(
                    text("INSERT INTO things VALUES (:i, :name, 0)"), {"i": i, "name": f"t{i}"}
                )
        for round_ in range(1, 4):  # three updates per key, each its own transaction
            with source.begin() as conn:
                conn.execute(text("UPDATE things SET n = :r WHERE id <= 10"), {"r": round_})
        with source.begin() as conn:
            conn.execute(text("DELETE FROM things WHERE id > 25"))
            conn.execute(text("INSERT INTO things VALUES (99, 'poison', 0)"))
        while capture.run_once():
            pass
        sink.start()
        sink.consumer.wait_for_assignment(30.0)  # type: ignore[union-attr]
        deadline = time.monotonic() + 60
        while sink.stored_offsets() != {
            tp: o for tp, o in transport.end_offsets([topic]).items() if o
        }:
            assert time.monotonic() < deadline, "the sink did not drain"
            sink.run_once()

        records = asyncio.run(_read_all(kafka_bootstrap, topic))
        assert {topic, topic + ".dlq"} <= asyncio.run(_topics(kafka_bootstrap))
        events = [r for r in records if r.value is not None]
        tombstones = [r for r in records if r.value is None]
        assert len(events) == 30 + 30 + 5 + 1 and len(tombstones) == 5
        partitioner = aiokafka.partitioner.DefaultPartitioner()
        partitions = sorted({r.partition for r in records} | set(range(kafka_config.partitions)))
        by_key: dict[int, list[Any]] = defaultdict(list)
        for r in records:
            key = json.loads(r.key)
            assert set(key) == {"id"}
            assert r.partition == partitioner(r.key, partitions, partitions)  # Java's murmur2
            by_key[key["id"]].append(r)
        for r in events:
            value = json.loads(r.value)
            assert set(value) >= {"before", "after", "source", "op", "ts_ms"}
            assert value["op"] in {"c", "u", "d"}
            assert value["source"]["table"] == "things" and value["source"]["schema"] == "main"
            row = value["before"] if value["op"] == "d" else value["after"]
            assert row["id"] == json.loads(r.key)["id"]
        for key, recs in by_key.items():  # one partition per key, offsets in change order
            assert len({r.partition for r in recs}) == 1
            assert [r.offset for r in recs] == sorted(r.offset for r in recs)
            if key <= 10:
                assert [json.loads(r.value)["after"]["n"] for r in recs] == [0, 1, 2, 3]
            if key > 25 and key != 99:
                assert [json.loads(r.value)["op"] if r.value else None for r in recs] == [
                    "c",
                    "d",
                    None,
                ]

        (letter,) = asyncio.run(_read_all(kafka_bootstrap, topic + ".dlq"))
        assert json.loads(letter.key) == {"id": 99}
        doc = json.loads(letter.value)
        assert doc["topic"] == topic and "CHECK constraint failed" in doc["reason"]
        assert json.loads(base64.b64decode(doc["value"]))["after"]["name"] == "poison"
    finally:
        capture.close()
        sink.close()
        transport.close()
        source.dispose()
        target.dispose()
