"""SQLite change capture: triggers → change table → capture worker → transport.

Triggers on each captured table write every insert/update/delete, with before and after images
(``json_object`` of all columns), into ``_cdc_changes`` inside the writing transaction, so a
change is captured if and only if it commits. The capture worker reads that table in ``seq``
order (SQLite has one writer at a time, so ``seq`` order is commit order), publishes batches to
the transport and only then records its position in ``_cdc_offsets`` (at-least-once).

Snapshots run inside the same worker so that they are ordered with the stream: a chunk of rows
and the change table's high-water mark H are read in one read transaction; every change up to
H is published first, then the chunk as ``op: "r"`` events, then changes after H. Per key, the
log therefore always holds a valid history (state ≤ H, snapshot at H, changes > H), and the
sink never applies older snapshot data over a newer change. Chunk progress is stored in
``_cdc_snapshots`` after the chunk is acknowledged, so an interrupted snapshot resumes at the
last finished chunk. See docs/events.md.

Origin tagging (no loops when CDC runs both ways): a sink marks its own transactions by
writing a row into ``_cdc_apply_marker`` and deleting it again before commit; the triggers'
``WHEN NOT EXISTS (SELECT 1 FROM _cdc_apply_marker)`` clause skips every change made while
such a row exists. SQLite has one writer at a time and other connections never see the
uncommitted marker, so exactly the sink's own changes are skipped.

Tables installed with ``keep_applied`` (a table other databases keep read-only replicas of)
record the sink's changes too, tagged with the marker's origin (the sink's group) in
``_cdc_changes.origin``; their events carry it as ``source.kit_origin``. A sink skips such
events unless it is told to apply them (``SinkConfig.apply_sink_origins``, a replica's sink),
so the replica follows whichever side writes the table while the loop stays closed.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, text

from cdc.events import ENVELOPE_VERSION, encode_value_raw, now_ms, topic_name
from cdc.keys import duplicate_key
from cdc.locks import try_exclusive
from cdc.ports import OutgoingMessage, Transport

CHANGES = "_cdc_changes"
OFFSETS = "_cdc_offsets"
TABLES = "_cdc_capture_tables"
SNAPSHOTS = "_cdc_snapshots"
APPLY_MARKER = "_cdc_apply_marker"
NOT_APPLIED_BY_SINK = f"WHEN NOT EXISTS (SELECT 1 FROM {APPLY_MARKER}) "
SINK_ORIGIN_SQL = f"(SELECT origin FROM {APPLY_MARKER} LIMIT 1)"
ORIGIN_KEY = "kit_origin"  # source field of an event a sink applied (keep_applied tables)
NOW_MS_SQL = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"

DDL = [
    f"""CREATE TABLE IF NOT EXISTS {CHANGES} (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        tbl TEXT NOT NULL, op TEXT NOT NULL, pk TEXT, old_pk TEXT,
        txid INTEGER, before TEXT, after TEXT, ts_ms INTEGER NOT NULL, origin TEXT)""",
    f"""CREATE TABLE IF NOT EXISTS {OFFSETS} (
        name TEXT PRIMARY KEY, last_seq INTEGER NOT NULL,
        last_ts_ms INTEGER, updated_ms INTEGER)""",
    f"""CREATE TABLE IF NOT EXISTS {TABLES} (
        tbl TEXT PRIMARY KEY, pk TEXT NOT NULL, columns TEXT NOT NULL, enabled_ms INTEGER)""",
    f"""CREATE TABLE IF NOT EXISTS {SNAPSHOTS} (
        tbl TEXT PRIMARY KEY, status TEXT NOT NULL, last_pk TEXT,
        rows_done INTEGER NOT NULL DEFAULT 0, chunks_done INTEGER NOT NULL DEFAULT 0,
        rows_total INTEGER, high_seq INTEGER, requested_ms INTEGER, finished_ms INTEGER)""",
    f"""CREATE TABLE IF NOT EXISTS {APPLY_MARKER} (origin VARCHAR(200) PRIMARY KEY)""",
]


def _ensure_origin_column(execute: Callable[[str], Any]) -> None:
    """Change tables made before origins were recorded get the column (NULL: not a sink's)."""
    cols = [r[1] for r in execute(f"PRAGMA table_info({CHANGES})").fetchall()]
    if "origin" not in cols:
        execute(f"ALTER TABLE {CHANGES} ADD COLUMN origin TEXT")


class CaptureError(RuntimeError):
    """Capture cannot be set up or run; the message says which table and why."""


class CaptureBusy(CaptureError):
    """Another capture worker holds the lock for this source database."""


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class CapturedTable:
    name: str
    pk: tuple[str, ...]
    columns: tuple[str, ...]


# ---------------------------------------------------------------------------------------------
# install / remove (callable from an Alembic revision with op.get_bind())


def _table_info(conn: Connection, table: str) -> list[tuple[str, str, int]]:
    rows = conn.exec_driver_sql(f"PRAGMA table_info({_q(table)})").fetchall()
    return [(r[1], (r[2] or "").upper(), int(r[5])) for r in rows]


def _image(alias: str, columns: Sequence[tuple[str, str]]) -> str:
    parts = []
    for name, decl in columns:
        ref = f"{alias}.{_q(name)}"
        if decl == "" or "BLOB" in decl:
            ref = f"CASE WHEN typeof({ref}) = 'blob' THEN hex({ref}) ELSE {ref} END"
        parts.append(f"{_lit(name)}, {ref}")
    return f"json_object({', '.join(parts)})"


def _check_sqlite(conn: Connection) -> None:
    if conn.dialect.name != "sqlite":
        raise CaptureError(
            f"trigger capture needs SQLite, got {conn.dialect.name}: use the PostgreSQL capture"
        )


def _capture_key(
    conn: Connection, table: str, info: list[tuple[str, str, int]], declared: Sequence[str] | None
) -> tuple[str, ...]:
    """The event key of `table`: its primary key, else the key the mapping declares (which
    must name existing columns and hold no duplicate); CaptureError says which is missing."""
    pk = tuple(n for n, _d, k in sorted((c for c in info if c[2] > 0), key=lambda c: c[2]))
    if pk:
        return pk
    if not declared:
        raise CaptureError(
            f"cannot capture table {table!r}: it has no primary key and the mapping declares "
            "no key for it (give its [[tables]] entry key = [...] naming unique columns)"
        )
    names = {n for n, _d, _k in info}
    unknown = [c for c in declared if c not in names]
    if unknown:
        raise CaptureError(
            f"cannot capture table {table!r} by its declared key {list(declared)}: no column(s) "
            f"{', '.join(unknown)}"
        )
    dup = duplicate_key(conn, _q(table), declared)
    if dup is not None:
        raise CaptureError(
            f"cannot capture table {table!r} by its declared key {list(declared)}: the key is "
            f"not unique (several rows have {tuple(dup)}); declare a unique key or add a "
            "unique index"
        )
    return tuple(declared)


def install_capture(
    conn: Connection,
    tables: Iterable[str],
    keys: Mapping[str, Sequence[str]] | None = None,
    keep_applied: Iterable[str] = (),
) -> list[CapturedTable]:
    """Create the change table and (re)create the triggers of `tables` on this connection.

    Idempotent: calling it again after ALTER TABLE refreshes the triggers so the row images
    carry the new columns. A table without a primary key is captured by ``keys[table]`` (the
    key its mapping declares). Every table is checked before anything is created: one
    CaptureError names every table that cannot be captured, and none is.
    Tables in `keep_applied` also record the changes sinks make, tagged with the sink's origin
    (see origin tagging above). Alembic: ``install_capture(op.get_bind(), ["products"])``.
    """
    _check_sqlite(conn)
    tables = list(tables)
    keep = set(keep_applied)
    keys = keys or {}
    plans: list[tuple[str, list[tuple[str, str, int]], tuple[str, ...]]] = []
    problems: list[str] = []
    for table in tables:
        info = _table_info(conn, table)
        if not info:
            problems.append(f"cannot capture table {table!r}: it does not exist")
            continue
        try:
            plans.append((table, info, _capture_key(conn, table, info, keys.get(table))))
        except CaptureError as exc:
            problems.append(str(exc))
    if problems:
        raise CaptureError(
            problems[0]
            if len(problems) == 1
            else f"no table enabled, {len(problems)} cannot be captured:\n  "
            + "\n  ".join(problems)
        )
    for ddl in DDL:
        conn.exec_driver_sql(ddl)
    _ensure_origin_column(conn.exec_driver_sql)
    done = []
    for table, info, pk in plans:
        cols = [(n, d) for n, d, _k in info]
        pk_cols = [(n, d) for n, d, _k in info if n in pk]
        pk_cols.sort(key=lambda c: pk.index(c[0]))
        for suffix in ("ins", "upd", "del"):
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {_q(f'_cdc_{table}_{suffix}')}")
        t, lt = _q(table), _lit(table)
        when, org = ("", SINK_ORIGIN_SQL) if table in keep else (NOT_APPLIED_BY_SINK, "NULL")
        conn.exec_driver_sql(
            f"CREATE TRIGGER {_q(f'_cdc_{table}_ins')} AFTER INSERT ON {t} "
            f"{when}BEGIN "
            f"INSERT INTO {CHANGES} (tbl, op, pk, before, after, ts_ms, origin) VALUES ({lt}, 'c', "
            f"{_image('NEW', pk_cols)}, NULL, {_image('NEW', cols)}, {NOW_MS_SQL}, {org}); END"
        )
        conn.exec_driver_sql(
            f"CREATE TRIGGER {_q(f'_cdc_{table}_upd')} AFTER UPDATE ON {t} "
            f"{when}BEGIN "
            f"INSERT INTO {CHANGES} (tbl, op, pk, old_pk, before, after, ts_ms, origin) VALUES "
            f"({lt}, 'u', {_image('NEW', pk_cols)}, {_image('OLD', pk_cols)}, "
            f"{_image('OLD', cols)}, {_image('NEW', cols)}, {NOW_MS_SQL}, {org}); END"
        )
        conn.exec_driver_sql(
            f"CREATE TRIGGER {_q(f'_cdc_{table}_del')} AFTER DELETE ON {t} "
            f"{when}BEGIN "
            f"INSERT INTO {CHANGES} (tbl, op, pk, before, after, ts_ms, origin) VALUES ({lt}, 'd', "
            f"{_image('OLD', pk_cols)}, {_image('OLD', cols)}, NULL, {NOW_MS_SQL}, {org}); END"
        )
        conn.execute(
            text(
                f"INSERT INTO {TABLES} (tbl, pk, columns, enabled_ms) VALUES (:t, :pk, :cols, :ms) "
                "ON CONFLICT (tbl) DO UPDATE SET pk = excluded.pk, columns = excluded.columns"
            ),
            {
                "t": table,
                "pk": json.dumps(pk),
                "cols": json.dumps([c[0] for c in cols]),
                "ms": now_ms(),
            },
        )
        done.append(CapturedTable(table, pk, tuple(c[0] for c in cols)))
    return done


def remove_capture(conn: Connection, tables: Iterable[str]) -> None:
    """Drop the triggers of `tables` (idempotent); the change table stays for the worker."""
    _check_sqlite(conn)
    for ddl in DDL:
        conn.exec_driver_sql(ddl)
    for table in tables:
        for suffix in ("ins", "upd", "del"):
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {_q(f'_cdc_{table}_{suffix}')}")
        conn.execute(text(f"DELETE FROM {TABLES} WHERE tbl = :t"), {"t": table})


def enable_capture(
    engine: Engine,
    tables: Iterable[str],
    keys: Mapping[str, Sequence[str]] | None = None,
    keep_applied: Iterable[str] = (),
) -> list[CapturedTable]:
    """Install capture for `tables` in one transaction, all or none (and switch the file to
    WAL); `keys`: the declared key of a table without a primary key."""
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    with engine.begin() as conn:
        return install_capture(conn, tables, keys, keep_applied)


def disable_capture(engine: Engine, tables: Iterable[str]) -> None:
    """Remove capture triggers for `tables` in one transaction."""
    with engine.begin() as conn:
        remove_capture(conn, tables)


def captured_tables(conn: Connection | sqlite3.Connection) -> dict[str, CapturedTable]:
    """Tables whose triggers are installed, with their primary key and columns."""
    sql = f"SELECT tbl, pk, columns FROM {TABLES}"
    try:
        rows = (
            conn.exec_driver_sql(sql).fetchall()
            if isinstance(conn, Connection)
            else conn.execute(sql).fetchall()
        )
    except Exception:  # noqa: BLE001 - table absent: nothing captured yet
        return {}
    return {
        r[0]: CapturedTable(r[0], tuple(json.loads(r[1])), tuple(json.loads(r[2]))) for r in rows
    }


def request_snapshot(engine: Engine, tables: Iterable[str], restart: bool = False) -> None:
    """Ask the capture worker to snapshot `tables` (resumes an unfinished one unless restart)."""
    tables = list(tables)
    with engine.begin() as conn:
        for ddl in DDL:
            conn.exec_driver_sql(ddl)
        known = captured_tables(conn)
        for table in tables:
            if table not in known:
                raise CaptureError(f"cannot snapshot {table!r}: capture is not enabled on it")
            total = conn.exec_driver_sql(f"SELECT count(*) FROM {_q(table)}").scalar()
            row = conn.execute(
                text(f"SELECT status FROM {SNAPSHOTS} WHERE tbl = :t"), {"t": table}
            ).first()
            if row and row[0] in {"pending", "running"} and not restart:
                conn.execute(
                    text(f"UPDATE {SNAPSHOTS} SET rows_total = :n WHERE tbl = :t"),
                    {"t": table, "n": total},
                )
                continue
            conn.execute(
                text(
                    f"INSERT INTO {SNAPSHOTS} (tbl, status, last_pk, rows_done, chunks_done, "
                    "rows_total, requested_ms) VALUES (:t, 'pending', NULL, 0, 0, :n, :ms) "
                    "ON CONFLICT (tbl) DO UPDATE SET status = 'pending', last_pk = NULL, "
                    "rows_done = 0, chunks_done = 0, rows_total = :n, requested_ms = :ms, "
                    "finished_ms = NULL"
                ),
                {"t": table, "n": total, "ms": now_ms()},
            )


@dataclass(frozen=True)
class SnapshotState:
    table: str
    status: str
    rows_done: int
    rows_total: int | None
    chunks_done: int


def snapshot_states(engine: Engine) -> list[SnapshotState]:
    with engine.connect() as conn:
        try:
            rows = conn.exec_driver_sql(
                f"SELECT tbl, status, rows_done, rows_total, chunks_done FROM {SNAPSHOTS} "
                "ORDER BY requested_ms, tbl"
            ).fetchall()
        except Exception:  # noqa: BLE001 - not created yet
            return []
    return [SnapshotState(*r) for r in rows]


# ---------------------------------------------------------------------------------------------
# worker


@dataclass(frozen=True)
class CaptureConfig:
    topic_prefix: str = "monolith"
    name: str = "capture"
    schema: str = "main"
    db_name: str | None = None
    batch_size: int = 1000
    snapshot_chunk: int = 20000
    poll_interval_s: float = 0.01
    prune_interval_s: float = 1.0
    emit_tombstones: bool = False

    def __post_init__(self) -> None:
        if not self.topic_prefix or "/" in self.topic_prefix:
            raise ValueError("topic_prefix must be a non-empty name without '/'")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.snapshot_chunk < 1:
            raise ValueError("snapshot_chunk must be at least 1")


class CaptureWorker:
    """Publishes the change table (and requested snapshots) of one SQLite database."""

    def __init__(
        self, source_url_or_path: str | Engine, transport: Transport, config: CaptureConfig
    ) -> None:
        if isinstance(source_url_or_path, Engine):
            if source_url_or_path.dialect.name != "sqlite":
                raise CaptureError("the trigger capture worker needs a SQLite source")
            path = source_url_or_path.url.database
        elif "://" in str(source_url_or_path):
            from sqlalchemy.engine import make_url

            url = make_url(str(source_url_or_path))
            if url.get_backend_name() != "sqlite":
                raise CaptureError(f"the trigger capture worker needs a SQLite source, got {url}")
            path = url.database
        else:
            path = str(source_url_or_path)
        if not path or path == ":memory:":
            raise CaptureError("capture needs a SQLite database file, not an in-memory database")
        self.path = path
        self.transport = transport
        self.config = config
        self.db_name = config.db_name or Path(path).stem
        self.conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA busy_timeout = 60000")
        self.conn.execute("BEGIN IMMEDIATE")
        for ddl in DDL:
            self.conn.execute(ddl)
        _ensure_origin_column(self.conn.execute)
        self.conn.execute("COMMIT")
        self.producer = transport.producer()
        self._lock_fd: int | None = None
        self._last_prune = 0.0
        self._topics: set[str] = set()
        self._source_heads: dict[tuple[str, str], str] = {}

    # -- lock
    def acquire(self) -> None:
        """Take the per-database capture lock; raise CaptureBusy when another worker has it."""
        fd = try_exclusive(f"{self.path}.cdc-{self.config.name}.lock")
        if fd is None:
            raise CaptureBusy(f"another capture worker {self.config.name!r} runs on {self.path}")
        self._lock_fd = fd

    def close(self) -> None:
        self.producer.close()
        self.conn.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- position
    def position(self) -> int:
        row = self.conn.execute(
            f"SELECT last_seq FROM {OFFSETS} WHERE name = ?", (self.config.name,)
        ).fetchone()
        return row[0] if row else 0

    def _save_position(self, seq: int, ts_ms: int | None, snapshot: tuple | None = None) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.execute(
                f"INSERT INTO {OFFSETS} (name, last_seq, last_ts_ms, updated_ms) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq), "
                "last_ts_ms = coalesce(excluded.last_ts_ms, last_ts_ms), updated_ms = excluded.updated_ms",
                (self.config.name, seq, ts_ms, now_ms()),
            )
            if snapshot is not None:
                self.conn.execute(
                    f"UPDATE {SNAPSHOTS} SET status = ?, last_pk = ?, rows_done = rows_done + ?, "
                    "chunks_done = chunks_done + 1, high_seq = ?, finished_ms = ? WHERE tbl = ?",
                    snapshot,
                )
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    # -- helpers
    def _topic(self, table: str) -> str:
        topic = topic_name(self.config.topic_prefix, self.config.schema, table)
        if topic not in self._topics:
            self.producer.ensure_topic(topic)
            self._topics.add(topic)
        return topic

    def _source_json(
        self,
        table: str,
        snapshot: str,
        seq: int | None,
        ts_ms: int | None,
        origin: str | None = None,
    ) -> str:
        head = self._source_heads.get((table, snapshot))
        if head is None:
            head = (
                f'{{"version":"{ENVELOPE_VERSION}","connector":"sqlite",'
                f'"name":{json.dumps(self.config.topic_prefix)},"db":{json.dumps(self.db_name)},'
                f'"schema":{json.dumps(self.config.schema)},"table":{json.dumps(table)},'
                f'"snapshot":"{snapshot}","txId":null,"seq":'
            )
            self._source_heads[(table, snapshot)] = head
        seq_s = "null" if seq is None else str(int(seq))
        ts_s = "null" if ts_ms is None else str(int(ts_ms))
        if origin is not None:
            return f'{head}{seq_s},"ts_ms":{ts_s},"{ORIGIN_KEY}":{json.dumps(origin)}}}'
        return f'{head}{seq_s},"ts_ms":{ts_s}}}'

    def _snapshot_tail(self, table: str, flag: str, seq: int, ts_ms: int) -> str:
        """What follows the row image in a snapshot event (see encode_value_raw)."""
        src = self._source_json(table, flag, seq, ts_ms)
        return f',"source":{src},"op":"r","ts_ms":{int(ts_ms)}}}'

    # -- stream
    def stream_batch(self, upto: int | None = None) -> int:
        """Publish the next batch of changes (seq ≤ upto when given); returns how many."""
        last = self.position()
        sql = (
            f"SELECT seq, tbl, op, pk, old_pk, before, after, ts_ms, origin FROM {CHANGES} "
            "WHERE seq > ?"
        )
        params: list[Any] = [last]
        if upto is not None:
            sql += " AND seq <= ?"
            params.append(upto)
        rows = self.conn.execute(
            sql + " ORDER BY seq LIMIT ?", [*params, self.config.batch_size]
        ).fetchall()
        if not rows:
            return 0
        now = now_ms()
        out: list[OutgoingMessage] = []
        for seq, tbl, op, pk, old_pk, before, after, ts, origin in rows:
            topic = self._topic(tbl)
            src = self._source_json(tbl, "false", seq, ts, origin)
            if op == "u" and old_pk is not None and old_pk != pk:
                # Primary key changed: Debezium emits a delete of the old key and a create.
                out.append(
                    OutgoingMessage(
                        topic, old_pk.encode(), encode_value_raw("d", before, None, src, now)
                    )
                )
                if self.config.emit_tombstones:
                    out.append(OutgoingMessage(topic, old_pk.encode(), None))
                out.append(
                    OutgoingMessage(
                        topic, pk.encode(), encode_value_raw("c", None, after, src, now)
                    )
                )
                continue
            out.append(
                OutgoingMessage(topic, pk.encode(), encode_value_raw(op, before, after, src, now))
            )
            if op == "d" and self.config.emit_tombstones:
                out.append(OutgoingMessage(topic, pk.encode(), None))
        self.producer.send_batch(out)
        self._save_position(rows[-1][0], rows[-1][7])
        return len(rows)

    def prune(self) -> int:
        """Delete change rows that every capture position has passed."""
        row = self.conn.execute(f"SELECT min(last_seq) FROM {OFFSETS}").fetchone()
        if not row or row[0] is None:
            return 0
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            cur = self.conn.execute(f"DELETE FROM {CHANGES} WHERE seq <= ?", (row[0],))
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return cur.rowcount

    # -- snapshot
    def _pending_snapshot(self) -> tuple[str, list | None] | None:
        row = self.conn.execute(
            f"SELECT tbl, last_pk FROM {SNAPSHOTS} WHERE status IN ('pending', 'running') "
            "ORDER BY requested_ms, tbl LIMIT 1"
        ).fetchone()
        if not row:
            return None
        return row[0], (json.loads(row[1]) if row[1] else None)

    def snapshot_chunk(self) -> int | None:
        """Publish the next chunk of a requested snapshot; None when no snapshot is pending."""
        pending = self._pending_snapshot()
        if pending is None:
            return None
        table, last_pk = pending
        info = captured_tables(self.conn).get(table)
        if info is None:
            self.conn.execute(f"UPDATE {SNAPSHOTS} SET status = 'failed' WHERE tbl = ?", (table,))
            raise CaptureError(f"snapshot of {table!r} stopped: capture is no longer enabled on it")
        pk_cols = ", ".join(_q(c) for c in info.pk)
        cols = _table_info_raw(self.conn, table)
        where = ""
        params: list[Any] = []
        if last_pk is not None:
            where = f"WHERE ({pk_cols}) > ({', '.join('?' * len(info.pk))})"
            params = list(last_pk)
        limit = self.config.snapshot_chunk
        decl = dict(cols)
        pk_image = _image("t", [(c, decl[c]) for c in info.pk])
        # SQLite builds each event value (envelope around the row image) and returns key and
        # value as bytes: no per-row JSON work in Python. The bytes are exactly
        # encode_value_raw("r", None, image, source, now).
        sql = (
            f"SELECT CAST({pk_image} AS BLOB), CAST(? || {_image('t', cols)} || ? AS BLOB), "
            f"{pk_cols} FROM {_q(table)} AS t {where} ORDER BY {pk_cols} LIMIT ?"
        )
        # One read transaction: the chunk and the high-water mark H are the same instant.
        self.conn.execute("BEGIN")
        try:
            high = self.conn.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = ?", (CHANGES,)
            ).fetchone()
            high_seq = high[0] if high else 0
            now = now_ms()
            head = '{"before":null,"after":'
            tail = self._snapshot_tail(table, "true", high_seq, now)
            rows = self.conn.execute(sql, [head, tail, *params, limit]).fetchall()
        finally:
            self.conn.execute("COMMIT")
        while self.stream_batch(upto=high_seq):
            pass
        last = len(rows) < limit
        if rows:
            topic = self._topic(table)
            out = [OutgoingMessage(topic, r[0], r[1]) for r in rows]
            if last:  # the snapshot's last row says so in source.snapshot
                image = rows[-1][1][len(head.encode()) : -len(tail.encode())]
                out[-1] = OutgoingMessage(
                    topic,
                    rows[-1][0],
                    head.encode()
                    + image
                    + self._snapshot_tail(table, "last", high_seq, now).encode(),
                )
            self.producer.send_batch(out)
        new_last_pk = (
            json.dumps(list(rows[-1][2:])) if rows else (json.dumps(last_pk) if last_pk else None)
        )
        self._save_position(
            high_seq,
            None,
            (
                "done" if last else "running",
                new_last_pk,
                len(rows),
                high_seq,
                now_ms() if last else None,
                table,
            ),
        )
        return len(rows)

    # -- loop
    def run_once(self) -> int:
        """One unit of work: a snapshot chunk when one is pending, else a stream batch."""
        n = self.snapshot_chunk()
        while n == 0:  # a snapshot ended on an empty chunk: that is no sign of idleness
            n = self.snapshot_chunk()
        if n is None:
            n = self.stream_batch()
        if time.monotonic() - self._last_prune >= self.config.prune_interval_s:
            self.prune()
            self._last_prune = time.monotonic()
        return n

    def run(self, stop: threading.Event, on_progress: Callable[[int], None] | None = None) -> None:
        """Loop until `stop` is set; sleeps briefly when idle."""
        while not stop.is_set():
            n = self.run_once()
            if on_progress and n:
                on_progress(n)
            if not n:
                stop.wait(self.config.poll_interval_s)


def _table_info_raw(conn: sqlite3.Connection, table: str) -> list[tuple[str, str]]:
    return [(r[1], (r[2] or "").upper()) for r in conn.execute(f"PRAGMA table_info({_q(table)})")]
