"""Pipeline status per table and consumer: captured, published, applied, lag, dead letters.

- captured: the capture worker's position (change-table seq) and the changes not yet published
  with the age of the oldest of them (capture lag);
- published: the transport's end offsets of the table's topic (sum over partitions);
- applied: the sink group's offsets stored in the target database; lag in events is
  published − applied, lag in seconds is now − source time of the last applied event while
  events are pending (0 when caught up);
- dead letters of the group for the topic;
- PostgreSQL source (logical decoding): the slot's confirmed LSN, the WAL it holds back
  (bytes) and the table's snapshot progress instead of the change-table position;
- the consumer group's offsets committed to the transport (Kafka) and the lag they imply —
  what Kafka tooling sees, next to the offsets the sink stores in the target database;
- SQLite source: capture drift — a table whose triggers no longer match it (a column added
  without re-installing capture, a table recreated, triggers of an older kit); the capture
  worker repairs it when it notices the schema change.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Engine, func, inspect, select

from cdc.bookkeeping import DEAD_LETTERS, SINK_OFFSETS, dead_letters, sink_offsets
from cdc.capture.sqlite import CHANGES, OFFSETS, capture_drift
from cdc.events import now_ms
from cdc.ports import Transport


@dataclass(frozen=True)
class TableStatus:
    table: str
    topic: str
    group: str | None
    captured_seq: int | None
    pending_capture: int | None
    capture_lag_s: float | None
    published: int
    applied: int | None
    lag_events: int | None
    lag_s: float | None
    dead_letters: int | None
    slot_confirmed_lsn: str | None = None
    slot_lag_bytes: int | None = None
    snapshot: str | None = None  # PostgreSQL: "<status> <rows done>/<rows total>"
    group_committed: int | None = None  # offsets committed to the transport (sum)
    group_lag: int | None = None  # published − group_committed
    capture_drift: str | None = None  # SQLite: what no longer matches the triggers


def _capture_info(
    source: Engine, tables: list[str], name: str
) -> tuple[dict[str, tuple[int, int, float]], dict[str, str]]:
    """({table: (position, changes to publish, capture lag s)}, {table: its capture drift})."""
    out: dict[str, tuple[int, int, float]] = {}
    if source.dialect.name != "sqlite" or not inspect(source).has_table(CHANGES):
        return out, {}
    now = now_ms()
    with source.connect() as conn:
        drift = {
            d.table: "; ".join(d.problems) + ("" if d.repairable else " (not repairable)")
            for d in capture_drift(conn)
        }
        row = conn.exec_driver_sql(
            f"SELECT last_seq FROM {OFFSETS} WHERE name = ?", (name,)
        ).first()
        last = row[0] if row else 0
        for t in tables:
            pending, oldest = conn.exec_driver_sql(
                f"SELECT count(*), min(ts_ms) FROM {CHANGES} WHERE seq > ? AND tbl = ?", (last, t)
            ).one()
            out[t] = (last, int(pending), max(0.0, (now - oldest) / 1000) if oldest else 0.0)
    return out, drift


def _pg_capture_info(
    source: Engine, tables: list[str], slot: str
) -> tuple[str | None, int | None, dict[str, str]]:
    """(confirmed LSN, lag bytes, {table: snapshot summary}) of a PostgreSQL source's slot."""
    from cdc.capture.postgres import list_slots, snapshot_progress

    url = source.url.render_as_string(hide_password=False)
    info = next((s for s in list_slots(url) if s.name == slot), None)
    snaps: dict[str, str] = {}
    progress = {p.table: p for p in snapshot_progress(url, slot)}
    for t in tables:
        p = progress.get(t if "." in t else f"public.{t}")
        if p is not None:
            total = p.rows_total if p.rows_total is not None else "?"
            snaps[t] = f"{p.status} {p.rows_done}/{total}"
    if info is None:
        return None, None, snaps
    return info.confirmed_flush_lsn, info.lag_bytes, snaps


def pipeline_status(
    *,
    tables: Iterable[str],
    topics: dict[str, str],
    transport: Transport,
    source: Engine | None = None,
    target: Engine | None = None,
    group: str | None = None,
    capture_name: str = "capture",
    slot: str = "strangler_cdc",
) -> list[TableStatus]:
    """One row per table; parts whose database is not given are None."""
    tables = list(tables)
    ends = transport.end_offsets([topics[t] for t in tables])
    capture, drift = _capture_info(source, tables, capture_name) if source is not None else ({}, {})
    pg_lsn = pg_bytes = None
    pg_snaps: dict[str, str] = {}
    if source is not None and source.dialect.name == "postgresql":
        pg_lsn, pg_bytes, pg_snaps = _pg_capture_info(source, tables, slot)
    committed = transport.committed(group, [topics[t] for t in tables]) if group else {}
    applied_by_topic: dict[str, tuple[int, int | None]] = {}
    dead_by_topic: dict[str, int] = {}
    if target is not None and group:
        insp = inspect(target)
        with target.connect() as conn:
            if insp.has_table(SINK_OFFSETS):
                for topic, off, ts in conn.execute(
                    select(
                        sink_offsets.c.topic,
                        func.sum(sink_offsets.c.next_offset),
                        func.min(sink_offsets.c.last_ts_ms),
                    )
                    .where(sink_offsets.c.group == group)
                    .group_by(sink_offsets.c.topic)
                ):
                    applied_by_topic[topic] = (int(off or 0), ts)
            if insp.has_table(DEAD_LETTERS):
                for topic, n in conn.execute(
                    select(dead_letters.c.topic, func.count())
                    .where(dead_letters.c.group == group)
                    .group_by(dead_letters.c.topic)
                ):
                    dead_by_topic[topic] = int(n)
    now = now_ms()
    out = []
    for t in tables:
        topic = topics[t]
        published = sum(o for tp, o in ends.items() if tp.topic == topic)
        cap = capture.get(t)
        applied = lag = None
        lag_s = None
        dead = None
        if target is not None and group:
            applied, ts = applied_by_topic.get(topic, (0, None))
            lag = max(0, published - applied)
            lag_s = 0.0 if lag == 0 else (max(0.0, (now - ts) / 1000) if ts else None)
            dead = dead_by_topic.get(topic, 0)
        group_committed = group_lag = None
        if group:
            group_committed = sum(o for tp, o in committed.items() if tp.topic == topic)
            group_lag = max(0, published - group_committed)
        out.append(
            TableStatus(
                table=t,
                topic=topic,
                group=group,
                captured_seq=cap[0] if cap else None,
                pending_capture=cap[1] if cap else None,
                capture_lag_s=cap[2] if cap else None,
                published=published,
                applied=applied,
                lag_events=lag,
                lag_s=lag_s,
                dead_letters=dead,
                slot_confirmed_lsn=pg_lsn,
                slot_lag_bytes=pg_bytes,
                snapshot=pg_snaps.get(t),
                group_committed=group_committed,
                group_lag=group_lag,
                capture_drift=drift.get(t),
            )
        )
    return out
