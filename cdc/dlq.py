"""Dead letters: the events a sink could not apply, wherever it stored them.

The sink writes a dead letter either into ``_cdc_dead_letters`` of the target database (the
embedded default: same transaction as the batch) or, with
``SinkConfig(dead_letter_store="topic")`` (the Kafka deployment), as a message on the
transport's ``<topic>.dlq`` topic whose value is the same record as JSON (encode_dead_letter).
This module holds that codec and reads either store, so `kit cdc dlq list` works the same on
both; dead letters in the table can be dropped or retried through a (fixed) sink.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, delete, func, inspect, select, update
from sqlalchemy.exc import SQLAlchemyError

from cdc.bookkeeping import DEAD_LETTERS, dead_letters
from cdc.events import now_ms
from cdc.ports import Message, Transport
from cdc.retry import rejection_reason

if TYPE_CHECKING:
    from cdc.sink import Sink

DLQ_SUFFIX = ".dlq"  # dead-letter topic = <topic>.dlq (same as cdc.transport.kafka.dlq_topic)


def dead_row(group: str, msg: Message, reason: str) -> dict[str, Any]:
    """The `_cdc_dead_letters` row of `msg` (also the value of its <topic>.dlq message)."""
    return {
        "group": group,
        "topic": msg.topic,
        "partition": msg.partition,
        "offset": msg.offset,
        "key": msg.key,
        "value": msg.value,
        "reason": reason[:4000],
        "created_ms": now_ms(),
        "attempts": 0,
    }


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
        d = sink.decode(msg)
        reason = d.reason
        if reason is None:
            try:
                with sink.begin() as conn:
                    sink.write_actions(conn, d.actions)
                    conn.execute(delete(dead_letters).where(dead_letters.c.id == dl.id))
                ok += 1
                continue
            except SQLAlchemyError as exc:
                reason = rejection_reason(exc)
        with sink.begin() as conn:
            conn.execute(
                update(dead_letters)
                .where(dead_letters.c.id == dl.id)
                .values(reason=reason, attempts=dead_letters.c.attempts + 1)
            )
        failed += 1
    return ok, failed


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
