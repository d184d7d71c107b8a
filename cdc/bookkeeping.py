"""The sink's bookkeeping tables in the target database, and its stored offsets.

``_cdc_sink_offsets`` holds, per group and partition, the next offset to read: written in the
same transaction as the rows of a batch, it is what makes the sink exactly-once in effect
(a restarted sink seeks to it, whatever the transport's own committed offsets say).
``_cdc_dead_letters`` holds the events the sink could not apply (cdc.dlq reads and retries
them), and ``_cdc_apply_marker`` marks a SQLite transaction as the sink's own, so capture
triggers on the target skip it (origin tagging, see cdc.sink).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby
from operator import itemgetter

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)

from cdc.events import now_ms
from cdc.ports import Message, TopicPartition

SINK_OFFSETS = "_cdc_sink_offsets"
DEAD_LETTERS = "_cdc_dead_letters"
APPLY_MARKER = "_cdc_apply_marker"  # same name as cdc.capture.sqlite.APPLY_MARKER
_meta = MetaData()
sink_offsets = Table(
    SINK_OFFSETS,
    _meta,
    Column("group", String(200), primary_key=True),
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True, autoincrement=False),
    Column("next_offset", BigInteger, nullable=False),
    Column("last_ts_ms", BigInteger),
    Column("updated_ms", BigInteger),
)
dead_letters = Table(
    DEAD_LETTERS,
    _meta,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("group", String(200), nullable=False),
    Column("topic", String(255), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("key", LargeBinary),
    Column("value", LargeBinary),
    Column("reason", Text, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
)
apply_marker = Table(APPLY_MARKER, _meta, Column("origin", String(200), primary_key=True))

_topic_partition = itemgetter(0, 1)  # of a Message
_offset = itemgetter(2)


def ensure_sink_tables(engine: Engine) -> None:
    """Create the sink's bookkeeping tables in the target database when absent."""
    _meta.create_all(engine, checkfirst=True)


def read_offsets(engine: Engine, group: str) -> dict[TopicPartition, int]:
    """Next offsets to read that `group` stored, per partition."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                sink_offsets.c.topic, sink_offsets.c.partition, sink_offsets.c.next_offset
            ).where(sink_offsets.c.group == group)
        ).all()
    return {TopicPartition(t, p): o for t, p, o in rows}


def write_offsets(
    conn: Connection, group: str, msgs: Sequence[Message], ts: int | None
) -> dict[TopicPartition, int]:
    """Store, in the caller's transaction, the next offset after `msgs` per partition (and the
    newest source timestamp applied, for lag); returns those next offsets."""
    ends: dict[tuple[str, int], int] = {}
    # A poll returns each partition's messages as one run: one max() per run, in C.
    for tp, run in groupby(msgs, _topic_partition):
        end = max(map(_offset, run)) + 1
        if end > ends.get(tp, 0):
            ends[tp] = end
    nxt = {TopicPartition(t, p): o for (t, p), o in ends.items()}
    now = now_ms()
    for tp, off in nxt.items():
        values = {"next_offset": off, "updated_ms": now}
        if ts is not None:
            values["last_ts_ms"] = ts
        res = conn.execute(
            update(sink_offsets)
            .where(
                sink_offsets.c.group == group,
                sink_offsets.c.topic == tp.topic,
                sink_offsets.c.partition == tp.partition,
            )
            .values(**values)
        )
        if res.rowcount == 0:
            conn.execute(
                insert(sink_offsets).values(
                    group=group, topic=tp.topic, partition=tp.partition, **values
                )
            )
    return nxt
