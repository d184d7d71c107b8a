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
(forward and reverse after write cut-over) never loops an event back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

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
    and_,
    delete,
    func,
    insert,
    inspect,
    or_,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from cdc.coerce import coercer
from cdc.events import ChangeEvent, EventDecodeError, now_ms, parse_event
from cdc.mapping import MappingError, MappingSpec, TableMapping
from cdc.ports import Consumer, Message, TopicPartition, Transport

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


class SinkError(RuntimeError):
    """The sink cannot start: the target schema does not fit the mapping."""


def ensure_sink_tables(engine: Engine) -> None:
    """Create the sink's bookkeeping tables in the target database when absent."""
    _meta.create_all(engine, checkfirst=True)


@dataclass(frozen=True)
class SinkConfig:
    group: str
    topics: tuple[str, ...]
    batch_size: int = 2000
    poll_timeout_s: float = 0.2
    commit_to_transport: bool = True
    origin_tag: bool = True

    def __post_init__(self) -> None:
        if not self.group:
            raise ValueError("group must be a non-empty name")
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


@dataclass
class _Action:
    kind: str  # "upsert" | "delete"
    mapping: TableMapping
    key: tuple[Any, ...]
    row: dict[str, Any] | None = None


@dataclass
class _Decoded:
    msg: Message
    actions: list[_Action] = field(default_factory=list)
    reason: str | None = None
    ts_ms: int | None = None


class _TargetTable:
    """A reflected target table with per-column coercers and an upsert statement."""

    def __init__(self, engine: Engine, mapping: TableMapping) -> None:
        try:
            self.table = Table(mapping.target, MetaData(), autoload_with=engine)
        except SQLAlchemyError as exc:
            raise SinkError(
                f"target table {mapping.target!r} (for source {mapping.source!r}) cannot be read: "
                f"{exc.__class__.__name__}: {exc}"
            ) from None
        missing = [c.target for c in mapping.columns if c.target not in self.table.c]
        if missing:
            raise SinkError(
                f"target table {mapping.target!r} has no column(s) {', '.join(missing)} "
                f"named in the mapping of source {mapping.source!r}"
            )
        self.mapping = mapping
        self.coercers = {c.target: coercer(self.table.c[c.target].type) for c in mapping.columns}
        self.key_cols = [self.table.c[k] for k in mapping.key]
        self.dialect = engine.dialect.name
        non_key = [c.target for c in mapping.columns if c.target not in mapping.key]
        if self.dialect in {"sqlite", "postgresql"}:
            if self.dialect == "sqlite":
                from sqlalchemy.dialects.sqlite import insert as dialect_insert
            else:
                from sqlalchemy.dialects.postgresql import insert as dialect_insert
            stmt = dialect_insert(self.table)
            if non_key:
                self.upsert = stmt.on_conflict_do_update(
                    index_elements=list(mapping.key),
                    set_={c: stmt.excluded[c] for c in non_key},
                )
            else:
                self.upsert = stmt.on_conflict_do_nothing(index_elements=list(mapping.key))
        else:
            self.upsert = None

    def coerce(self, row: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for name, value in row.items():
            try:
                out[name] = self.coercers[name](value)
            except (ValueError, TypeError, ArithmeticError) as exc:
                raise MappingError(
                    f"table {self.mapping.source!r}: value {value!r} for column "
                    f"{self.mapping.target}.{name} ({self.table.c[name].type}) is invalid: {exc}"
                ) from None
        return out

    def coerce_key(self, key: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(self.coercers[k](v) for k, v in zip(self.mapping.key, key, strict=True))

    def key_where(self, keys: Sequence[tuple[Any, ...]]) -> Any:
        if len(self.key_cols) == 1:
            return self.key_cols[0].in_([k[0] for k in keys])
        return or_(*(and_(*(c == v for c, v in zip(self.key_cols, k, strict=True))) for k in keys))

    def write_upserts(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        if self.upsert is not None:
            conn.execute(self.upsert, rows)
            return
        keys = [tuple(r[k] for k in self.mapping.key) for r in rows]
        conn.execute(delete(self.table).where(self.key_where(keys)))
        conn.execute(insert(self.table), rows)

    def write_deletes(self, conn: Connection, keys: list[tuple[Any, ...]]) -> None:
        for i in range(0, len(keys), 500):
            conn.execute(delete(self.table).where(self.key_where(keys[i : i + 500])))


class Sink:
    """Consumes change events from the transport and applies them to one target database."""

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
        self._targets: dict[str, _TargetTable] = {}
        ensure_sink_tables(engine)
        for tm in mapping.tables:
            self._targets[tm.source] = _TargetTable(engine, tm)

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A target transaction marked as the sink's own (see origin tagging above)."""
        with self.engine.begin() as conn:
            if self.config.origin_tag:
                conn.execute(insert(apply_marker).values(origin=self.config.group))
            yield conn
            if self.config.origin_tag:
                conn.execute(delete(apply_marker).where(apply_marker.c.origin == self.config.group))

    # -- lifecycle
    def stored_offsets(self) -> dict[TopicPartition, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    sink_offsets.c.topic, sink_offsets.c.partition, sink_offsets.c.next_offset
                ).where(sink_offsets.c.group == self.config.group)
            ).all()
        return {TopicPartition(t, p): o for t, p, o in rows}

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

    # -- decoding
    def _decode(self, msg: Message) -> _Decoded:
        d = _Decoded(msg)
        try:
            event = parse_event(msg.value, None, msg.topic)  # the key is in the row image
        except EventDecodeError as exc:
            d.reason = f"undecodable event: {exc}"
            return d
        if event is None:
            return d  # tombstone: nothing to apply
        d.ts_ms = (
            event.source.get("ts_ms") if isinstance(event.source.get("ts_ms"), int) else event.ts_ms
        )
        try:
            d.actions = self._actions(event)
        except MappingError as exc:
            d.reason = f"mapping failed: {exc}"
        return d

    def _actions(self, event: ChangeEvent) -> list[_Action]:
        try:
            tm = self.mapping.for_source(event.table)
        except MappingError:
            raise MappingError(
                f"unknown table {event.table!r}: no mapping in service {self.mapping.service!r}"
            ) from None
        target = self._targets[tm.source]
        if event.op == "d":
            assert event.before is not None
            return [_Action("delete", tm, target.coerce_key(tm.target_key(event.before)))]
        assert event.after is not None
        actions = []
        if not tm.matches(event.after):
            tm.check_drift(event.after)
            key = target.coerce_key(tm.target_key(event.after))
            row = None
        else:
            row = target.coerce(tm.forward(event.after))
            key = tuple(row[k] for k in tm.key)
        if event.op == "u" and event.before is not None:
            try:
                old_key = target.coerce_key(tm.target_key(event.before))
            except MappingError:
                old_key = key
            if old_key != key:
                actions.append(_Action("delete", tm, old_key))
        if row is None:
            actions.append(_Action("delete", tm, key))
            return actions
        actions.append(_Action("upsert", tm, key, row))
        return actions

    # -- applying
    def _write_actions(self, conn: Connection, actions: Iterable[_Action]) -> tuple[int, int]:
        """Write actions keeping their order, batching consecutive runs of one kind/table."""
        upserts = deletes = 0
        run: list[_Action] = []

        def flush() -> None:
            nonlocal upserts, deletes
            if not run:
                return
            target = self._targets[run[0].mapping.source]
            if run[0].kind == "upsert":
                target.write_upserts(conn, [a.row for a in run if a.row is not None])
                upserts += len(run)
            else:
                target.write_deletes(conn, [a.key for a in run])
                deletes += len(run)
            run.clear()

        for a in actions:
            if run and (run[0].kind != a.kind or run[0].mapping is not a.mapping):
                flush()
            run.append(a)
        flush()
        return upserts, deletes

    def _write_offsets(
        self, conn: Connection, msgs: Sequence[Message], ts: int | None
    ) -> dict[TopicPartition, int]:
        nxt: dict[TopicPartition, int] = {}
        for m in msgs:
            tp = TopicPartition(m.topic, m.partition)
            nxt[tp] = max(nxt.get(tp, 0), m.offset + 1)
        now = now_ms()
        for tp, off in nxt.items():
            values = {"next_offset": off, "updated_ms": now}
            if ts is not None:
                values["last_ts_ms"] = ts
            res = conn.execute(
                update(sink_offsets)
                .where(
                    sink_offsets.c.group == self.config.group,
                    sink_offsets.c.topic == tp.topic,
                    sink_offsets.c.partition == tp.partition,
                )
                .values(**values)
            )
            if res.rowcount == 0:
                conn.execute(
                    insert(sink_offsets).values(
                        group=self.config.group, topic=tp.topic, partition=tp.partition, **values
                    )
                )
        return nxt

    def _dead_row(self, msg: Message, reason: str) -> dict[str, Any]:
        return {
            "group": self.config.group,
            "topic": msg.topic,
            "partition": msg.partition,
            "offset": msg.offset,
            "key": msg.key,
            "value": msg.value,
            "reason": reason[:4000],
            "created_ms": now_ms(),
            "attempts": 0,
        }

    def apply(self, msgs: Sequence[Message]) -> tuple[BatchResult, dict[TopicPartition, int]]:
        """Apply one polled batch; returns counts and the next offsets now stored."""
        if not msgs:
            return BatchResult(), {}
        decoded = [self._decode(m) for m in msgs]
        ts = max((d.ts_ms for d in decoded if d.ts_ms is not None), default=None)
        # Collapse: the last action per (target table, key) decides the final state.
        last: dict[tuple[str, tuple[Any, ...]], tuple[int, _Action]] = {}
        order = 0
        for d in decoded:
            for a in d.actions:
                last[(a.mapping.target, a.key)] = (order, a)
                order += 1
        actions = [a for _o, a in sorted(last.values(), key=lambda t: t[0])]
        dead = [d for d in decoded if d.reason]
        result = BatchResult(
            dead=len(dead), skipped=sum(1 for d in decoded if not d.actions and not d.reason)
        )
        try:
            with self.begin() as conn:
                result.applied, result.deleted = self._write_actions(conn, actions)
                if dead:
                    conn.execute(
                        insert(dead_letters), [self._dead_row(d.msg, d.reason or "") for d in dead]
                    )
                offsets = self._write_offsets(conn, msgs, ts)
            return result, offsets
        except (DBAPIError, SQLAlchemyError):
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
                        up, de = self._write_actions(conn, d.actions)
                        offsets.update(self._write_offsets(conn, [d.msg], d.ts_ms))
                    result.applied += up
                    result.deleted += de
                    if not d.actions:
                        result.skipped += 1
                    continue
                except (DBAPIError, SQLAlchemyError) as exc:
                    orig = getattr(exc, "orig", None) or exc
                    reason = f"database rejected the event: {orig.__class__.__name__}: {orig}"
            with self.begin() as conn:
                conn.execute(insert(dead_letters), [self._dead_row(d.msg, reason)])
                offsets.update(self._write_offsets(conn, [d.msg], d.ts_ms))
            result.dead += 1
        return result, offsets

    # -- loop
    def run_once(self) -> BatchResult:
        """Poll one batch, apply it, and tell the transport (best effort)."""
        if self.consumer is None:
            self.start()
        assert self.consumer is not None
        msgs = self.consumer.poll(self.config.batch_size, self.config.poll_timeout_s)
        result, offsets = self.apply(msgs)
        if offsets and self.config.commit_to_transport:
            try:
                self.consumer.commit(offsets)
            except Exception:  # noqa: BLE001 - the target DB holds the authoritative offsets
                pass
        self.last_batch_size = len(msgs)
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
            self.run_once()
            seen += self.last_batch_size
            idle = idle + 1 if self.last_batch_size == 0 else 0
        return seen


# ---------------------------------------------------------------------------------------------
# dead letters


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
        d = sink._decode(msg)
        reason = d.reason
        if reason is None:
            try:
                with sink.begin() as conn:
                    sink._write_actions(conn, d.actions)
                    conn.execute(delete(dead_letters).where(dead_letters.c.id == dl.id))
                ok += 1
                continue
            except (DBAPIError, SQLAlchemyError) as exc:
                orig = getattr(exc, "orig", None) or exc
                reason = f"database rejected the event: {orig.__class__.__name__}: {orig}"
        with sink.begin() as conn:
            conn.execute(
                update(dead_letters)
                .where(dead_letters.c.id == dl.id)
                .values(reason=reason, attempts=dead_letters.c.attempts + 1)
            )
        failed += 1
    return ok, failed
