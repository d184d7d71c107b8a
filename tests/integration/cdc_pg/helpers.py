"""Helpers for the PostgreSQL capture tests: SQL, a driven worker, reading events back."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2

from cdc.capture.postgres import PgCaptureConfig, PgCaptureWorker, enable_capture
from cdc.ports import Transport
from cdc.transport.embedded import EmbeddedLog, EmbeddedLogConfig


def as_role(url: str, role: str) -> str:
    """The same server and database, logged in as `role` (the test server trusts loopback)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{role}@{host}"))


def execute(url: str, *statements: str, params: tuple | None = None) -> None:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for sql in statements:
                cur.execute(sql, params)
    finally:
        conn.close()


def scalar(url: str, sql: str, params: tuple | None = None) -> Any:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            row = cur.fetchone()
            return row[0] if row else None
    finally:
        conn.close()


def confirmed_flush(url: str, slot: str) -> int:
    """The slot's confirmed LSN; 0 while the slot does not exist yet (a capture worker
    killed before it created the slot, as the crash tests do on a loaded machine)."""
    text = scalar(
        url,
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    )
    if text is None:
        return 0
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def embedded(tmp_path: Path, partitions: int = 1) -> EmbeddedLog:
    return EmbeddedLog(
        EmbeddedLogConfig(log_dir=tmp_path / f"log-{uuid.uuid4().hex[:6]}", partitions=partitions)
    )


def make_worker(
    url: str, transport: Transport, tables: tuple[str, ...], enable: bool = True, **config: Any
) -> PgCaptureWorker:
    if enable:
        enable_capture(url, tables, publication=config.get("publication", "strangler_cdc"))
    config.setdefault("snapshot_chunk", 3)
    config.setdefault("status_interval_s", 0.5)
    config.setdefault("idle_wait_s", 0.05)
    return PgCaptureWorker(url, transport, PgCaptureConfig(tables=tables, **config))


def read_events(transport: Transport, topics: list[str]) -> list[dict[str, Any]]:
    """Every message of `topics` from the start, as {key, value} dicts (values parsed)."""
    consumer = transport.consumer(f"reader-{uuid.uuid4().hex[:8]}", topics)
    out: list[dict[str, Any]] = []
    try:
        idle = 0
        while idle < 2:
            batch = consumer.poll(1000, 0.05)
            idle = idle + 1 if not batch else 0
            for m in batch:
                out.append(
                    {
                        "key": json.loads(m.key) if m.key else None,
                        "value": json.loads(m.value) if m.value else None,
                        "partition": m.partition,
                        "offset": m.offset,
                    }
                )
    finally:
        consumer.close()
    return out


def pump_until(
    worker: PgCaptureWorker, condition: Callable[[], bool], timeout_s: float = 15.0
) -> None:
    """Drive a streaming worker until `condition()` holds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        worker.poll(0.05)
        if condition():
            return
    raise TimeoutError("condition not met while streaming")


def stream_events(
    worker: PgCaptureWorker, transport: Transport, topic: str, count: int, timeout_s: float = 15.0
) -> list[dict[str, Any]]:
    """Pump the worker until `topic` holds at least `count` events; return them all."""
    events: list[dict[str, Any]] = []

    def enough() -> bool:
        nonlocal events
        ends = transport.end_offsets([topic])
        if sum(ends.values()) < count:
            return False
        events = read_events(transport, [topic])
        return len(events) >= count

    pump_until(worker, enough, timeout_s)
    return events
