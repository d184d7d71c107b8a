"""PostgreSQL change capture: logical decoding with `pgoutput` → transport.

How it fits together (details and the reasoning in docs/postgres-capture.md):

- `enable_capture` adds the tables to a publication and sets ``REPLICA IDENTITY FULL`` so
  updates and deletes carry whole before-images (with the default identity, PostgreSQL only
  logs the primary key of the old row, so ``before`` holds just the key columns on a delete
  and is null on an update that keeps its key).
- The worker creates a named logical replication slot (``pgoutput``) with
  ``EXPORT_SNAPSHOT``. While the replication connection stays idle, a second connection reads
  every table in one REPEATABLE READ transaction that imported that snapshot
  (``SET TRANSACTION SNAPSHOT``), in primary-key chunks, publishing ``op: "r"`` events. The
  snapshot shows exactly the transactions committed before the slot's consistent point and
  streaming starts at that point, so snapshot and stream meet without gap or overlap.
- Chunk progress is stored in ``_cdc_pg_snapshots`` in the source database after each chunk
  is acknowledged by the transport. An exported snapshot dies with the worker, so after a
  crash the remaining chunks are read in a fresh REPEATABLE READ transaction instead, while
  the stream still starts at the slot's (unconfirmed) consistent point: every change since
  that point is published *after* those chunks, so each row converges to its latest state
  (the overlap is harmless because events are full-row upserts/deletes in log order).
- Streaming reads pgoutput messages (decoded by `cdc.capture.pgoutput`), turns each
  committed transaction into Debezium-shaped events (connector ``postgresql``, ``source.lsn``
  and ``source.txId``) and publishes them in batches. The slot's flushed LSN is confirmed
  only after the transport acknowledged the batch, so a crash re-sends (at-least-once) and
  the sink's stored offsets make it exactly-once in effect. Standby status updates go out
  every `status_interval_s`; once everything received is confirmed, keepalives move the
  flushed LSN forward so an idle database (or one busy only with other tables) does not pile
  up WAL behind the slot.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import select
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cdc.capture.pgoutput import (
    UNCHANGED_TOAST,
    Begin,
    Commit,
    Delete,
    Insert,
    Origin,
    PgMessage,
    Relation,
    Truncate,
    Update,
    convert_text,
    decode_message,
    format_lsn,
    parse_lsn,
    tuple_to_row,
)
from cdc.events import ENVELOPE_VERSION, encode_value_raw, json_default, now_ms, topic_name
from cdc.ports import OutgoingMessage, Producer, Transport
from cdc.toast import UNAVAILABLE_VALUE  # Debezium's unchanged-TOAST stand-in

CONNECTOR = "postgresql"
STATE_TABLE = "_cdc_pg_snapshots"
# Declared keys of captured tables without a primary key (the mapping's key), read by workers.
KEYS_TABLE = "_cdc_pg_keys"
# Session settings that make every text-format value parse the same way, in the walsender
# (pgoutput runs the output functions there) and on the snapshot connection.
SESSION_OPTIONS = (
    "-c DateStyle=ISO -c TimeZone=UTC -c IntervalStyle=postgres "
    "-c extra_float_digits=3 -c bytea_output=hex"
)


class CaptureError(RuntimeError):
    """Capture cannot be set up or run; the message says which table/slot and why."""


# ---------------------------------------------------------------------------------------------
# connections and names


def libpq_dsn(url: str) -> str:
    """A psycopg2/libpq DSN from a SQLAlchemy-style URL (drops the ``+driver`` part)."""
    if "://" not in url:
        return url  # already key=value
    scheme, rest = url.split("://", 1)
    if scheme.split("+", 1)[0] not in ("postgresql", "postgres"):
        raise CaptureError(f"PostgreSQL capture needs a postgresql:// URL, got {scheme}://")
    return "postgresql://" + rest


def _connect(url: str, **kwargs: Any) -> Any:
    import psycopg2

    return psycopg2.connect(libpq_dsn(url), options=SESSION_OPTIONS, **kwargs)


def _replication_connect(url: str) -> Any:
    import psycopg2.extras

    return _connect(url, connection_factory=psycopg2.extras.LogicalReplicationConnection)


def _qi(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True, order=True)
class TableRef:
    schema: str
    name: str

    @classmethod
    def parse(cls, text: str, default_schema: str = "public") -> TableRef:
        """``table`` or ``schema.table`` (no quoting; names are taken literally)."""
        if not text or text.count(".") > 1:
            raise CaptureError(f"bad table name {text!r}: use table or schema.table")
        schema, _, name = text.rpartition(".")
        return cls(schema or default_schema, name)

    @property
    def qualified(self) -> str:
        return f"{_qi(self.schema)}.{_qi(self.name)}"

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class TableInfo:
    ref: TableRef
    columns: tuple[tuple[str, int], ...]  # (name, type oid), publishable columns only
    pk: tuple[str, ...]
    pk_types: tuple[str, ...]  # format_type() of the key columns, for typed comparisons
    replica_identity: str


def _stored_key(cur: Any, ref: TableRef) -> tuple[str, ...]:
    """The declared key `enable_capture` stored for a table without a primary key."""
    cur.execute("SELECT to_regclass(%s)", (f"public.{KEYS_TABLE}",))
    if cur.fetchone()[0] is None:
        return ()
    cur.execute(
        f"SELECT key FROM public.{KEYS_TABLE} WHERE schema_name = %s AND table_name = %s",
        (ref.schema, ref.name),
    )
    row = cur.fetchone()
    return tuple(json.loads(row[0])) if row else ()


def _table_info(cur: Any, ref: TableRef, declared: Sequence[str] | None = None) -> TableInfo:
    cur.execute("SELECT to_regclass(%s)::oid", (ref.qualified,))
    oid = cur.fetchone()[0]
    if oid is None:
        raise CaptureError(f"cannot capture table {ref}: it does not exist")
    cur.execute(
        "SELECT attname, atttypid, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped AND attgenerated = '' "
        "ORDER BY attnum",
        (oid,),
    )
    cols = cur.fetchall()
    cur.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
        "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = %s AND i.indisprimary "
        "ORDER BY array_position(i.indkey::int2[], a.attnum)",
        (oid,),
    )
    pk = tuple(r[0] for r in cur.fetchall())
    types = {name: fmt for name, _oid, fmt in cols}
    if not pk:
        pk = tuple(declared or _stored_key(cur, ref))
        if not pk:
            raise CaptureError(
                f"cannot capture table {ref}: it has no primary key and the mapping declares "
                "no key for it (give its [[tables]] entry key = [...] naming unique columns)"
            )
        unknown = [c for c in pk if c not in types]
        if unknown:
            raise CaptureError(
                f"cannot capture table {ref} by its declared key {list(pk)}: no column(s) "
                f"{', '.join(unknown)}"
            )
    cur.execute("SELECT relreplident FROM pg_class WHERE oid = %s", (oid,))
    ident = cur.fetchone()[0]
    return TableInfo(
        ref,
        tuple((name, type_oid) for name, type_oid, _fmt in cols),
        pk,
        tuple(types[c] for c in pk),
        ident,
    )


# ---------------------------------------------------------------------------------------------
# enable / disable (also callable from an Alembic revision: pass op.get_bind().connection)


def _published(cur: Any, publication: str) -> set[TableRef]:
    cur.execute(
        "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s",
        (publication,),
    )
    return {TableRef(s, t) for s, t in cur.fetchall()}


@dataclass(frozen=True)
class EnableResult:
    """What `enable_capture` found and did for one table."""

    info: TableInfo
    key_source: str  # "primary key" | "declared key"
    did: str  # e.g. "set REPLICA IDENTITY FULL (was DEFAULT)", "kept REPLICA IDENTITY FULL"

    # read like the TableInfo it wraps
    @property
    def ref(self) -> TableRef:
        return self.info.ref

    @property
    def pk(self) -> tuple[str, ...]:
        return self.info.pk

    @property
    def columns(self) -> tuple[tuple[str, int], ...]:
        return self.info.columns

    @property
    def replica_identity(self) -> str:
        return self.info.replica_identity


_IDENTITY = {"f": "FULL", "d": "DEFAULT", "n": "NOTHING", "i": "USING INDEX"}


def enable_capture(
    url: str,
    tables: Iterable[str],
    publication: str = "strangler_cdc",
    replica_identity_full: bool = True,
    keys: Mapping[str, Sequence[str]] | None = None,
) -> list[EnableResult]:
    """Publish `tables` in `publication` (created when absent) and set their replica identity.

    ``replica_identity_full`` (the default) sets ``REPLICA IDENTITY FULL`` so update and
    delete events carry the whole old row in ``before`` (and unchanged TOASTed values can be
    filled in); with False the identity is left as it is (default: primary key only). A table
    without a primary key is captured by ``keys[table]`` (its mapping's declared key, stored
    in ``_cdc_pg_keys`` for the workers) and always gets ``REPLICA IDENTITY FULL``: without a
    key PostgreSQL logs no old row at all, so updates and deletes could not be keyed.
    All or nothing, in one transaction: one CaptureError names every table that cannot be
    captured. Idempotent. Each result says what was done to the table.
    """
    refs = [TableRef.parse(t) for t in tables]
    keys = keys or {}
    conn = _connect(url)
    try:
        with conn, conn.cursor() as cur:
            infos: list[TableInfo] = []
            problems: list[str] = []
            for ref in refs:
                declared = keys.get(str(ref)) or keys.get(ref.name)
                try:
                    infos.append(_table_info(cur, ref, declared))
                except CaptureError as exc:
                    problems.append(str(exc))
            if problems:
                raise CaptureError(
                    problems[0]
                    if len(problems) == 1
                    else f"no table enabled, {len(problems)} cannot be captured:\n  "
                    + "\n  ".join(problems)
                )
            cur.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,))
            exists = cur.fetchone() is not None
            have = _published(cur, publication) if exists else set()
            missing = [r for r in refs if r not in have]
            if not exists:
                target = ", ".join(r.qualified for r in refs)
                cur.execute(f"CREATE PUBLICATION {_qi(publication)} FOR TABLE {target}")
            elif missing:
                target = ", ".join(r.qualified for r in missing)
                cur.execute(f"ALTER PUBLICATION {_qi(publication)} ADD TABLE {target}")
            results = []
            for info in infos:
                has_pk = _has_primary_key(cur, info.ref)
                if not has_pk:
                    _store_key(cur, info.ref, info.pk)
                was = _IDENTITY.get(info.replica_identity, info.replica_identity)
                if (replica_identity_full or not has_pk) and info.replica_identity != "f":
                    cur.execute(f"ALTER TABLE {info.ref.qualified} REPLICA IDENTITY FULL")
                    why = "" if has_pk else " (no primary key: old rows carry the declared key)"
                    did = f"set REPLICA IDENTITY FULL (was {was}){why}"
                else:
                    did = f"kept REPLICA IDENTITY {was}"
                results.append(
                    EnableResult(
                        _table_info(cur, info.ref, info.pk),
                        "primary key" if has_pk else "declared key",
                        did,
                    )
                )
            return results
    finally:
        conn.close()


def _has_primary_key(cur: Any, ref: TableRef) -> bool:
    cur.execute(
        "SELECT 1 FROM pg_index WHERE indrelid = to_regclass(%s) AND indisprimary",
        (ref.qualified,),
    )
    return cur.fetchone() is not None


def _store_key(cur: Any, ref: TableRef, key: Sequence[str]) -> None:
    cur.execute(
        f"CREATE TABLE IF NOT EXISTS public.{KEYS_TABLE} (schema_name text NOT NULL, "
        "table_name text NOT NULL, key text NOT NULL, PRIMARY KEY (schema_name, table_name))"
    )
    cur.execute(
        f"INSERT INTO public.{KEYS_TABLE} (schema_name, table_name, key) VALUES (%s, %s, %s) "
        "ON CONFLICT (schema_name, table_name) DO UPDATE SET key = excluded.key",
        (ref.schema, ref.name, json.dumps(list(key))),
    )


def disable_capture(url: str, tables: Iterable[str], publication: str = "strangler_cdc") -> None:
    """Remove `tables` from the publication and reset their replica identity to DEFAULT."""
    refs = [TableRef.parse(t) for t in tables]
    conn = _connect(url)
    try:
        with conn, conn.cursor() as cur:
            have = _published(cur, publication)
            drop = [r for r in refs if r in have]
            if drop:
                target = ", ".join(r.qualified for r in drop)
                cur.execute(f"ALTER PUBLICATION {_qi(publication)} DROP TABLE {target}")
            for ref in refs:
                cur.execute("SELECT to_regclass(%s)", (ref.qualified,))
                if cur.fetchone()[0] is not None:
                    cur.execute(f"ALTER TABLE {ref.qualified} REPLICA IDENTITY DEFAULT")
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# slots (for `kit cdc slot list|drop`)


@dataclass(frozen=True)
class SlotInfo:
    name: str
    plugin: str | None
    slot_type: str
    database: str | None
    active: bool
    active_pid: int | None
    restart_lsn: str | None
    confirmed_flush_lsn: str | None
    lag_bytes: int | None  # WAL the server keeps for this slot beyond what was confirmed
    wal_status: str | None


def list_slots(url: str) -> list[SlotInfo]:
    """Replication slots of the server, with how much WAL each one holds back."""
    conn = _connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_setting('server_version_num')::int")
            has_wal_status = cur.fetchone()[0] >= 130000
            cur.execute(
                "SELECT slot_name, plugin, slot_type, database, active, active_pid, "
                "restart_lsn::text, confirmed_flush_lsn::text, "
                "pg_wal_lsn_diff(pg_current_wal_lsn(), "
                "coalesce(confirmed_flush_lsn, restart_lsn))::bigint, "
                + ("wal_status " if has_wal_status else "NULL ")
                + "FROM pg_replication_slots ORDER BY slot_name"
            )
            return [SlotInfo(*row) for row in cur.fetchall()]
    finally:
        conn.close()


def drop_slot(url: str, name: str, force: bool = False) -> None:
    """Drop a replication slot (and the snapshot progress stored for it).

    An active slot is refused unless `force`, which terminates the backend holding it first.
    Dropping the slot of a running pipeline loses the changes it has not delivered yet;
    the next capture start then needs a new snapshot.
    """
    conn = _connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (name,))
            row = cur.fetchone()
            if row is None:
                raise CaptureError(f"replication slot {name!r} does not exist")
            if row[0] is not None:
                if not force:
                    raise CaptureError(
                        f"replication slot {name!r} is in use by pid {row[0]}: stop the capture "
                        "worker first (or force)"
                    )
                cur.execute("SELECT pg_terminate_backend(%s)", (row[0],))
            deadline = time.monotonic() + 10
            while True:
                try:
                    cur.execute("SELECT pg_drop_replication_slot(%s)", (name,))
                    break
                except Exception as exc:  # noqa: BLE001 - still active for a moment
                    if time.monotonic() > deadline:
                        raise CaptureError(f"cannot drop slot {name!r}: {exc}") from None
                    time.sleep(0.05)
            cur.execute("SELECT to_regclass(%s)", (f"public.{STATE_TABLE}",))
            if cur.fetchone()[0] is not None:
                cur.execute(f"DELETE FROM public.{STATE_TABLE} WHERE slot = %s", (name,))
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# worker


@dataclass(frozen=True)
class PgCaptureConfig:
    """What to capture and how; validated up front (ValueError names the field)."""

    tables: tuple[str, ...]
    slot: str = "strangler_cdc"
    publication: str = "strangler_cdc"
    topic_prefix: str = "monolith"
    snapshot: str = "initial"  # "initial": snapshot when the slot is created; "never"
    snapshot_chunk: int = 5000
    batch_size: int = 2000
    status_interval_s: float = 10.0
    idle_wait_s: float = 0.2
    emit_truncate: bool = True
    emit_tombstones: bool = False
    resnapshot_if_slot_lost: bool = False
    # "any": every committed change; "none": skip transactions carrying a replication origin
    # (what a sink tags its writes with, so CDC running both ways never loops). PostgreSQL 16+
    # filters on the server (pgoutput option `origin`); older servers send an Origin message
    # after Begin and the worker drops that transaction's changes itself.
    origin: str = "any"

    def __post_init__(self) -> None:
        if not self.tables:
            raise ValueError("tables must name at least one table")
        for name in ("slot", "publication"):
            value = getattr(self, name)
            if (
                not value
                or not all(c.isalnum() or c == "_" for c in value)
                or value != value.lower()
            ):
                raise ValueError(
                    f"{name} must be lower-case letters, digits and '_'; got {value!r}"
                )
        if not self.topic_prefix or "/" in self.topic_prefix:
            raise ValueError("topic_prefix must be a non-empty name without '/'")
        if self.snapshot not in ("initial", "never"):
            raise ValueError("snapshot must be 'initial' or 'never'")
        if self.origin not in ("any", "none"):
            raise ValueError("origin must be 'any' or 'none'")
        if self.snapshot_chunk < 1:
            raise ValueError("snapshot_chunk must be at least 1")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.status_interval_s <= 0:
            raise ValueError("status_interval_s must be positive")
        if self.idle_wait_s <= 0:
            raise ValueError("idle_wait_s must be positive")


@dataclass
class SnapshotProgress:
    table: str
    status: str  # pending | running | done | skipped
    mode: str | None  # exported | resumed
    rows_done: int
    rows_total: int | None
    chunks_done: int


def snapshot_progress(url: str, slot: str) -> list[SnapshotProgress]:
    """Per-table snapshot status stored for `slot` (empty when capture never ran)."""
    conn = _connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s)", (f"public.{STATE_TABLE}",))
            if cur.fetchone()[0] is None:
                return []
            cur.execute(
                f"SELECT tbl, status, mode, rows_done, rows_total, chunks_done "
                f"FROM public.{STATE_TABLE} WHERE slot = %s ORDER BY tbl",
                (slot,),
            )
            return [SnapshotProgress(*r) for r in cur.fetchall()]
    finally:
        conn.close()


def _jsonable(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def _default(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    return json_default(value)


def _dumps(row: dict[str, Any]) -> str:
    return json.dumps(
        {k: _jsonable(v) for k, v in row.items()},
        separators=(",", ":"),
        default=_default,
        ensure_ascii=False,
    )


def _ts_ms(ts: dt.datetime) -> int:
    return int(ts.timestamp() * 1000)


@dataclass
class _Tx:
    xid: int
    ts_ms: int
    final_lsn: int
    skip: bool = False  # carries a replication origin and config.origin == "none"


@dataclass
class _Stats:
    snapshot_rows: int = 0
    events: int = 0
    transactions: int = 0
    batches: int = 0
    last_ack_ms: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class PgCaptureWorker:
    """Snapshots and streams the captured tables of one PostgreSQL database to a transport."""

    def __init__(
        self,
        url: str,
        transport: Transport,
        config: PgCaptureConfig,
        producer: Producer | None = None,
    ) -> None:
        self.url = url
        self.transport = transport
        self.config = config
        self.refs = [TableRef.parse(t) for t in config.tables]
        self.producer = producer or transport.producer()
        self.stats = _Stats()
        self.meta: Any = None  # autocommit connection: catalog, state
        self.repl: Any = None  # replication connection
        self.cursor: Any = None  # replication cursor once streaming
        self.db_name = ""
        self.tables: dict[TableRef, TableInfo] = {}
        self.exported_snapshot: str | None = None
        self.consistent_lsn: int | None = None
        self.acked_lsn = 0  # end LSN of the last transaction the transport acknowledged
        self._relations: dict[int, Relation] = {}
        self._keys: dict[tuple[str, str], tuple[str, ...]] = {}
        self._topics: set[str] = set()
        self._src_heads: dict[tuple[str, str, str], str] = {}
        self._tx: _Tx | None = None
        self._out: list[OutgoingMessage] = []
        self._out_events = 0
        self._complete_lsn = 0  # end LSN of the last transaction whose events are in _out
        self._last_status = 0.0
        self.server_version = 0

    # -- setup ---------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Connect, check the publication, find or create the slot, record snapshot work."""
        self.meta = _connect(self.url)
        self.meta.autocommit = True
        with self.meta.cursor() as cur:
            cur.execute(
                "SELECT current_database(), current_setting('wal_level'), "
                "current_setting('server_version_num')::int"
            )
            self.db_name, wal_level, self.server_version = cur.fetchone()
            if wal_level != "logical":
                raise CaptureError(
                    f"wal_level is {wal_level!r}: set wal_level = logical and restart PostgreSQL"
                )
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS public.{STATE_TABLE} ("
                "slot text NOT NULL, tbl text NOT NULL, status text NOT NULL, mode text, "
                "last_pk text, rows_done bigint NOT NULL DEFAULT 0, "
                "chunks_done integer NOT NULL DEFAULT 0, rows_total bigint, "
                "consistent_lsn text, updated_ms bigint, PRIMARY KEY (slot, tbl))"
            )
            for ref in self.refs:
                self.tables[ref] = _table_info(cur, ref)
                self._keys[(ref.schema, ref.name)] = self.tables[ref].pk
            published = _published(cur, self.config.publication)
            missing = [str(r) for r in self.refs if r not in published]
            if missing:
                raise CaptureError(
                    f"table(s) {', '.join(missing)} are not in publication "
                    f"{self.config.publication!r}: run `kit cdc enable` (enable_capture) first"
                )
            cur.execute(
                "SELECT plugin, database FROM pg_replication_slots WHERE slot_name = %s",
                (self.config.slot,),
            )
            slot = cur.fetchone()
            cur.execute(
                f"SELECT tbl, status FROM public.{STATE_TABLE} WHERE slot = %s",
                (self.config.slot,),
            )
            state = dict(cur.fetchall())
        if slot is not None and (slot[0] != "pgoutput" or slot[1] != self.db_name):
            raise CaptureError(
                f"replication slot {self.config.slot!r} exists but uses plugin {slot[0]!r} on "
                f"database {slot[1]!r}; pick another slot name or drop it"
            )
        self.repl = _replication_connect(self.url)
        if slot is None:
            if state and not self.config.resnapshot_if_slot_lost:
                raise CaptureError(
                    f"replication slot {self.config.slot!r} is gone but capture state exists: "
                    "changes made since it was dropped were not captured. Restart with "
                    "resnapshot_if_slot_lost (kit: --resnapshot) to take a new snapshot."
                )
            self._set_state_rows({}, delete_all=True)
            with self.repl.cursor() as rcur:
                # Old syntax: accepted by PostgreSQL 10 through 18.
                rcur.execute(
                    f"CREATE_REPLICATION_SLOT {_qi(self.config.slot)} LOGICAL pgoutput "
                    "EXPORT_SNAPSHOT"
                )
                _name, lsn, snapshot_name, _plugin = rcur.fetchone()
            self.exported_snapshot = snapshot_name
            self.consistent_lsn = parse_lsn(lsn)
            state = {}
        status = "pending" if self.config.snapshot == "initial" else "skipped"
        new_rows = {str(r): status for r in self.refs if str(r) not in state}
        if new_rows:
            self._set_state_rows(new_rows)

    def _set_state_rows(self, rows: dict[str, str], delete_all: bool = False) -> None:
        lsn = format_lsn(self.consistent_lsn) if self.consistent_lsn else None
        with self.meta.cursor() as cur:
            if delete_all:
                cur.execute(
                    f"DELETE FROM public.{STATE_TABLE} WHERE slot = %s", (self.config.slot,)
                )
            for tbl, status in rows.items():
                cur.execute(
                    f"INSERT INTO public.{STATE_TABLE} (slot, tbl, status, consistent_lsn, "
                    "updated_ms) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (slot, tbl) DO NOTHING",
                    (self.config.slot, tbl, status, lsn, now_ms()),
                )

    def snapshot_progress(self) -> list[SnapshotProgress]:
        """Per-table snapshot status of this worker's slot."""
        return snapshot_progress(self.url, self.config.slot)

    # -- events --------------------------------------------------------------------------------
    def _topic(self, schema: str, table: str) -> str:
        topic = topic_name(self.config.topic_prefix, schema, table)
        if topic not in self._topics:
            self.producer.ensure_topic(topic)
            self._topics.add(topic)
        return topic

    def _source_json(
        self,
        schema: str,
        table: str,
        snapshot: str,
        tx_id: int | None,
        lsn: int | None,
        ts: int | None,
    ) -> str:
        head = self._src_heads.get((schema, table, snapshot))
        if head is None:
            head = (
                f'{{"version":"{ENVELOPE_VERSION}","connector":"{CONNECTOR}",'
                f'"name":{json.dumps(self.config.topic_prefix)},"db":{json.dumps(self.db_name)},'
                f'"schema":{json.dumps(schema)},"table":{json.dumps(table)},'
                f'"snapshot":"{snapshot}","txId":'
            )
            self._src_heads[(schema, table, snapshot)] = head
        tx = "null" if tx_id is None else str(int(tx_id))
        ln = "null" if lsn is None else str(int(lsn))
        ts_s = "null" if ts is None else str(int(ts))
        return f'{head}{tx},"seq":null,"lsn":{ln},"ts_ms":{ts_s}}}'

    def _emit(
        self,
        schema: str,
        table: str,
        op: str,
        key: dict[str, Any] | None,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        source_json: str,
    ) -> None:
        topic = self._topic(schema, table)
        key_bytes = None if key is None else _dumps(key).encode()
        value = (
            (
                f'{{"before":null,"after":null,"source":{source_json},"op":"t","ts_ms":{now_ms()}}}'
            ).encode()
            if op == "t"
            else encode_value_raw(
                op,
                None if before is None else _dumps(before),
                None if after is None else _dumps(after),
                source_json,
                now_ms(),
            )
        )
        self._out.append(OutgoingMessage(topic, key_bytes, value))
        self._out_events += 1
        if op == "d" and self.config.emit_tombstones and key_bytes is not None:
            self._out.append(OutgoingMessage(topic, key_bytes, None))

    # -- snapshot ------------------------------------------------------------------------------
    def run_snapshot(self, stop: threading.Event | None = None) -> bool:
        """Publish every pending snapshot chunk; False when stopped before the end.

        Uses the exported snapshot when this process created the slot, else a fresh
        REPEATABLE READ transaction (the converging fallback described above).
        """
        with self.meta.cursor() as cur:
            cur.execute(
                f"SELECT tbl, last_pk, rows_done FROM public.{STATE_TABLE} "
                "WHERE slot = %s AND status IN ('pending', 'running') ORDER BY tbl",
                (self.config.slot,),
            )
            todo = cur.fetchall()
        if not todo:
            self.exported_snapshot = None
            return True
        mode = "exported" if self.exported_snapshot else "resumed"
        snap = _connect(self.url)
        try:
            snap.set_session(isolation_level="REPEATABLE READ", readonly=True)
            with snap.cursor() as cur:
                if self.exported_snapshot:
                    cur.execute("SET TRANSACTION SNAPSHOT %s", (self.exported_snapshot,))
                cur.execute("SELECT pg_current_wal_lsn()::text")
                snap_lsn = self.consistent_lsn or parse_lsn(cur.fetchone()[0])
                for tbl, last_pk_json, _rows_done in todo:
                    ref = TableRef.parse(tbl)
                    info = self.tables.get(ref)
                    if info is None:
                        continue  # no longer configured: leave its progress alone
                    last_pk = json.loads(last_pk_json) if last_pk_json else None
                    if not self._snapshot_table(cur, info, last_pk, mode, snap_lsn, stop):
                        return False
            snap.rollback()
        finally:
            snap.close()
            self.exported_snapshot = None
        return True

    def _snapshot_table(
        self,
        cur: Any,
        info: TableInfo,
        last_pk: list[str] | None,
        mode: str,
        snap_lsn: int,
        stop: threading.Event | None,
    ) -> bool:
        ref = info.ref
        cur.execute(f"SELECT count(*) FROM {ref.qualified}")
        total = cur.fetchone()[0]
        self._save_progress(ref, "running", mode, None, 0, total, chunk=False)
        # Qualified with the alias: ORDER BY "id" would otherwise sort by the *output* column
        # "id", which is the text form.
        cols = ", ".join(_as_wire_text(name, oid) for name, oid in info.columns)
        pk_cols = ", ".join(f"t.{_qi(c)}" for c in info.pk)
        pk_text = ", ".join(f"t.{_qi(c)}::text" for c in info.pk)
        bound = ", ".join(f"%s::{t}" for t in info.pk_types)
        types = [oid for _name, oid in info.columns]
        names = [name for name, _oid in info.columns]
        pk_idx = [names.index(c) for c in info.pk]
        chunk = self.config.snapshot_chunk
        while True:
            if stop is not None and stop.is_set():
                return False
            where = f"WHERE ({pk_cols}) > ({bound}) " if last_pk is not None else ""
            cur.execute(
                f"SELECT {cols}, {pk_text} FROM {ref.qualified} AS t {where}"
                f"ORDER BY {pk_cols} LIMIT {int(chunk)}",
                tuple(last_pk) if last_pk is not None else None,
            )
            rows = cur.fetchall()
            last = len(rows) < chunk
            ts = now_ms()
            for i, r in enumerate(rows):
                row = {n: convert_text(t, v) for n, t, v in zip(names, types, r, strict=False)}
                flag = "last" if last and i == len(rows) - 1 else "true"
                src = self._source_json(ref.schema, ref.name, flag, None, snap_lsn, ts)
                key = {names[j]: row[names[j]] for j in pk_idx}
                self._emit(ref.schema, ref.name, "r", key, None, row, src)
            if self._out:
                self.producer.send_batch(self._out)
                self._out = []
                self._out_events = 0
            if rows:
                last_pk = list(rows[-1][len(names) :])
            self.stats.snapshot_rows += len(rows)
            self._save_progress(
                ref,
                "done" if last else "running",
                mode,
                json.dumps(last_pk) if last_pk is not None else None,
                len(rows),
                total,
                chunk=True,
            )
            if last:
                return True

    def _save_progress(
        self,
        ref: TableRef,
        status: str,
        mode: str,
        last_pk: str | None,
        rows: int,
        total: int | None,
        chunk: bool,
    ) -> None:
        with self.meta.cursor() as cur:
            if chunk:
                cur.execute(
                    f"UPDATE public.{STATE_TABLE} SET status = %s, mode = %s, last_pk = %s, "
                    "rows_done = rows_done + %s, chunks_done = chunks_done + 1, rows_total = %s, "
                    "updated_ms = %s WHERE slot = %s AND tbl = %s",
                    (status, mode, last_pk, rows, total, now_ms(), self.config.slot, str(ref)),
                )
            else:
                cur.execute(
                    f"UPDATE public.{STATE_TABLE} SET status = %s, mode = %s, rows_total = %s, "
                    "updated_ms = %s WHERE slot = %s AND tbl = %s",
                    (status, mode, total, now_ms(), self.config.slot, str(ref)),
                )

    # -- stream --------------------------------------------------------------------------------
    def start_stream(self) -> None:
        """START_REPLICATION from the slot's confirmed position."""
        self.cursor = self.repl.cursor()
        options = {"proto_version": "1", "publication_names": self.config.publication}
        if self.config.origin == "none" and self.server_version >= 160000:
            options["origin"] = "none"  # server-side filter; older servers: see handle()
        self.cursor.start_replication(
            slot_name=self.config.slot,
            decode=False,
            start_lsn=0,
            options=options,
            status_interval=max(1.0, self.config.status_interval_s),  # psycopg2's minimum
        )
        self._last_status = time.monotonic()

    def _key_columns(self, rel: Relation) -> tuple[str, ...]:
        key = self._keys.get((rel.schema, rel.name))
        if key is None:
            try:
                with self.meta.cursor() as cur:
                    key = _table_info(cur, TableRef(rel.schema, rel.name)).pk
            except CaptureError:
                key = tuple(c.name for c in rel.columns if c.is_key)
            self._keys[(rel.schema, rel.name)] = key
        return key

    def handle(self, msg: PgMessage, lsn: int) -> None:
        """Turn one decoded message into buffered events (public for tests)."""
        if isinstance(msg, Begin):
            self._tx = _Tx(msg.xid, _ts_ms(msg.commit_ts), msg.final_lsn)
        elif isinstance(msg, Commit):
            self._tx = None
            self._complete_lsn = msg.end_lsn
            self.stats.transactions += 1
        elif isinstance(msg, Origin):
            if self.config.origin == "none" and self._tx is not None:
                self._tx.skip = True  # a sink's own write: never loop it back
        elif isinstance(msg, Relation):
            self._relations[msg.rel_id] = msg
            self._key_columns(msg)
        elif self._tx is not None and self._tx.skip and isinstance(msg, _ROW_MESSAGES):
            self.stats.extra["skipped_origin_changes"] = (
                self.stats.extra.get("skipped_origin_changes", 0) + 1
            )
        elif isinstance(msg, Insert | Update | Delete):
            self._handle_row(msg, lsn)
        elif isinstance(msg, Truncate):
            if self.config.emit_truncate:
                for rel_id in msg.rel_ids:
                    rel = self._relation(rel_id)
                    src = self._source_json(rel.schema, rel.name, "false", *self._tx_src(lsn))
                    self._emit(rel.schema, rel.name, "t", None, None, None, src)
        # Type and logical messages carry nothing to publish.

    def _tx_src(self, lsn: int) -> tuple[int | None, int, int | None]:
        tx = self._tx
        return (tx.xid if tx else None, lsn, tx.ts_ms if tx else None)

    def _relation(self, rel_id: int) -> Relation:
        rel = self._relations.get(rel_id)
        if rel is None:
            raise CaptureError(
                f"change for relation id {rel_id} arrived before its Relation message"
            )
        return rel

    def _handle_row(self, msg: Insert | Update | Delete, lsn: int) -> None:
        rel = self._relation(msg.rel_id)
        key_cols = self._key_columns(rel)
        src = self._source_json(rel.schema, rel.name, "false", *self._tx_src(lsn))
        if isinstance(msg, Insert):
            after = tuple_to_row(rel, msg.new)
            self._emit(rel.schema, rel.name, "c", _key(after, key_cols), None, after, src)
            return
        if isinstance(msg, Delete):
            before = tuple_to_row(rel, msg.old, only_keys=msg.old_kind == "K")
            _mark_unavailable(before)
            self._emit(rel.schema, rel.name, "d", _key(before, key_cols), before, None, src)
            return
        old = None
        if msg.old is not None:
            old = tuple_to_row(rel, msg.old, only_keys=msg.old_kind == "K")
        after = tuple_to_row(rel, msg.new)
        for name, value in after.items():
            if value is UNCHANGED_TOAST:
                # REPLICA IDENTITY FULL logs the old row in full: the unchanged value is there.
                prior = old.get(name, UNCHANGED_TOAST) if old is not None else UNCHANGED_TOAST
                after[name] = UNAVAILABLE_VALUE if prior is UNCHANGED_TOAST else prior
        if old is not None:
            _mark_unavailable(old)
        new_key = _key(after, key_cols)
        old_key = (
            _key(old, key_cols) if old is not None and all(k in old for k in key_cols) else None
        )
        if old_key is not None and old_key != new_key:
            # Primary key changed: like Debezium, a delete of the old key and a create.
            self._emit(rel.schema, rel.name, "d", old_key, old, None, src)
            self._emit(rel.schema, rel.name, "c", new_key, None, after, src)
            return
        self._emit(rel.schema, rel.name, "u", new_key, old, after, src)

    def flush(self) -> int:
        """Publish buffered events; confirm the LSN of complete transactions once acknowledged."""
        sent = self._out_events
        if self._out:
            self.producer.send_batch(self._out)
            self.stats.batches += 1
            self.stats.events += sent
            self.stats.last_ack_ms = now_ms()
            self._out = []
            self._out_events = 0
        if self._complete_lsn > self.acked_lsn:
            self.acked_lsn = self._complete_lsn
            if self.cursor is not None:
                self.cursor.send_feedback(
                    write_lsn=self.acked_lsn,
                    flush_lsn=self.acked_lsn,
                    apply_lsn=self.acked_lsn,
                    force=True,
                )
                self._last_status = time.monotonic()
        return sent

    def poll(self, timeout_s: float | None = None) -> int:
        """Read what the server has sent (waiting up to `timeout_s` when nothing is there),
        publish it and confirm; returns the number of events published."""
        cur = self.cursor
        read = 0
        while True:
            msg = cur.read_message()
            if msg is None:
                break
            read += 1
            self.handle(decode_message(msg.payload), msg.data_start)
            if self._out_events >= self.config.batch_size:
                self.flush()
        published = self.flush() if (self._out or self._complete_lsn > self.acked_lsn) else 0
        now = time.monotonic()
        if now - self._last_status >= self.config.status_interval_s:
            # Standby status update; psycopg2 has already moved its flush position to the
            # keepalive's WAL end if everything received was confirmed (idle database).
            cur.send_feedback(force=True)
            self._last_status = now
        if read == 0 and timeout_s:
            wait = min(
                timeout_s, max(0.0, self.config.status_interval_s - (now - self._last_status))
            )
            with contextlib.suppress(InterruptedError):
                select.select([cur], [], [], wait)
        return published

    def run(self, stop: threading.Event, on_progress: Callable[[int], None] | None = None) -> None:
        """Prepare, snapshot what is pending, then stream until `stop` is set."""
        if self.meta is None:
            self.prepare()
        if not self.run_snapshot(stop):
            return
        if self.cursor is None:
            self.start_stream()
        while not stop.is_set():
            n = self.poll(self.config.idle_wait_s)
            if on_progress and n:
                on_progress(n)
        self.flush()

    def close(self) -> None:
        """Send a last status update and close connections (the slot stays)."""
        if self.cursor is not None:
            with contextlib.suppress(Exception):
                self.cursor.send_feedback(force=True)
        for conn in (self.repl, self.meta):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
        self.cursor = self.repl = self.meta = None
        with contextlib.suppress(Exception):
            self.producer.close()


_ROW_MESSAGES = (Insert, Update, Delete, Truncate)

# Types whose cast to text differs from their output function (what pgoutput sends):
# bpchar::text trims the padding, inet::text always shows the mask. psycopg2 returns these
# as the output function's string when selected as they are.
_RAW_TEXT_OIDS = frozenset({1042, 869, 650})  # bpchar, inet, cidr


def _as_wire_text(name: str, type_oid: int) -> str:
    """Select expression giving a column the way pgoutput would send it (text format)."""
    col = f"t.{_qi(name)}"
    return f"{col} AS {_qi(name)}" if type_oid in _RAW_TEXT_OIDS else f"{col}::text"


def _key(row: dict[str, Any], key_cols: Sequence[str]) -> dict[str, Any]:
    return {k: row.get(k) for k in key_cols}


def _mark_unavailable(row: dict[str, Any]) -> None:
    for name, value in row.items():
        if value is UNCHANGED_TOAST:
            row[name] = UNAVAILABLE_VALUE


def install_stop_signals(stop: threading.Event) -> None:
    """SIGTERM/SIGINT set `stop`: the worker finishes its batch, confirms and exits cleanly."""

    def handler(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_capture(url: str, transport: Transport, config: PgCaptureConfig) -> PgCaptureWorker:
    """Run a worker in this process until SIGTERM/SIGINT (for `kit cdc run` and scripts)."""
    stop = threading.Event()
    install_stop_signals(stop)
    worker = PgCaptureWorker(url, transport, config)
    try:
        worker.run(stop)
    finally:
        worker.close()
    return worker
