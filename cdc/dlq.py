"""Dead letters wherever the sink stored them: the target database or ``<topic>.dlq`` topics.

The sink writes a dead letter either into ``_cdc_dead_letters`` of the target database (the
embedded default: same transaction as the batch) or, with
``SinkConfig(dead_letter_store="topic")`` (the Kafka deployment), as a message on the
transport's ``<topic>.dlq`` topic whose value is the same record as JSON. This module reads
either store so `kit cdc dlq list` works the same on both.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import Engine

from cdc.ports import Transport
from cdc.sink import DLQ_SUFFIX, DeadLetter, decode_dead_letter, list_dead_letters


def dlq_topics(topics: Iterable[str]) -> list[str]:
    """Dead-letter topic of each source topic."""
    return [t + DLQ_SUFFIX for t in topics]


def read_topic_dead_letters(
    transport: Transport,
    topics: Iterable[str],
    group: str | None = None,
    limit: int = 100,
    idle_polls: int = 2,
) -> list[DeadLetter]:
    """Dead letters on the ``<topic>.dlq`` topics of `topics` (oldest first per partition).

    Reads from the beginning with a throw-away consumer group and commits nothing, so the
    topics are left as they are. Skips the group join when the topics hold nothing.
    """
    names = dlq_topics(topics)
    ends = transport.end_offsets(names)
    if not any(ends.values()):
        return []
    consumer = transport.consumer(f"kit-dlq-reader-{uuid.uuid4().hex[:8]}", names)
    out: list[DeadLetter] = []
    try:
        wait = getattr(consumer, "wait_for_assignment", None)
        if wait is not None:  # Kafka: an empty poll means nothing only once the group joined
            wait(30.0)
        seen: dict = {}
        idle = 0
        while idle < idle_polls and len(out) < limit:
            batch = consumer.poll(min(500, limit), 0.5)
            idle = idle + 1 if not batch else 0
            for m in batch:
                seen[(m.topic, m.partition)] = m.offset + 1
                if m.value is None:
                    continue
                letter = decode_dead_letter(m.value, m.offset)
                if group is None or letter.group == group:
                    out.append(letter)
            if all(seen.get((tp.topic, tp.partition), 0) >= end for tp, end in ends.items()):
                break
    finally:
        consumer.close()
    return out[:limit]


def list_any_dead_letters(
    store: str,
    *,
    target: Engine | None,
    transport: Transport | None,
    topics: Iterable[str],
    group: str | None,
    limit: int = 100,
) -> list[DeadLetter]:
    """Dead letters from the store the sink was configured with ("table" or "topic")."""
    if store == "topic":
        if transport is None:
            raise ValueError("transport: needed to read <topic>.dlq dead letters")
        return read_topic_dead_letters(transport, topics, group, limit)
    if target is None:
        raise ValueError("target: needed to read dead letters stored in the target database")
    return list_dead_letters(target, group, limit)
