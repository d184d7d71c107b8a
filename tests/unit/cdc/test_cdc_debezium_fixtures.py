"""Events exactly as Debezium writes them (tests/fixtures/debezium, sources in its README):
the sink applies them, never writes the unchanged-TOAST placeholder as data in any column
type, and keeps NUMERIC values exact or dead-letters them with the reason."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from cdc.events import parse_event
from cdc.mapping import parse_mapping
from cdc.ports import OutgoingMessage
from cdc.sink import Sink, SinkConfig, list_dead_letters
from cdc.toast import UNAVAILABLE_VALUE, is_unavailable
from cdc.transport.embedded import EmbeddedLog, EmbeddedLogConfig
from cdc.verify import verify
from kitcore.db import make_engine

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "debezium"
DOC_COLUMNS = ("id", "title", "body", "blob", "tags", "scores", "attrs", "meta")
SCHEMA = """
CREATE TABLE customers (id INTEGER PRIMARY KEY, first_name TEXT, last_name TEXT, email TEXT);
CREATE TABLE docs (id INTEGER PRIMARY KEY, title TEXT, body TEXT, blob BLOB, tags JSON,
                   scores JSON, attrs JSON, meta TEXT);
CREATE TABLE ledger (id INTEGER PRIMARY KEY, amount NUMERIC(38, 10), small NUMERIC(38, 10));
CREATE TABLE ledger_text (id INTEGER PRIMARY KEY, amount TEXT, small TEXT);
"""


def _fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _mapping(ledger_target: str = "ledger") -> Any:
    def copy(*cols: str) -> dict[str, str]:
        return {c: c for c in cols}

    return parse_mapping(
        {
            "service": "svc",
            "tables": [
                {
                    "source": "customers",
                    "target": "customers",
                    "key": ["id"],
                    "columns": copy("id", "first_name", "last_name", "email"),
                },
                {"source": "docs", "target": "docs", "key": ["id"], "columns": copy(*DOC_COLUMNS)},
                {
                    "source": "ledger",
                    "target": ledger_target,
                    "key": ["id"],
                    "columns": copy("id", "amount", "small"),
                },
            ],
        }
    )


class Rig:
    def __init__(self, root: Path, ledger_target: str = "ledger") -> None:
        self.target = make_engine(f"sqlite:///{root / 'tgt.db'}")
        with self.target.begin() as conn:
            for stmt in SCHEMA.split(";"):
                if stmt.strip():
                    conn.exec_driver_sql(stmt)
        self.log = EmbeddedLog(EmbeddedLogConfig(root / "log", partitions=1))
        self.topics = (
            "dbserver1.public.customers",
            "dbserver1.public.docs",
            "dbserver1.public.ledger",
        )
        self.sink = Sink(
            self.target, _mapping(ledger_target), self.log, SinkConfig("g", self.topics)
        )

    def publish(self, table: str, *values: bytes | None) -> None:
        prod = self.log.producer()
        prod.send_batch(
            [OutgoingMessage(f"dbserver1.public.{table}", b'{"id":1}', v) for v in values]
        )
        prod.close()
        self.sink.drain(idle_polls=1)

    def rows(self, table: str) -> list[dict[str, Any]]:
        with self.target.connect() as conn:
            return [
                dict(r._mapping) for r in conn.execute(text(f"SELECT * FROM {table} ORDER BY id"))
            ]

    def reasons(self) -> list[str]:
        return [d.reason for d in list_dead_letters(self.target, "g")]

    def close(self) -> None:
        self.sink.close()
        self.target.dispose()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.close()


def test_documented_create_update_delete_and_truncate_examples_apply_in_order(rig: Rig) -> None:
    rig.publish("customers", _fixture("docs_pg_create_customers.json"))
    assert rig.rows("customers") == [
        {"id": 1, "first_name": "Anne", "last_name": "Kretchmar", "email": "annek@noanswer.org"}
    ]
    rig.publish("customers", _fixture("docs_pg_update_customers.json"))
    assert rig.rows("customers")[0]["first_name"] == "Anne Marie"
    rig.publish("customers", _fixture("docs_pg_delete_customers.json"), None)  # + tombstone
    assert rig.rows("customers") == []
    rig.publish("customers", _fixture("docs_pg_create_customers.json"))
    rig.publish("customers", _fixture("docs_pg_truncate_customers_plain.json"))
    assert rig.rows("customers") == [] and rig.reasons() == []


@pytest.mark.parametrize("name", ["serde-with-schema.json", "serde-without-schema.json"])
def test_debeziums_own_serialized_test_events_apply(rig: Rig, name: str) -> None:
    rig.publish("customers", _fixture(name))
    assert rig.rows("customers") == [
        {"id": 1004, "first_name": "Anne", "last_name": "Kretchmar", "email": "annek@noanswer.org"}
    ]
    assert rig.reasons() == []


def _stored_doc() -> bytes:
    after = {
        "id": 1,
        "title": "first",
        "body": "long body",
        "blob": "AAEC",  # base64 of 00 01 02
        "tags": ["a", "b"],
        "scores": [1, 2, 3],
        "attrs": {"k": "v"},
        "meta": '{"x": 1}',
    }
    return json.dumps(
        {"before": None, "after": after, "source": {"table": "docs"}, "op": "c", "ts_ms": 1}
    ).encode()


@pytest.mark.parametrize("name", ["toast_update_docs.json", "toast_update_docs_plain.json"])
def test_the_toast_placeholder_is_never_written_in_any_column_type(rig: Rig, name: str) -> None:
    raw = _fixture(name)
    event = parse_event(raw)
    assert event is not None and event.after is not None
    held = {c for c, v in event.after.items() if is_unavailable(v)}
    assert held == set(DOC_COLUMNS) - {"id", "title"}  # every spelling is recognised
    rig.publish("docs", _stored_doc())
    rig.publish("docs", raw)
    (row,) = rig.rows("docs")
    assert row["title"] == "changed title"
    assert row["body"] == "long body" and row["blob"] == b"\x00\x01\x02"
    assert json.loads(row["tags"]) == ["a", "b"] and json.loads(row["scores"]) == [1, 2, 3]
    assert json.loads(row["attrs"]) == {"k": "v"} and row["meta"] == '{"x": 1}'
    assert UNAVAILABLE_VALUE not in json.dumps(row, default=repr)
    assert rig.reasons() == []


def test_a_placeholder_row_that_is_not_stored_is_dead_lettered_not_written(rig: Rig) -> None:
    rig.publish("docs", _fixture("toast_update_docs.json"))
    assert rig.rows("docs") == []
    (reason,) = rig.reasons()
    assert "unchanged-TOAST" in reason


def test_numeric_38_10_that_a_sqlite_numeric_column_would_round_is_dead_lettered(rig: Rig) -> None:
    rig.publish("ledger", _fixture("numeric_38_10_ledger.json"))
    assert rig.rows("ledger") == []
    (reason,) = rig.reasons()
    assert "12345678901234567890.1234567890 would be stored as" in reason
    assert "TEXT" in reason


def test_numeric_38_10_survives_exactly_in_a_text_column(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ledger_target="ledger_text")
    try:
        rig.publish("ledger", _fixture("numeric_38_10_ledger.json"))
        (row,) = rig.rows("ledger_text")
        assert Decimal(row["amount"]) == Decimal("12345678901234567890.1234567890")
        assert Decimal(row["small"]) == Decimal("1234567.1")
        assert rig.reasons() == []
    finally:
        rig.close()


def test_ordinary_decimals_in_a_sqlite_numeric_column_verify_clean(tmp_path: Path) -> None:
    # SQLAlchemy reads NUMERIC(38,10) 1234567.1 back as 1234567.1000000001; the verifier
    # compares the stored float itself, so a faithful copy is not reported as different.
    rig = Rig(tmp_path)
    source = make_engine(f"sqlite:///{tmp_path / 'src.db'}")
    try:
        with source.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TABLE ledger (id INTEGER PRIMARY KEY, amount NUMERIC, small NUMERIC)"
            )
            conn.exec_driver_sql("INSERT INTO ledger VALUES (1, 10.13, 1234567.1)")
        after = {"id": 1, "amount": "10.13", "small": "1234567.1"}
        event = {
            "before": None,
            "after": after,
            "source": {"table": "ledger"},
            "op": "c",
            "ts_ms": 1,
        }
        rig.publish("ledger", json.dumps(event).encode())
        assert rig.reasons() == []
        mapping = _mapping().for_source("ledger")
        report = verify(
            source,
            rig.target,
            parse_mapping(
                {
                    "service": "svc",
                    "tables": [
                        {
                            "source": "ledger",
                            "target": "ledger",
                            "key": ["id"],
                            "columns": {c.target: c.target for c in mapping.columns},
                        }
                    ],
                }
            ),
        )
        assert report.ok, report
    finally:
        source.dispose()
        rig.close()


@pytest.mark.parametrize(
    ("column", "spelling"),
    [
        ("body", UNAVAILABLE_VALUE),
        ("blob", "X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ=="),  # base64 (bytea, no schema)
        ("blob", "5f5f646562657a69756d5f756e617661696c61626c655f76616c7565"),  # hex mode
        ("tags", [UNAVAILABLE_VALUE]),
        ("scores", list(UNAVAILABLE_VALUE.encode())),
        ("attrs", {UNAVAILABLE_VALUE: UNAVAILABLE_VALUE}),
    ],
)
def test_each_placeholder_spelling_alone_keeps_the_stored_value(
    rig: Rig, column: str, spelling: Any
) -> None:
    rig.publish("docs", _stored_doc())
    before = rig.rows("docs")
    after = {**json.loads(_stored_doc())["after"], "title": "new", column: spelling}
    event = {"before": None, "after": after, "source": {"table": "docs"}, "op": "u", "ts_ms": 2}
    rig.publish("docs", json.dumps(event).encode())
    assert rig.rows("docs") == [{**before[0], "title": "new"}]
    assert rig.reasons() == []


def test_text_that_is_not_base64_is_dead_lettered_from_a_binary_column(rig: Rig) -> None:
    after = {**json.loads(_stored_doc())["after"], "blob": "not base64!"}
    event = {"before": None, "after": after, "source": {"table": "docs"}, "op": "c", "ts_ms": 2}
    rig.publish("docs", json.dumps(event).encode())
    assert rig.rows("docs") == []
    (reason,) = rig.reasons()
    assert "is not base64" in reason
