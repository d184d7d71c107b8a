"""Any key: a link table without a primary key is captured by the key its mapping declares,
composite keys work through capture, sink, verify and dead letters, enabling several tables
is all or nothing with a reason per table, and check_keys names where database, mapping and
model disagree."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from cdc.capture.sqlite import (
    CaptureConfig,
    CaptureError,
    CaptureWorker,
    captured_tables,
    enable_capture,
    request_snapshot,
)
from cdc.events import topic_name
from cdc.keys import check_keys, declared_keys
from cdc.mapping import parse_mapping
from cdc.sink import Sink, SinkConfig, list_dead_letters, retry_dead_letters
from cdc.transport.embedded import EmbeddedLog, EmbeddedLogConfig
from cdc.verify import verify
from kitcore.db import make_engine

SOURCE_DDL = (
    "CREATE TABLE follows (follower_id INTEGER NOT NULL, followee_id INTEGER NOT NULL, since TEXT)",
    "CREATE TABLE pairs (x INTEGER, y TEXT, v INTEGER, PRIMARY KEY (x, y))",
    "CREATE TABLE loose (a INTEGER, b INTEGER)",
)
TARGET_DDL = (
    "CREATE TABLE follows (follower_id INTEGER, followee_id INTEGER, since TEXT NOT NULL, "
    "PRIMARY KEY (follower_id, followee_id))",
    "CREATE TABLE pairs (x INTEGER, y TEXT, v INTEGER, PRIMARY KEY (x, y))",
)
MAPPING = parse_mapping(
    {
        "service": "social",
        "tables": [
            {
                "source": "follows",
                "target": "follows",
                "key": ["follower_id", "followee_id"],
                "columns": {
                    "follower_id": "follower_id",
                    "followee_id": "followee_id",
                    "since": "since",
                },
            },
            {
                "source": "pairs",
                "target": "pairs",
                "key": ["x", "y"],
                "columns": {"x": "x", "y": "y", "v": "v"},
            },
        ],
    }
)


class Rig:
    def __init__(self, root: Path) -> None:
        self.source = make_engine(f"sqlite:///{root / 'src.db'}")
        self.target = make_engine(f"sqlite:///{root / 'tgt.db'}")
        for engine, ddl in ((self.source, SOURCE_DDL), (self.target, TARGET_DDL)):
            with engine.begin() as conn:
                for stmt in ddl:
                    conn.exec_driver_sql(stmt)
        self.log = EmbeddedLog(EmbeddedLogConfig(root / "log", partitions=3))
        topics = tuple(topic_name("mono", "main", t) for t in MAPPING.source_tables)
        self.capture = CaptureWorker(
            self.source, self.log, CaptureConfig(topic_prefix="mono", snapshot_chunk=3)
        )
        self.sink = Sink(self.target, MAPPING, self.log, SinkConfig("g", topics, batch_size=5))

    def enable(self) -> None:
        enable_capture(self.source, ["follows", "pairs"], declared_keys(MAPPING))

    def run(self, *sql: tuple[str, dict[str, Any]]) -> None:
        with self.source.begin() as conn:
            for stmt, params in sql:
                conn.execute(text(stmt), params)

    def drain(self) -> None:
        while self.capture.run_once():
            pass
        self.sink.drain(idle_polls=1)

    def assert_in_sync(self) -> None:
        report = verify(self.source, self.target, MAPPING, chunk=4)
        assert report.ok, [
            (t.source, t.missing, t.extra, t.differing, t.unmappable) for t in report.tables
        ]

    def close(self) -> None:
        self.capture.close()
        self.sink.close()
        self.source.dispose()
        self.target.dispose()


@pytest.fixture
def rig(tmp_path: Path):
    r = Rig(tmp_path)
    yield r
    r.close()


def test_a_table_without_primary_key_and_no_declared_key_is_refused_with_the_remedy(
    rig: Rig,
) -> None:
    with pytest.raises(
        CaptureError, match=r"'follows': it has no primary key and the mapping declares no key"
    ):
        enable_capture(rig.source, ["follows"])


def test_enabling_several_tables_is_all_or_nothing_with_a_reason_per_table(rig: Rig) -> None:
    with pytest.raises(CaptureError) as caught:
        enable_capture(
            rig.source,
            ["pairs", "loose", "nowhere", "follows"],
            {"follows": ["follower_id", "nope"]},
        )
    message = str(caught.value)
    assert "no table enabled, 3 cannot be captured" in message
    assert "'loose': it has no primary key" in message
    assert "'nowhere': it does not exist" in message
    assert "'follows' by its declared key ['follower_id', 'nope']: no column(s) nope" in message
    with rig.source.connect() as conn:
        assert captured_tables(conn) == {}  # pairs, which could be captured, was not either


def test_a_declared_key_that_is_not_unique_is_refused(rig: Rig) -> None:
    rig.run(("INSERT INTO follows VALUES (1, 2, 'a'), (1, 2, 'b')", {}))
    with pytest.raises(CaptureError, match=r"not unique \(several rows have \(1, 2\)\)"):
        rig.enable()


def test_link_table_is_captured_by_its_declared_key_with_snapshot_and_key_changes(rig: Rig) -> None:
    rig.run(
        *(
            ("INSERT INTO follows VALUES (:a, :b, 'then')", {"a": i, "b": i + 1})
            for i in range(1, 8)
        )
    )
    rig.enable()
    with rig.source.connect() as conn:
        assert captured_tables(conn)["follows"].pk == ("follower_id", "followee_id")
    request_snapshot(rig.source, ["follows"])
    rig.run(
        ("UPDATE follows SET since = 'now' WHERE follower_id = 2", {}),
        ("UPDATE follows SET followee_id = 99 WHERE follower_id = 3", {}),  # key change
        ("DELETE FROM follows WHERE follower_id = 4", {}),
    )
    rig.drain()
    rig.assert_in_sync()
    with rig.target.connect() as conn:
        keys = conn.execute(text("SELECT follower_id, followee_id FROM follows ORDER BY 1")).all()
    assert (3, 99) in keys and (3, 4) not in keys and all(k[0] != 4 for k in keys)


def test_a_composite_key_dead_letter_names_both_columns_and_retries_after_the_fix(rig: Rig) -> None:
    rig.enable()
    rig.run(
        ("INSERT INTO follows VALUES (5, 6, NULL)", {}),
        ("INSERT INTO follows VALUES (5, 7, 'x')", {}),
    )
    rig.drain()
    (letter,) = list_dead_letters(rig.target, "g")
    assert b'"follower_id":5' in letter.key and b'"followee_id":6' in letter.key
    assert "NOT NULL" in letter.reason
    rig.run(("UPDATE follows SET since = 'fixed' WHERE followee_id = 6", {}))
    rig.drain()
    assert retry_dead_letters(rig.sink) == (0, 1)  # the old event still has NULL
    rig.assert_in_sync()  # the later event brought the row


def test_check_keys_names_model_database_and_mapping_disagreements(rig: Rig) -> None:
    assert check_keys(rig.source, MAPPING) == []
    problems = check_keys(rig.source, MAPPING, {"follows": ["follower_id", "followee_id"]})
    assert problems == [
        "table 'follows': the model declares primary key (follower_id, followee_id) but the "
        "database has none; capture uses the mapping's key instead"
    ]
    rig.run(("INSERT INTO follows VALUES (1, 1, 'a'), (1, 1, 'b')", {}))
    other = parse_mapping(
        {
            "service": "s",
            "tables": [
                {
                    "source": "follows",
                    "target": "f",
                    "key": ["a", "b"],
                    "columns": {"a": "follower_id", "b": "followee_id"},
                },
                {"source": "pairs", "target": "p", "key": ["x"], "columns": {"x": "x", "y": "y"}},
                {"source": "gone", "target": "g", "key": ["id"], "columns": {"id": "id"}},
            ],
        }
    )
    problems = check_keys(rig.source, other)
    assert any("'follows': no primary key" in p and "not unique" in p for p in problems)
    assert any("'pairs': the database's primary key is (x, y)" in p for p in problems)
    assert any("'gone': it does not exist" in p for p in problems)


ops = st.lists(
    st.tuples(
        st.sampled_from(["insert", "update", "rekey", "delete"]),
        st.sampled_from(["follows", "pairs"]),
        st.integers(1, 4),
        st.integers(1, 4),
        st.integers(0, 9),
    ),
    max_size=25,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(initial=st.integers(0, 6), operations=ops)
def test_random_changes_to_composite_and_keyless_tables_keep_the_target_equal(
    initial: int, operations: list
) -> None:
    with tempfile.TemporaryDirectory() as d:
        rig = Rig(Path(d))
        try:
            for i in range(initial):
                rig.run(
                    ("INSERT INTO follows VALUES (:a, :b, 'init')", {"a": i, "b": i}),
                    ("INSERT INTO pairs VALUES (:a, :y, 0)", {"a": i, "y": f"y{i}"}),
                )
            rig.enable()
            request_snapshot(rig.source, ["follows", "pairs"])
            for op, table, a, b, v in operations:
                params = {"a": a, "b": b, "y": f"y{b}", "v": v, "s": f"s{v}"}
                if table == "follows":
                    sql = {
                        "insert": "INSERT INTO follows SELECT :a, :b, :s WHERE NOT EXISTS "
                        "(SELECT 1 FROM follows WHERE follower_id = :a AND followee_id = :b)",
                        "update": "UPDATE follows SET since = :s WHERE follower_id = :a",
                        "rekey": "UPDATE follows SET followee_id = followee_id + 10 * :v "
                        "WHERE follower_id = :a AND followee_id = :b AND NOT EXISTS (SELECT 1 "
                        "FROM follows WHERE follower_id = :a AND followee_id = :b + 10 * :v)",
                        "delete": "DELETE FROM follows WHERE follower_id = :a AND followee_id = :b",
                    }[op]
                else:
                    sql = {
                        "insert": "INSERT OR REPLACE INTO pairs VALUES (:a, :y, :v)",
                        "update": "UPDATE pairs SET v = :v WHERE x = :a",
                        "rekey": "UPDATE OR IGNORE pairs SET x = x + 100 WHERE x = :a AND y = :y",
                        "delete": "DELETE FROM pairs WHERE x = :a",
                    }[op]
                rig.run((sql, params))
                if v == 0:
                    rig.drain()  # some changes land between polls, some in one batch
            rig.drain()
            rig.assert_in_sync()
            assert list_dead_letters(rig.target, "g") == []
        finally:
            rig.close()


def test_a_target_table_without_primary_key_gets_its_rows_by_the_declared_key(
    tmp_path: Path,
) -> None:
    """The way back (reverse CDC into a monolith's keyless association table): no ON CONFLICT
    target exists there, so upserts replace the row by the declared key instead of failing."""
    mapping = parse_mapping(
        {
            "service": "notes",
            "tables": [
                {"source": "links", "target": "links", "key": ["a", "b"],
                 "columns": {"a": "a", "b": "b", "w": "w"}},
            ],
        }
    )  # fmt: skip
    source = make_engine(f"sqlite:///{tmp_path / 'svc.db'}")
    target = make_engine(f"sqlite:///{tmp_path / 'mono.db'}")
    with source.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE links (a INTEGER, b INTEGER, w TEXT, PRIMARY KEY (a, b))"
        )
    with target.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE links (a INTEGER NOT NULL, b INTEGER NOT NULL, w TEXT)")
        conn.exec_driver_sql("INSERT INTO links VALUES (1, 1, 'old')")
    log = EmbeddedLog(EmbeddedLogConfig(tmp_path / "log", partitions=2))
    capture = CaptureWorker(source, log, CaptureConfig(topic_prefix="svc"))
    sink = Sink(target, mapping, log, SinkConfig("rev", (topic_name("svc", "main", "links"),)))
    try:
        enable_capture(source, ["links"], declared_keys(mapping))
        with source.begin() as conn:
            conn.exec_driver_sql("INSERT INTO links VALUES (1, 1, 'new'), (1, 2, 'x'), (2, 1, 'y')")
            conn.exec_driver_sql("UPDATE links SET w = 'z' WHERE a = 1 AND b = 2")
            conn.exec_driver_sql("DELETE FROM links WHERE a = 2")
        while capture.run_once():
            pass
        sink.drain(idle_polls=1)
        assert list_dead_letters(target, "rev") == []
        with target.connect() as conn:
            rows = conn.exec_driver_sql("SELECT a, b, w FROM links ORDER BY a, b").all()
        assert [tuple(r) for r in rows] == [(1, 1, "new"), (1, 2, "z")]
        assert verify(source, target, mapping).ok
    finally:
        capture.close()
        sink.close()
        source.dispose()
        target.dispose()
