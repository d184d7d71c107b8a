"""KafkaTransport against a real Kafka-protocol broker (Tansu, or $KAFKA_BOOTSTRAP_SERVERS)."""

from __future__ import annotations

import time

import pytest

from cdc.ports import Message, OutgoingMessage, TopicPartition
from cdc.transport.kafka import KafkaConfig, KafkaTransport, dlq_topic, wait_for_assignments

pytestmark = pytest.mark.integration


@pytest.fixture
def transport(kafka_config: KafkaConfig):
    transport = KafkaTransport(kafka_config)
    yield transport
    transport.close()


@pytest.fixture
def closing():
    """Close every producer/consumer a test opens, even when it fails."""
    opened = []
    yield lambda client: opened.append(client) or client
    for client in reversed(opened):
        client.close()


def read(consumer, count: int, timeout_s: float = 20.0) -> list[Message]:
    out: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < count and time.monotonic() < deadline:
        out += consumer.poll(max_records=count - len(out), timeout_s=0.2)
    return out


def test_messages_round_trip_with_keys_values_and_tombstones(transport, closing, kafka_topic):
    producer = closing(transport.producer())
    sent = [
        OutgoingMessage(kafka_topic, b'{"id": 1}', b'{"op": "c"}'),
        OutgoingMessage(kafka_topic, b'{"id": 2}', b'{"op": "u"}'),
        OutgoingMessage(kafka_topic, b'{"id": 1}', None),
        OutgoingMessage(kafka_topic, None, b"no key"),
    ]
    producer.send_batch(sent)
    consumer = closing(transport.consumer("round-trip", [kafka_topic]))

    got = read(consumer, len(sent))

    assert sorted((m.key or b"", m.value or b"") for m in got) == sorted(
        (m.key or b"", m.value or b"") for m in sent
    )
    assert all(m.topic == kafka_topic and m.timestamp_ms > 0 for m in got)
    assert [m.value for m in got if m.key == b'{"id": 1}'] == [b'{"op": "c"}', None]


def test_same_key_lands_on_one_partition_in_send_order(transport, closing, kafka_topic):
    producer = closing(transport.producer())
    keys = [f"order-{i}".encode() for i in range(6)]
    batch = [
        OutgoingMessage(kafka_topic, k, f"{k.decode()}:{n}".encode())
        for n in range(5)
        for k in keys
    ]
    producer.send_batch(batch)
    consumer = closing(transport.consumer("ordering", [kafka_topic]))

    got = read(consumer, len(batch))

    assert len(got) == len(batch)
    for key in keys:
        mine = [m for m in got if m.key == key]
        assert {m.partition for m in mine} == {producer.partition_for(kafka_topic, key)}
        assert [m.value for m in mine] == [f"{key.decode()}:{n}".encode() for n in range(5)]
        assert [m.offset for m in mine] == sorted(m.offset for m in mine)
    assert len({m.partition for m in got}) > 1  # six keys spread over three partitions


def test_new_group_member_resumes_after_the_committed_offset(transport, closing, kafka_topic):
    transport.ensure_topic(kafka_topic, partitions=1)
    producer = closing(transport.producer())
    producer.send_batch([OutgoingMessage(kafka_topic, b"k", str(i).encode()) for i in range(6)])
    first = transport.consumer("resume", [kafka_topic])
    try:
        assert [m.offset for m in read(first, 6)] == [0, 1, 2, 3, 4, 5]
        first.commit({TopicPartition(kafka_topic, 0): 4})
    finally:
        first.close()

    second = closing(transport.consumer("resume", [kafka_topic]))

    assert [(m.offset, m.value) for m in read(second, 2)] == [(4, b"4"), (5, b"5")]


def test_two_groups_read_the_same_messages_independently(transport, closing, kafka_topic):
    producer = closing(transport.producer())
    producer.send_batch([OutgoingMessage(kafka_topic, str(i).encode(), b"v") for i in range(9)])
    alpha = closing(transport.consumer("alpha", [kafka_topic]))
    beta = closing(transport.consumer("beta", [kafka_topic]))
    wait_for_assignments([alpha, beta])  # both joins in parallel

    from_alpha = read(alpha, 9)
    alpha.commit({TopicPartition(m.topic, m.partition): m.offset + 1 for m in from_alpha})
    from_beta = read(beta, 9)

    key = lambda m: (m.partition, m.offset)  # noqa: E731
    assert sorted(map(key, from_alpha)) == sorted(map(key, from_beta))
    assert len(from_beta) == 9
    assert transport.committed("beta", [kafka_topic]) == {}


def test_end_offsets_and_committed_offsets_give_the_lag(kafka_config, closing, kafka_topic):
    batching = KafkaTransport(
        KafkaConfig(**{**_init_args(kafka_config), "linger_ms": 50, "compression_type": "gzip"})
    )
    try:
        batching.ensure_topic(kafka_topic, partitions=2)
        producer = closing(batching.producer())
        # many records per batch: the case where Tansu's ListOffsets under-reports
        messages = [OutgoingMessage(kafka_topic, f"k{i}".encode(), b"x" * 50) for i in range(40)]
        producer.send_batch(messages)
        expected_end = {
            TopicPartition(kafka_topic, p): sum(
                1 for m in messages if producer.partition_for(kafka_topic, m.key) == p
            )
            for p in range(2)
        }
        assert batching.end_offsets([kafka_topic]) == expected_end

        consumer = closing(batching.consumer("lag", [kafka_topic]))
        got = read(consumer, 40)
        assert len(got) == 40
        first_partition = TopicPartition(kafka_topic, 0)
        consumer.commit({first_partition: 3})
        committed = batching.committed("lag", [kafka_topic])
        lag = {
            tp: end - committed.get(tp, 0)
            for tp, end in batching.end_offsets([kafka_topic]).items()
        }

        assert committed == {first_partition: 3}
        assert lag[first_partition] == expected_end[first_partition] - 3
        assert batching.end_offsets(["no-such-topic-here"]) == {}
    finally:
        batching.close()


def test_topics_are_created_with_the_requested_partition_count(transport, closing, kafka_topic):
    transport.ensure_topic(kafka_topic, partitions=4)
    transport.ensure_topic(kafka_topic, partitions=4)  # idempotent
    producer = closing(transport.producer())
    auto = kafka_topic + "-auto"
    producer.send_batch([OutgoingMessage(auto, b"k", b"v")])  # created on first send

    assert transport.partitions_of(kafka_topic) == 4
    assert transport.partitions_of(auto) == transport.config.partitions
    assert transport.end_offsets([kafka_topic]) == {
        TopicPartition(kafka_topic, p): 0 for p in range(4)
    }
    with pytest.raises(ValueError, match="topic"):
        transport.ensure_topic("bad topic/name")


def test_seek_rewinds_and_seek_before_assignment_applies_on_join(transport, closing, kafka_topic):
    transport.ensure_topic(kafka_topic, partitions=1)
    partition = TopicPartition(kafka_topic, 0)
    producer = closing(transport.producer())
    producer.send_batch([OutgoingMessage(kafka_topic, b"k", str(i).encode()) for i in range(5)])
    consumer = closing(transport.consumer("seeker", [kafka_topic]))
    consumer.seek({partition: 3})  # not assigned yet: applied when the group assigns it

    assert [m.offset for m in read(consumer, 2)] == [3, 4]
    consumer.seek({partition: 1})
    assert [m.offset for m in read(consumer, 4)] == [1, 2, 3, 4]
    assert consumer.position() == {partition: 5}


def test_dead_letter_topic_is_the_topic_with_a_dlq_suffix(transport, closing, kafka_topic):
    producer = closing(transport.producer())
    producer.send_batch([OutgoingMessage(dlq_topic(kafka_topic), b"bad", b"\xff")])

    assert dlq_topic("shop.public.orders") == "shop.public.orders.dlq"
    assert (
        transport.end_offsets([dlq_topic(kafka_topic)])[TopicPartition(kafka_topic + ".dlq", 0)]
        >= 0
    )


def _init_args(config: KafkaConfig) -> dict:
    from dataclasses import fields

    return {f.name: getattr(config, f.name) for f in fields(config) if f.init}
