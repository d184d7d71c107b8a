"""A replica table refuses every write but its CDC sink's, on PostgreSQL (a statement trigger
the sink's replica-role sessions do not fire) and on SQLite (triggers checking the sink's
origin marker); the guard comes off again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy.exc import DBAPIError

from cdc.mapping import parse_mapping
from cdc.ports import OutgoingMessage
from cdc.readonly import protect, protected, unprotect
from cdc.sink import Sink, SinkConfig
from kitcore.db import make_engine
from tests.integration.cdc_pg.helpers import embedded
from tests.integration.playbook.reverse_cdc_helpers import execute, rows

pytestmark = pytest.mark.integration

MAPPING = parse_mapping(
    {
        "service": "svc",
        "tables": [
            {
                "source": "users",
                "target": "users",
                "key": ["id"],
                "columns": {"id": "id", "name": "name"},
            }
        ],
    }
)


def _check(url: str, topic: str, tmp_path: Path) -> None:
    execute(url, "CREATE TABLE users (id integer PRIMARY KEY, name text)")
    engine = make_engine(url)
    try:
        assert protect(engine, ["users"]) == ["users"]
        assert protected(engine, ["users"]) == {"users": True}
        log = embedded(tmp_path)
        value = {
            "before": None,
            "after": {"id": 7, "name": "Ada"},
            "source": {"connector": "postgresql", "schema": "public", "table": "users"},
            "op": "c",
            "ts_ms": 1,
        }
        producer = log.producer()
        producer.send_batch([OutgoingMessage(topic, b'{"id":7}', json.dumps(value).encode())])
        producer.close()
        sink = Sink(engine, MAPPING, log, SinkConfig("replica-svc", (topic,)))
        sink.start()
        try:
            for _ in range(20):
                sink.run_once()
                if rows(url, "SELECT name FROM users"):
                    break
        finally:
            sink.close()
        assert rows(url, "SELECT id, name FROM users") == [(7, "Ada")]
        assert not rows(url, "SELECT * FROM _cdc_dead_letters")
        # the service's own writes are refused (rows exist, so row triggers fire too)
        for sql in (
            "INSERT INTO users VALUES (1, 'x')",
            "UPDATE users SET name = 'y'",
            "DELETE FROM users",
        ):
            with pytest.raises(DBAPIError, match="read-only replica"):
                execute(url, sql)
        assert rows(url, "SELECT id, name FROM users") == [(7, "Ada")]
        unprotect(engine, ["users"])
        assert protected(engine, ["users"]) == {"users": False}
        execute(url, "UPDATE users SET name = 'Grace' WHERE id = 7")
        assert rows(url, "SELECT name FROM users WHERE id = 7") == [("Grace",)]
    finally:
        engine.dispose()


def test_a_postgresql_replica_accepts_only_its_sink(pg_url: str, tmp_path: Path) -> None:
    _check(pg_url, "mono.public.users", tmp_path)


def test_a_sqlite_replica_accepts_only_its_sink(tmp_path: Path) -> None:
    _check(f"sqlite:///{tmp_path / 'svc.db'}", "mono.public.users", tmp_path)
