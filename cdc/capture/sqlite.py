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

Drift: the worker reads ``PRAGMA schema_version`` on every unit of work; when it changed, it
compares each captured table with its triggers (columns, the three triggers, their SQL). A
column added without re-running ``install_capture``, a table recreated by Alembic's batch mode
(its triggers dropped with it) or triggers of an older kit are repaired in one ``BEGIN
IMMEDIATE`` transaction: the triggers are re-installed with the recorded key and keep_applied
choice and a snapshot of the table is requested, so rows written in between are published
again whole. Deletes made while triggers were missing are lost to capture (``kit cdc verify``
finds them); a table dropped for good is logged once and left alone.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine

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
        tbl TEXT PRIMARY KEY, pk TEXT NOT NULL, columns TEXT NOT NULL, enabled_ms INTEGER,
        keep_applied INTEGER NOT NULL DEFAULT 0)""",
    f"""CREATE TABLE IF NOT EXISTS {SNAPSHOTS} (
        tbl TEXT PRIMARY KEY, status TEXT NOT NULL, last_pk TEXT,
        rows_done INTEGER NOT NULL DEFAULT 0, chunks_done INTEGER NOT NULL DEFAULT 0,
        rows_total INTEGER, high_seq INTEGER, requested_ms INTEGER, finished_ms INTEGER)""",
    f"""CREATE TABLE IF NOT EXISTS {APPLY_MARKER} (origin VARCHAR(200) PRIMARY KEY)""",
]


_log = logging.getLogger("cdc.capture.sqlite")
TRIGGER_SUFFIXES = ("ins", "upd", "del")


def _executor(conn: Connection | sqlite3.Connection) -> Callable[..., Any]:
    """`execute(sql, params=())` on either connection kind (qmark parameters)."""
    if isinstance(conn, Connection):
        return lambda sql, params=(): conn.exec_driver_sql(sql, tuple(params) or None)
    return conn.execute


def _add_column(execute: Callable[..., Any], table: str, column: str, decl: str) -> bool:
    """Add `column` to a bookkeeping table made by an older version; True when it was added."""
    if column in [r[1] for r in execute(f"PRAGMA table_info({table})").fetchall()]:
        return False
    execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
    return True


def _keeps_applied(trigger_sql: str) -> bool:
    """A capture trigger without a WHEN clause records the sinks' writes too (keep_applied)."""
    head = re.split(r"\sBEGIN\s", trigger_sql, maxsplit=1, flags=re.IGNORECASE)[0]
    return re.search(r"\sWHEN\s", head, flags=re.IGNORECASE) is None


def _ensure_schema(execute: Callable[..., Any]) -> None:
    """Create the bookkeeping tables and migrate those of older versions: the change table gets
    `origin` (NULL: not a sink's), the table list `keep_applied`, derived from the installed
    insert trigger (one without a WHEN clause records the sinks' writes)."""
    for ddl in DDL:
        execute(ddl)
    _add_column(execute, CHANGES, "origin", "TEXT")
    if _add_column(execute, TABLES, "keep_applied", "INTEGER NOT NULL DEFAULT 0"):
        for (tbl,) in execute(f"SELECT tbl FROM {TABLES}").fetchall():
            row = execute(
                "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?",
                (f"_cdc_{tbl}_ins",),
            ).fetchone()
            if row is not None and _keeps_applied(row[0]):
                execute(f"UPDATE {TABLES} SET keep_applied = 1 WHERE tbl = ?", (tbl,))


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
    keep_applied: bool = False


# ---------------------------------------------------------------------------------------------
# install / remove (callable from an Alembic revision with op.get_bind())


def _table_info(execute: Callable[..., Any], table: str) -> list[tuple[str, str, int]]:
    """(name, declared type, position in the primary key or 0) of each column; [] if absent."""
    rows = execute(f"PRAGMA table_info({_q(table)})").fetchall()
    return [(r[1], (r[2] or "").upper(), int(r[5])) for r in rows]


def _trigger_names(table: str) -> list[str]:
    return [f"_cdc_{table}_{suffix}" for suffix in TRIGGER_SUFFIXES]


def _trigger_sql(
    table: str, info: Sequence[tuple[str, str, int]], pk: Sequence[str], keep: bool
) -> dict[str, str]:
    """The capture triggers of `table` ({name: CREATE TRIGGER}) for its columns `info`, event
    key `pk` and keep_applied choice: the one place their DDL is written."""
    cols = [(n, d) for n, d, _k in info]
    decl = dict(cols)
    pk_cols = [(c, decl[c]) for c in pk]
    t, lt = _q(table), _lit(table)
    when, org = ("", SINK_ORIGIN_SQL) if keep else (NOT_APPLIED_BY_SINK, "NULL")
    ins, upd, dele = _trigger_names(table)
    return {
        ins: f"CREATE TRIGGER {_q(ins)} AFTER INSERT ON {t} "
        f"{when}BEGIN "
        f"INSERT INTO {CHANGES} (tbl, op, pk, before, after, ts_ms, origin) VALUES ({lt}, 'c', "
        f"{_image('NEW', pk_cols)}, NULL, {_image('NEW', cols)}, {NOW_MS_SQL}, {org}); END",
        upd: f"CREATE TRIGGER {_q(upd)} AFTER UPDATE ON {t} "
        f"{when}BEGIN "
        f"INSERT INTO {CHANGES} (tbl, op, pk, old_pk, before, after, ts_ms, origin) VALUES "
        f"({lt}, 'u', {_image('NEW', pk_cols)}, {_image('OLD', pk_cols)}, "
        f"{_image('OLD', cols)}, {_image('NEW', cols)}, {NOW_MS_SQL}, {org}); END",
        dele: f"CREATE TRIGGER {_q(dele)} AFTER DELETE ON {t} "
        f"{when}BEGIN "
        f"INSERT INTO {CHANGES} (tbl, op, pk, before, after, ts_ms, origin) VALUES ({lt}, 'd', "
        f"{_image('OLD', pk_cols)}, {_image('OLD', cols)}, NULL, {NOW_MS_SQL}, {org}); END",
    }


def _drop_triggers(execute: Callable[..., Any], table: str) -> None:
    for name in _trigger_names(table):
        execute(f"DROP TRIGGER IF EXISTS {_q(name)}")


def _install_table(
    execute: Callable[..., Any],
    table: str,
    info: Sequence[tuple[str, str, int]],
    pk: Sequence[str],
    keep: bool,
) -> CapturedTable:
    """(Re)create the triggers of `table` and record its key, columns and keep_applied."""
    _drop_triggers(execute, table)
    for sql in _trigger_sql(table, info, pk, keep).values():
        execute(sql)
    columns = tuple(n for n, _d, _k in info)
    execute(
        f"INSERT INTO {TABLES} (tbl, pk, columns, enabled_ms, keep_applied) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (tbl) DO UPDATE SET pk = excluded.pk, "
        "columns = excluded.columns, keep_applied = excluded.keep_applied",
        (table, json.dumps(list(pk)), json.dumps(list(columns)), now_ms(), int(keep)),
    )
    return CapturedTable(table, tuple(pk), columns, keep)


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
    execute = _executor(conn)
    tables = list(tables)
    keep = set(keep_applied)
    keys = keys or {}
    plans: list[tuple[str, list[tuple[str, str, int]], tuple[str, ...]]] = []
    problems: list[str] = []
    for table in tables:
        info = _table_info(execute, table)
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
    _ensure_schema(execute)
    return [_install_table(execute, table, info, pk, table in keep) for table, info, pk in plans]


def remove_capture(conn: Connection, tables: Iterable[str]) -> None:
    """Drop the triggers of `tables` (idempotent); the change table stays for the worker."""
    _check_sqlite(conn)
    execute = _executor(conn)
    _ensure_schema(execute)
    for table in tables:
        _drop_triggers(execute, table)
        execute(f"DELETE FROM {TABLES} WHERE tbl = ?", (table,))


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
    """Tables whose triggers are installed, with their key, columns and keep_applied."""
    execute = _executor(conn)
    has_keep = "keep_applied" in [r[1] for r in execute(f"PRAGMA table_info({TABLES})")]
    sql = f"SELECT tbl, pk, columns, {'keep_applied' if has_keep else '0'} FROM {TABLES}"
    try:
        rows = execute(sql).fetchall()
    except Exception:  # noqa: BLE001 - table absent: nothing captured yet
        return {}
    return {
        r[0]: CapturedTable(r[0], tuple(json.loads(r[1])), tuple(json.loads(r[2])), bool(r[3]))
        for r in rows
    }


def request_snapshot(engine: Engine, tables: Iterable[str], restart: bool = False) -> None:
    """Ask the capture worker to snapshot `tables` (resumes an unfinished one unless restart)."""
    tables = list(tables)
    with engine.begin() as conn:
        execute = _executor(conn)
        _ensure_schema(execute)
        known = captured_tables(conn)
        for table in tables:
            if table not in known:
                raise CaptureError(f"cannot snapshot {table!r}: capture is not enabled on it")
            _request_snapshot(execute, table, restart)


def _request_snapshot(execute: Callable[..., Any], table: str, restart: bool) -> None:
    """Record a snapshot request for `table` (in the caller's transaction)."""
    total = execute(f"SELECT count(*) FROM {_q(table)}").fetchone()[0]
    row = execute(f"SELECT status FROM {SNAPSHOTS} WHERE tbl = ?", (table,)).fetchone()
    if row and row[0] in {"pending", "running"} and not restart:
        execute(f"UPDATE {SNAPSHOTS} SET rows_total = ? WHERE tbl = ?", (total, table))
        return
    ms = now_ms()
    execute(
        f"INSERT INTO {SNAPSHOTS} (tbl, status, last_pk, rows_done, chunks_done, "
        "rows_total, requested_ms) VALUES (?, 'pending', NULL, 0, 0, ?, ?) "
        "ON CONFLICT (tbl) DO UPDATE SET status = 'pending', last_pk = NULL, "
        "rows_done = 0, chunks_done = 0, rows_total = excluded.rows_total, "
        "requested_ms = excluded.requested_ms, finished_ms = NULL",
        (table, total, ms),
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
# drift: the triggers no longer match the table (ALTER TABLE, a recreated table, an older kit)


@dataclass(frozen=True)
class CaptureDrift:
    """How the capture of `table` differs from what `install_capture` would make of it now;
    not repairable when the table or its key columns are gone."""

    table: str
    problems: tuple[str, ...]
    repairable: bool
    triggers_missing: bool = False

    def __str__(self) -> str:
        return f"{self.table}: {'; '.join(self.problems)}"


def _find_drift(
    execute: Callable[..., Any], captured: Mapping[str, CapturedTable]
) -> list[CaptureDrift]:
    triggers = {
        name: (tbl_name, sql)
        for name, tbl_name, sql in execute(
            "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger'"
        ).fetchall()
    }
    out = []
    for table, rec in sorted(captured.items()):
        info = _table_info(execute, table)
        if not info:
            out.append(CaptureDrift(table, ("table dropped",), repairable=False))
            continue
        names = [n for n, _d, _k in info]
        problems = [f"column added: {table}.{c}" for c in names if c not in rec.columns]
        problems += [f"column dropped: {table}.{c}" for c in rec.columns if c not in names]
        columns_changed = bool(problems)
        gone_key = [c for c in rec.pk if c not in names]
        if gone_key:
            problems.append(f"key column(s) gone: {', '.join(gone_key)}")
            out.append(CaptureDrift(table, tuple(problems), repairable=False))
            continue
        have = {
            n: triggers[n][1]
            for n in _trigger_names(table)
            if n in triggers and triggers[n][0].lower() == table.lower()
        }
        absent = [n for n in _trigger_names(table) if n not in have]
        if absent:
            problems.append(
                "triggers missing (table recreated?)"
                if not have
                else f"trigger(s) missing: {', '.join(absent)}"
            )
        elif any("origin)" not in sql for sql in have.values()):
            problems.append("triggers from an older kit (no origin column)")
        elif not columns_changed and have != _trigger_sql(table, info, rec.pk, rec.keep_applied):
            problems.append("triggers from an older kit (they differ from what it installs now)")
        if problems:
            out.append(CaptureDrift(table, tuple(problems), True, triggers_missing=bool(absent)))
    return out


def capture_drift(conn: Connection | sqlite3.Connection) -> list[CaptureDrift]:
    """Captured tables whose triggers do not match the table any more (empty: none). A running
    capture worker repairs the repairable ones when it notices the schema change."""
    captured = captured_tables(conn)
    return _find_drift(_executor(conn), captured) if captured else []


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
        _ensure_schema(self.conn.execute)
        self.conn.execute("COMMIT")
        self.producer = transport.producer()
        self._lock_fd: int | None = None
        self._last_prune = 0.0
        self._topics: set[str] = set()
        self._source_heads: dict[tuple[str, str], str] = {}
        self._schema_version: int | None = None  # None: check for drift on the first run_once
        self._unrepairable: dict[str, tuple[str, ...]] = {}  # already logged, not repairable

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
        cols = [(n, d) for n, d, _k in _table_info(self.conn.execute, table)]
        if not cols or not set(info.pk) <= {n for n, _d in cols}:
            self.conn.execute(f"UPDATE {SNAPSHOTS} SET status = 'failed' WHERE tbl = ?", (table,))
            _log.warning(
                "snapshot of %r stopped: the table or its key columns %s are gone", table, info.pk
            )
            return 0
        pk_cols = ", ".join(_q(c) for c in info.pk)
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

    # -- drift
    def _read_schema_version(self) -> int:
        return self.conn.execute("PRAGMA schema_version").fetchone()[0]

    def repair_drift(self) -> list[CaptureDrift]:
        """When the schema changed since the last check (`PRAGMA schema_version`, cheap),
        compare every captured table with its triggers; re-install drifted ones (same key and
        keep_applied) and request a snapshot of them, in one write transaction. Returns the
        drift found (repaired or not)."""
        version = self._read_schema_version()
        if version == self._schema_version:
            return []
        drift = capture_drift(self.conn)
        if any(d.repairable for d in drift):
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                drift = capture_drift(self.conn)  # again, now that no writer can change it
                captured = captured_tables(self.conn)
                for d in drift:
                    if d.repairable:
                        rec = captured[d.table]
                        info = _table_info(self.conn.execute, d.table)
                        _install_table(self.conn.execute, d.table, info, rec.pk, rec.keep_applied)
                        _request_snapshot(self.conn.execute, d.table, restart=True)
                version = self._read_schema_version()  # includes the triggers just made
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        self._schema_version = version
        self._log_drift(drift)
        return drift

    def _log_drift(self, drift: list[CaptureDrift]) -> None:
        unrepairable = {d.table: d.problems for d in drift if not d.repairable}
        for d in drift:
            if not d.repairable:
                if self._unrepairable.get(d.table) != d.problems:
                    _log.warning(
                        "capture of table %r cannot be repaired (%s): its triggers stay as they "
                        "are and the other tables are captured on; re-run install_capture (or "
                        "kit cdc disable %s) once the schema is settled",
                        d.table,
                        "; ".join(d.problems),
                        d.table,
                    )
                continue
            lost = (
                " Deletes made while its triggers were missing cannot be recovered by a "
                "snapshot: `kit cdc verify` checks the target for rows that should be gone."
                if d.triggers_missing
                else " `kit cdc verify` compares source and target."
            )
            _log.warning(
                "capture of table %r drifted (%s): re-installed its triggers and requested a "
                "snapshot of %r so rows written before the repair are published again with "
                "their full images.%s",
                d.table,
                "; ".join(d.problems),
                d.table,
                lost,
            )
        self._unrepairable = unrepairable

    # -- loop
    def run_once(self) -> int:
        """One unit of work: a snapshot chunk when one is pending, else a stream batch (after
        repairing capture drift when the schema changed)."""
        self.repair_drift()
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
