"""Transient is not poison: database failures that say nothing about the event (locks, busy
timeouts, lost connections, serialization failures, deadlocks) are retried with backoff and
never dead-lettered; the sink says that it is retrying and why."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from cdc.mapping import parse_mapping
from cdc.ports import OutgoingMessage
from cdc.retry import Backoff, transient_reason
from cdc.sink import Sink, SinkConfig, count_dead_letters
from cdc.transport.embedded import EmbeddedLog, EmbeddedLogConfig
from kitcore.db import make_engine

TOPIC = "src.main.items"
MAPPING = parse_mapping(
    {
        "service": "svc",
        "tables": [
            {"source": "items", "target": "items", "key": ["id"], "columns": {"id": "id", "n": "n"}}
        ],
    }
)


class PgError(Exception):
    """A driver error carrying a SQLSTATE, as psycopg2 (pgcode) does."""

    def __init__(self, message: str, pgcode: str) -> None:
        super().__init__(message)
        self.pgcode = pgcode


def _wrapped(orig: Exception, cls: type[DBAPIError] = OperationalError) -> DBAPIError:
    return cls("INSERT ...", {}, orig)


@pytest.mark.parametrize(
    ("orig", "expected"),
    [
        (sqlite3.OperationalError("database is locked"), "target database busy"),
        (PgError("could not serialize access", "40001"), "serialization failure"),
        (PgError("deadlock detected", "40P01"), "deadlock"),
        (PgError("canceling statement due to lock timeout", "55P03"), "lock not available"),
        (PgError("terminating connection due to administrator command", "57P01"), "shutting"),
        (PgError("connection failure", "08006"), "connection failure"),
    ],
)
def test_failures_that_say_nothing_about_the_event_are_transient(
    orig: Exception, expected: str
) -> None:
    reason = transient_reason(_wrapped(orig))
    assert reason is not None and expected in reason


@pytest.mark.parametrize(
    "orig",
    [
        sqlite3.IntegrityError("UNIQUE constraint failed: items.n"),
        sqlite3.OperationalError("table items has no column named x"),
        PgError("duplicate key value violates unique constraint", "23505"),
        PgError('invalid input syntax for type integer: "x"', "22P02"),
    ],
)
def test_failures_about_the_event_are_not_transient(orig: Exception) -> None:
    assert transient_reason(_wrapped(orig, IntegrityError)) is None


def test_backoff_doubles_up_to_its_cap() -> None:
    b = Backoff(first_s=1.0, max_s=3.0)
    delays = []
    for _ in range(4):
        b.failed("busy")
        delays.append(b.delay_s)
    assert delays == [1.0, 2.0, 3.0, 3.0]
    assert b.attempts == 4 and "attempt 4" in b.describe() and "busy" in b.describe()


def _msg(i: int) -> OutgoingMessage:
    payload: dict[str, Any] = {
        "before": None,
        "after": {"id": i, "n": i * 10},
        "source": {"table": "items"},
        "op": "c",
        "ts_ms": 1,
    }
    return OutgoingMessage(TOPIC, json.dumps({"id": i}).encode(), json.dumps(payload).encode())


def test_a_target_locked_longer_than_its_busy_timeout_is_retried_and_loses_nothing(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'tgt.db'}"
    target = make_engine(url)

    @event.listens_for(target, "connect")
    def _short_busy_timeout(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA busy_timeout=50")  # after the factory's 60 s

    with target.begin() as conn:
        conn.execute(text("CREATE TABLE items (id INTEGER PRIMARY KEY, n INTEGER)"))
    log = EmbeddedLog(EmbeddedLogConfig(tmp_path / "log", partitions=2))
    prod = log.producer()
    prod.send_batch([_msg(i) for i in range(1, 41)])
    prod.close()
    sink = Sink(target, MAPPING, log, SinkConfig("g", (TOPIC,), batch_size=25))
    holder = sqlite3.connect(tmp_path / "tgt.db", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock far past 50 ms
        holder.execute("INSERT INTO items VALUES (1000, 0)")
        results = [sink.run_once() for _ in range(6)]
        assert all(r.retrying for r in results)
        assert sink.retrying is not None and "database is locked" in sink.retrying
        assert count_dead_letters(target, "g") == 0
        holder.execute("COMMIT")
        sink.drain(idle_polls=2)
        assert sink.retrying is None
        with target.connect() as conn:
            rows = conn.execute(text("SELECT id, n FROM items WHERE id < 1000")).all()
        assert sorted(rows) == [(i, i * 10) for i in range(1, 41)]
        assert count_dead_letters(target, "g") == 0
        assert sum(sink.stored_offsets().values()) == 40
    finally:
        holder.close()
        sink.close()
        target.dispose()
