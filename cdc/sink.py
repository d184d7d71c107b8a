"""The sink: applies change events to a service database through the mapping.

Exactly-once in effect: the rows of a batch, its dead letters and the consumed offsets
(``_cdc_sink_offsets``) are written in ONE target transaction; on start the sink seeks the
consumer to the stored offsets, so whatever the transport redelivers is skipped, and a replay
of any stretch of the log only re-applies full-row upserts/deletes in log order (idempotent).

Per-key order: a key always lands on one partition and a batch is collapsed to the last event
per target key before it is written, which is the state the events in order would produce.
A batch that fails in the database (constraint violation, bad value) is rolled back and
retried event by event, each in its own transaction with its offset, so the poison event is
isolated into ``_cdc_dead_letters`` and the rest applies.

Origin tagging: with ``SinkConfig.origin_tag`` (the default) every sink transaction inserts a
row into ``_cdc_apply_marker`` first and deletes it before commit, so capture triggers on the
target tables (cdc/capture/sqlite.py) skip the sink's own writes and CDC running both ways
(forward and reverse after write cut-over) never loops an event back. On PostgreSQL the
sink's commits carry a replication origin instead (``pg_origin_name``), which the pgoutput
capture skips with ``PgCaptureConfig(origin="none")``.

PostgreSQL rights: every apply transaction sets ``session_replication_role = replica``;
building a Sink checks that and the origin's rights first (cdc.pg_apply).

Where the parts live: bookkeeping tables and stored offsets (cdc.bookkeeping), PostgreSQL
rights, origin and apply transaction (cdc.pg_apply), target tables and the compiled row
preparation (cdc.target), unchanged-TOAST patches (cdc.patch), dead letters (cdc.dlq). The
names callers used from here are re-exported.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, delete, insert
from sqlalchemy.exc import SQLAlchemyError

from cdc.bookkeeping import (
    APPLY_MARKER,
    DEAD_LETTERS,
    SINK_OFFSETS,
    apply_marker,
    dead_letters,
    ensure_sink_tables,
    read_offsets,
    sink_offsets,
    write_offsets,
)
from cdc.dlq import (
    DLQ_SUFFIX,
    DeadLetter,
    count_dead_letters,
    dead_row,
    decode_dead_letter,
    drop_dead_letters,
    encode_dead_letter,
    list_dead_letters,
    retry_dead_letters,
)
from cdc.events import READERS, EventDecodeError, JsonReaders, decode_envelope_plain
from cdc.mapping import MappingError, MappingSpec
from cdc.patch import UnavailableRowError, merge_patch, patch_actions, rekey_deletes, write_patch
from cdc.pg_apply import (
    SinkPermissionError,
    check_pg_replica_role,
    ensure_pg_origin,
    pg_apply_transaction,
    pg_origin_name,
)
from cdc.ports import Consumer, Message, OutgoingMessage, Producer, TopicPartition, Transport
from cdc.retry import Backoff, TransientDatabaseError, rejection_reason, transient_reason
from cdc.target import Action, SinkError, TargetTable
from cdc.toast import any_unavailable, may_hold_placeholder, plain_row_may_hold

__all__ = [  # what callers import from here (the rest lives in the modules named above)
    "APPLY_MARKER",
    "DEAD_LETTERS",
    "DLQ_SUFFIX",
    "SINK_OFFSETS",
    "BatchResult",
    "DeadLetter",
    "Sink",
    "SinkConfig",
    "SinkError",
    "SinkPermissionError",
    "UnavailableRowError",
    "apply_marker",
    "check_pg_replica_role",
    "count_dead_letters",
    "dead_letters",
    "decode_dead_letter",
    "drop_dead_letters",
    "encode_dead_letter",
    "ensure_pg_origin",
    "ensure_sink_tables",
    "list_dead_letters",
    "pg_origin_name",
    "retry_dead_letters",
    "sink_offsets",
]

_log = logging.getLogger("cdc.sink")
DEAD_LETTER_STORES = ("table", "topic")


@dataclass(frozen=True)
class SinkConfig:
    group: str
    topics: tuple[str, ...]
    batch_size: int = 2000
    poll_timeout_s: float = 0.2
    commit_to_transport: bool = True
    origin_tag: bool = True
    # apply events another sink's writes produced (source.kit_origin, cdc.capture.sqlite
    # keep_applied tables): only a read-only replica's sink does; every other sink skips them
    # (applying them would loop a change back to where it came from)
    apply_sink_origins: bool = False
    # where dead letters go: "table" (_cdc_dead_letters in the target DB, in the batch's
    # transaction) or "topic" (<topic>.dlq on the transport, acknowledged before the commit)
    dead_letter_store: str = "table"

    def __post_init__(self) -> None:
        if not self.group:
            raise ValueError("group must be a non-empty name")
        if self.dead_letter_store not in DEAD_LETTER_STORES:
            raise ValueError(f"dead_letter_store must be one of {DEAD_LETTER_STORES}")
        if not self.topics:
            raise ValueError("topics must name at least one topic")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")


@dataclass
class BatchResult:
    applied: int = 0
    deleted: int = 0
    dead: int = 0
    skipped: int = 0
    row_by_row: bool = False
    retrying: str | None = None  # set: the batch waits for a retry (why, since when)


class _Decoded(NamedTuple):  # one per event, built with tuple.__new__ on the hot path
    msg: Message
    actions: list[Action]
    reason: str | None = None  # set: a dead letter
    ts_ms: int | None = None


_new = tuple.__new__


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Hold off the cyclic garbage collector while one batch is polled and applied.

    A batch allocates a dozen containers per event (messages, decoded documents, row tuples,
    actions) that live until the batch is written and form no cycles, so refcounting frees
    them all. With the collector on, every 700 allocations start a collection that walks the
    whole live batch again and promotes it into older generations that get walked again: a
    third of the sink's CPU time on a snapshot. Whatever cyclic garbage a batch does leave
    (from the database driver, say) is collected once the collector runs again after it.
    """
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


class Sink:
    """Consumes change events from the transport and applies them to one target database.

    Built, it checks what every apply needs (the target tables and columns, SinkError; on
    PostgreSQL the role's rights), so a sink that could not apply fails at once.
    """

    # reads each event value once (cdc.events.JsonReaders); tests swap in counting readers
    json_readers: JsonReaders = READERS

    def __init__(
        self,
        engine: Engine,
        mapping: MappingSpec,
        transport: Transport,
        config: SinkConfig,
    ) -> None:
        self.engine = engine
        self.mapping = mapping
        self.transport = transport
        self.config = config
        self.consumer: Consumer | None = None
        self._dlq_producer: Producer | None = None
        self._targets: dict[str, TargetTable] = {}
        self._pending: list[Message] | None = None  # a batch waiting for a retry
        self._backoff = Backoff()
        self.last_batch_size = 0
        if engine.dialect.name == "postgresql":
            check_pg_replica_role(engine)  # before anything is created: fail fast, clearly
        ensure_sink_tables(engine)
        for tm in mapping.tables:
            self._targets[tm.source] = TargetTable(engine, tm)
        self.pg_origin: str | None = None
        if config.origin_tag and engine.dialect.name == "postgresql":
            self.pg_origin = ensure_pg_origin(engine, pg_origin_name(engine, config.group))

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A target transaction marked as the sink's own (see origin tagging above)."""
        if self.engine.dialect.name == "postgresql":
            with pg_apply_transaction(self.engine, self.pg_origin) as conn:
                yield conn
            return
        with self.engine.begin() as conn:
            if self.config.origin_tag:
                conn.execute(insert(apply_marker).values(origin=self.config.group))
            yield conn
            if self.config.origin_tag:
                conn.execute(delete(apply_marker).where(apply_marker.c.origin == self.config.group))

    # -- lifecycle
    def stored_offsets(self) -> dict[TopicPartition, int]:
        return read_offsets(self.engine, self.config.group)

    def start(self) -> None:
        """Open the consumer and seek it to the offsets stored in the target database."""
        self.consumer = self.transport.consumer(self.config.group, self.config.topics)
        stored = {
            tp: o for tp, o in self.stored_offsets().items() if tp.topic in self.config.topics
        }
        if stored:
            self.consumer.seek(stored)

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None
        if self._dlq_producer is not None:
            self._dlq_producer.close()
            self._dlq_producer = None

    # -- decoding
    def decode(self, msg: Message) -> _Decoded:
        """The actions of one event, or the reason it is a dead letter (cdc.dlq retries
        through this too)."""
        value = msg.value
        try:
            # the key is in the row image; of the source only table and ts_ms are used
            env, plain = decode_envelope_plain(value, msg.topic, False, self.json_readers)
        except EventDecodeError as exc:
            return _Decoded(msg, [], f"undecodable event: {exc}")
        if env is None:
            return _Decoded(msg, [])  # tombstone: nothing to apply
        op, table, before, after, source, ts_ms = env
        if "kit_origin" in source and not self.config.apply_sink_origins:
            return _Decoded(msg, [])  # another sink's write: not for this one (no loop)
        source_ts = source.get("ts_ms")
        ts = source_ts if isinstance(source_ts, int) else ts_ms
        if plain:  # only str/int/bool/None values: only a scalar spelling is possible
            placeholders = after is not None and plain_row_may_hold(after)
        else:
            placeholders = may_hold_placeholder(value)
        try:
            actions = self._actions(op, table, before, after, placeholders)
        except MappingError as exc:
            return _Decoded(msg, [], f"mapping failed: {exc}", ts)
        return _new(_Decoded, (msg, actions, None, ts))

    def _actions(
        self,
        op: str,
        table: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        placeholders: bool = True,
    ) -> list[Action]:
        target = self._targets.get(table)
        if target is None:
            raise MappingError(
                f"unknown table {table!r}: no mapping in service {self.mapping.service!r}"
            )
        tm = target.mapping
        if op == "d":
            assert before is not None
            return [Action("delete", tm, target.coerce_key(target.target_key(before)))]
        if op == "t":
            return [Action("truncate", tm, ())]
        assert after is not None
        if placeholders and any_unavailable(after):
            return patch_actions(op, target, before, after)
        if target.matches is not None and not target.matches(after):
            tm.check_drift(after)
            key = target.coerce_key(target.target_key(after))
            upsert = Action("delete", tm, key)
        else:
            key, row = target.prepare(after)
            upsert = _new(Action, ("upsert", tm, key, row, None, False))
        if op != "u" or before is None:
            return [upsert]
        actions = rekey_deletes(op, target, before, key)
        actions.append(upsert)
        return actions

    def _store_dead(self, conn: Connection, dead: Sequence[tuple[Message, str]]) -> None:
        """Dead letters into the target table (same transaction) or to <topic>.dlq."""
        if self.config.dead_letter_store == "table":
            conn.execute(insert(dead_letters), [dead_row(self.config.group, m, r) for m, r in dead])
            return
        if self._dlq_producer is None:
            self._dlq_producer = self.transport.producer()
        self._dlq_producer.send_batch(
            [
                OutgoingMessage(
                    m.topic + DLQ_SUFFIX,
                    m.key,
                    encode_dead_letter(dead_row(self.config.group, m, r)),
                )
                for m, r in dead
            ]
        )

    # -- applying
    def write_actions(self, conn: Connection, actions: Iterable[Action]) -> tuple[int, int]:
        """Write actions keeping their order, batching consecutive runs of one kind/table."""
        upserts = deletes = 0
        run: list[Action] = []

        def flush() -> None:
            nonlocal upserts, deletes
            if not run:
                return
            target = self._targets[run[0].mapping.source]
            if run[0].kind == "upsert":
                target.write_upserts(conn, run)
                upserts += len(run)
            elif run[0].kind == "patch":
                for a in run:
                    write_patch(conn, target, a)
                upserts += len(run)
            elif run[0].kind == "truncate":
                deletes += conn.execute(delete(target.table)).rowcount or 0
            else:
                target.write_deletes(conn, [a.key for a in run])
                deletes += len(run)
            run.clear()

        kind, mapping = None, None
        append = run.append
        for a in actions:
            if a.kind != kind or a.mapping is not mapping:
                flush()
                kind, mapping = a.kind, a.mapping
            append(a)
        flush()
        return upserts, deletes

    def apply(
        self, msgs: Sequence[Message], resumed: bool = False
    ) -> tuple[BatchResult, dict[TopicPartition, int]]:
        """Apply one polled batch; returns counts and the next offsets now stored.

        A database failure that says nothing about the events (cdc.retry) raises
        TransientDatabaseError and dead-letters nothing; `resumed` applies such a batch again,
        less the events the target already stored (a row-by-row pass may have committed some).
        """
        try:
            if resumed:
                msgs = self._unapplied(msgs)
            if not msgs:
                return BatchResult(), {}
            with _no_cyclic_gc():
                return self._apply(msgs)
        except SQLAlchemyError as exc:
            reason = transient_reason(exc)
            if reason is None:
                raise
            raise TransientDatabaseError(reason) from exc

    def _unapplied(self, msgs: Sequence[Message]) -> list[Message]:
        stored = self.stored_offsets()
        return [m for m in msgs if m.offset >= stored.get(TopicPartition(m.topic, m.partition), 0)]

    def _apply(self, msgs: Sequence[Message]) -> tuple[BatchResult, dict[TopicPartition, int]]:
        decode = self.decode
        decoded = [decode(m) for m in msgs]
        ts: int | None = None
        dead: list[_Decoded] = []
        skipped = 0
        # Collapse: the last action per (target table, key) decides the final state; the dict
        # keeps keys in the order of their last action (pop + re-insert moves a key to the end).
        last: dict[tuple[str, tuple[Any, ...]], Action] = {}
        for d in decoded:
            _msg, d_actions, reason, d_ts = d
            if d_ts is not None and (ts is None or d_ts > ts):
                ts = d_ts
            if reason:
                dead.append(d)
                continue
            if not d_actions:
                skipped += 1
                continue
            for a in d_actions:
                k = (a.mapping.target, a.key)
                if k in last:
                    if a.kind == "patch":
                        prev = last[k]
                        a = merge_patch(self._targets[prev.mapping.source], prev, a)
                    del last[k]
                elif a.kind == "truncate":  # earlier actions on the table are wiped anyway
                    for gone in [g for g in last if g[0] == a.mapping.target]:
                        del last[gone]
                last[k] = a
        actions = list(last.values())
        result = BatchResult(dead=len(dead), skipped=skipped)
        try:
            with self.begin() as conn:
                result.applied, result.deleted = self.write_actions(conn, actions)
                if dead:
                    self._store_dead(conn, [(d.msg, d.reason or "") for d in dead])
                offsets = write_offsets(conn, self.config.group, msgs, ts)
            return result, offsets
        except SQLAlchemyError as exc:
            if transient_reason(exc):
                raise
            return self._apply_one_by_one(decoded)

    def _apply_one_by_one(
        self, decoded: list[_Decoded]
    ) -> tuple[BatchResult, dict[TopicPartition, int]]:
        result = BatchResult(row_by_row=True)
        offsets: dict[TopicPartition, int] = {}
        for d in decoded:
            reason = d.reason
            if reason is None:
                try:
                    with self.begin() as conn:
                        up, de = self.write_actions(conn, d.actions)
                        offsets.update(write_offsets(conn, self.config.group, [d.msg], d.ts_ms))
                    result.applied += up
                    result.deleted += de
                    if not d.actions:
                        result.skipped += 1
                    continue
                except SQLAlchemyError as exc:
                    reason = rejection_reason(exc)
            with self.begin() as conn:
                self._store_dead(conn, [(d.msg, reason)])
                offsets.update(write_offsets(conn, self.config.group, [d.msg], d.ts_ms))
            result.dead += 1
        return result, offsets

    # -- loop
    @property
    def retrying(self) -> str | None:
        """Why the sink is waiting to apply its batch again (None: it is not)."""
        return self._backoff.describe() if self._pending is not None else None

    def run_once(self) -> BatchResult:
        """Poll one batch (or take the one waiting for a retry), apply it, and tell the
        transport (best effort). A transient database failure keeps the batch for a retry
        after a backoff; a retry not yet due waits at most a poll timeout and returns."""
        if self.consumer is None:
            self.start()
        assert self.consumer is not None
        pending = self._pending
        if pending is not None and (wait := self._backoff.wait_s()) > 0:
            time.sleep(min(wait, self.config.poll_timeout_s))
            return BatchResult(retrying=self.retrying)
        with _no_cyclic_gc():
            if pending is not None:
                msgs = pending
            else:
                msgs = self.consumer.poll(self.config.batch_size, self.config.poll_timeout_s)
            self.last_batch_size = len(msgs)
            try:
                result, offsets = self.apply(msgs, resumed=pending is not None)
            except TransientDatabaseError as exc:
                self._pending = list(msgs)
                self._backoff.failed(str(exc))
                _log.warning("sink %s: %s", self.config.group, self.retrying)
                return BatchResult(retrying=self.retrying)
            if pending is not None:
                _log.info(
                    "sink %s: applied after %d retries", self.config.group, self._backoff.attempts
                )
                self._pending, self._backoff = None, Backoff()
            del msgs  # freed while the collector still waits: it never has to walk them
        if offsets and self.config.commit_to_transport:
            try:
                self.consumer.commit(offsets)
            except Exception:  # noqa: BLE001 - the target DB holds the authoritative offsets
                pass
        return result

    def run(
        self, stop: threading.Event, on_batch: Callable[[BatchResult, int], None] | None = None
    ) -> None:
        """Loop until `stop` is set."""
        while not stop.is_set():
            result = self.run_once()
            if on_batch and self.last_batch_size:
                on_batch(result, self.last_batch_size)

    def drain(self, idle_polls: int = 2, timeout_s: float = 30.0) -> int:
        """Apply until `idle_polls` consecutive polls return nothing; returns messages seen."""
        seen, idle = 0, 0
        deadline = time.monotonic() + timeout_s
        while idle < idle_polls and time.monotonic() < deadline:
            if self.run_once().retrying is not None:
                idle = 0
                continue
            seen += self.last_batch_size
            idle = idle + 1 if self.last_batch_size == 0 else 0
        return seen
