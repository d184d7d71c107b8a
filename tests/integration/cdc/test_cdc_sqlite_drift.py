"""Capture drift on SQLite: the schema changed under the triggers and nobody re-ran capture.

The capture worker notices a schema change (`PRAGMA schema_version`), compares every captured
table with its triggers, re-installs the drifted ones with the same key and keep_applied
choice, and snapshots those tables so the rows written in between reach the target whole.
Real SQLite files, the embedded log, a real sink.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from cdc.capture.sqlite import (
    CaptureConfig,
    CaptureWorker,
    capture_drift,
    captured_tables,
    enable_capture,
    request_snapshot,
    snapshot_states,
)
from cdc.events import topic_name
from cdc.mapping import load_mapping
from cdc.sink import Sink, SinkConfig
from cdc.status import pipeline_status
from cdc.transport.embedded import EmbeddedLog, EmbeddedLogConfig
from kitcore.db import make_engine
from tests.unit.cdc.synthetic import Pipeline, insert_product

pytestmark = pytest.mark.integration

NOTES_MAPPING = """
service = "notes"

[[tables]]
source = "notes"
target = "notes_copy"
key = ["id"]

[tables.columns]
id = "id"
body = "body"
pinned = "pinned"
"""


def _drain(worker: CaptureWorker) -> None:
    while worker.run_once():
        pass


def _sql(engine: Engine, *statements: str) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))


def _rows(engine: Engine, sql: str) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql))]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "cdc.capture.sqlite" and r.levelno == logging.WARNING
    ]


@pytest.fixture
def pipe(tmp_path: Path):
    p = Pipeline(tmp_path / "p", partitions=1)
    yield p
    p.close()


def _assert_in_sync(p: Pipeline) -> None:
    report = p.verify()
    assert report.ok, [(t.source, t.missing, t.extra, t.differing) for t in report.tables]


def test_a_column_added_without_reinstalling_capture_reaches_the_target_after_the_worker_notices(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = make_engine(f"sqlite:///{tmp_path / 'src.db'}")
    tgt = make_engine(f"sqlite:///{tmp_path / 'tgt.db'}")
    _sql(src, "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    _sql(tgt, "CREATE TABLE notes_copy (id INTEGER PRIMARY KEY, body TEXT, pinned INTEGER)")
    (tmp_path / "m.toml").write_text(NOTES_MAPPING.replace('pinned = "pinned"\n', ""))
    enable_capture(src, ["notes"])
    log = EmbeddedLog(EmbeddedLogConfig(tmp_path / "log", partitions=1))
    worker = CaptureWorker(src, log, CaptureConfig(topic_prefix="mono"))
    topics = (topic_name("mono", "main", "notes"),)
    sink = Sink(tgt, load_mapping(tmp_path / "m.toml"), log, SinkConfig("g", topics))
    try:
        _sql(src, "INSERT INTO notes VALUES (1, 'first')")
        _drain(worker)
        sink.drain(idle_polls=1)

        # the user's Alembic revision: a column, and no install_capture after it
        _sql(src, "ALTER TABLE notes ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0")
        _sql(src, "INSERT INTO notes VALUES (2, 'second', 1)", "UPDATE notes SET pinned = 1")
        assert [str(d) for d in capture_drift(src.connect())] == [
            "notes: column added: notes.pinned"
        ]
        (tmp_path / "m.toml").write_text(NOTES_MAPPING)  # the service maps the new column
        sink.close()
        sink = Sink(tgt, load_mapping(tmp_path / "m.toml"), log, SinkConfig("g", topics))
        with caplog.at_level(logging.WARNING, logger="cdc.capture.sqlite"):
            _drain(worker)
        sink.drain(idle_polls=1)
        assert _rows(tgt, "SELECT * FROM notes_copy ORDER BY id") == [
            (1, "first", 1),
            (2, "second", 1),
        ]
        (warning,) = _warnings(caplog)
        assert "'notes'" in warning and "column added: notes.pinned" in warning
        assert "snapshot" in warning and "kit cdc verify" in warning
        assert captured_tables(worker.conn)["notes"].columns == ("id", "body", "pinned")

        # from now on the triggers themselves carry the column
        _sql(src, "INSERT INTO notes VALUES (3, 'third', 1)")
        _drain(worker)
        sink.drain(idle_polls=1)
        assert _rows(tgt, "SELECT pinned FROM notes_copy WHERE id = 3") == [(1,)]
        assert capture_drift(worker.conn) == []
    finally:
        sink.close()
        worker.close()
        src.dispose()
        tgt.dispose()


def test_a_table_recreated_by_alembic_batch_mode_is_captured_again(
    pipe: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(1, 6):
        insert_product(pipe.source, i)
    enable_capture(pipe.source, ["products", "customers"])
    request_snapshot(pipe.source, ["products"])
    pipe.drain()
    _assert_in_sync(pipe)
    seq = pipe.capture.position()

    # what op.batch_alter_table("products") renders on SQLite: copy, drop, rename
    with pipe.source.begin() as conn:
        ddl = conn.execute(
            text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'products'")
        ).scalar_one()
        conn.execute(text(ddl.replace("products", "_alembic_tmp_products", 1)))
        conn.execute(text("INSERT INTO _alembic_tmp_products SELECT * FROM products"))
        conn.execute(text("DROP TABLE products"))
        conn.execute(text("ALTER TABLE _alembic_tmp_products RENAME TO products"))
    # the gap: no triggers, so nothing lands in the change table
    insert_product(pipe.source, 6)
    _sql(pipe.source, "UPDATE products SET price_cents = 77 WHERE id = 2")
    seq = pipe.capture.position()
    assert _rows(pipe.source, f"SELECT count(*) FROM _cdc_changes WHERE seq > {seq}") == [(0,)]
    with caplog.at_level(logging.WARNING, logger="cdc.capture.sqlite"):
        pipe.drain()
    (warning,) = _warnings(caplog)
    assert "'products'" in warning and "triggers missing (table recreated?)" in warning
    assert "Deletes made while its triggers were missing cannot be recovered" in warning
    assert "kit cdc verify" in warning
    _assert_in_sync(pipe)
    assert [r[0] for r in pipe.target_rows()] == [1, 2, 3, 4, 5, 6]

    # the triggers are back: later changes stream again
    _sql(pipe.source, "UPDATE products SET price_cents = 99 WHERE id = 3")
    assert _rows(pipe.source, f"SELECT count(*) FROM _cdc_changes WHERE seq > {seq}")[0][0]
    pipe.drain()
    _assert_in_sync(pipe)
    assert capture_drift(pipe.capture.conn) == []


def _old_kit_triggers(table: str, columns: list[str], when: str) -> list[str]:
    """Triggers as a kit from before origin tagging made them: no `origin` column."""
    new = "json_object(" + ", ".join(f"'{c}', NEW.{c}" for c in columns) + ")"
    old = "json_object(" + ", ".join(f"'{c}', OLD.{c}" for c in columns) + ")"
    now = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
    head = f"INSERT INTO _cdc_changes (tbl, op, pk, before, after, ts_ms) VALUES ('{table}'"
    return [
        f"CREATE TRIGGER _cdc_{table}_ins AFTER INSERT ON {table} {when}BEGIN "
        f"{head}, 'c', json_object('id', NEW.id), NULL, {new}, {now}); END",
        f"CREATE TRIGGER _cdc_{table}_upd AFTER UPDATE ON {table} {when}BEGIN "
        f"{head}, 'u', json_object('id', NEW.id), {old}, {new}, {now}); END",
        f"CREATE TRIGGER _cdc_{table}_del AFTER DELETE ON {table} {when}BEGIN "
        f"{head}, 'd', json_object('id', OLD.id), {old}, NULL, {now}); END",
    ]


def test_triggers_from_an_older_kit_are_reinstalled_with_origin_tagging(
    pipe: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    products = ["id", "sku", "name", "price_cents", "currency", "active"]
    products += ["created_at", "updated_at"]
    customers = ["id", "email", "full_name", "created_at"]
    # an older kit's bookkeeping: no keep_applied column; customers kept the sinks' writes
    # (no WHEN clause), products skipped them
    _sql(
        pipe.source,
        "DROP TABLE _cdc_capture_tables",
        "CREATE TABLE _cdc_capture_tables (tbl TEXT PRIMARY KEY, pk TEXT NOT NULL, "
        "columns TEXT NOT NULL, enabled_ms INTEGER)",
        f"""INSERT INTO _cdc_capture_tables VALUES ('products', '["id"]', '{json.dumps(products)}', 0),
            ('customers', '["id"]', '{json.dumps(customers)}', 0)""",
        *_old_kit_triggers(
            "products", products, "WHEN NOT EXISTS (SELECT 1 FROM _cdc_apply_marker) "
        ),
        *_old_kit_triggers("customers", customers, ""),
    )
    with caplog.at_level(logging.WARNING, logger="cdc.capture.sqlite"):
        pipe.new_capture()
        pipe.drain()
    warnings = _warnings(caplog)
    assert len(warnings) == 2
    assert all("triggers from an older kit (no origin column)" in w for w in warnings)
    assert {"'customers'", "'products'"} == {
        t for w in warnings for t in ("'customers'", "'products'") if t in w
    }
    kept = captured_tables(pipe.capture.conn)
    assert (kept["customers"].keep_applied, kept["products"].keep_applied) == (True, False)
    triggers = dict(
        _rows(pipe.source, "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
    )
    assert all("ts_ms, origin)" in sql for sql in triggers.values())
    assert "WHEN NOT EXISTS" not in triggers["_cdc_customers_ins"]
    assert "WHEN NOT EXISTS" in triggers["_cdc_products_ins"]

    # keep_applied holds: a sink's write is recorded, tagged, on customers only
    insert_product(pipe.source, 1)
    pipe.drain()
    _sql(
        pipe.source,
        "INSERT INTO _cdc_apply_marker (origin) VALUES ('reverse-svc')",
        "INSERT INTO customers VALUES (1, 'a@x.com', 'Ann Lee', '2024-01-01 00:00:00')",
        "UPDATE products SET price_cents = 5 WHERE id = 1",
        "DELETE FROM _cdc_apply_marker",
    )
    got = _rows(pipe.source, "SELECT tbl, origin FROM _cdc_changes WHERE origin IS NOT NULL")
    assert got == [("customers", "reverse-svc")]
    pipe.drain()
    assert pipe.target_rows("customer_account") == []  # a default sink skips the tagged event
    assert capture_drift(pipe.capture.conn) == []


def test_a_table_dropped_for_good_does_not_stop_capture_of_the_others(
    pipe: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    insert_product(pipe.source, 1)
    _sql(pipe.source, "INSERT INTO customers VALUES (1, 'a@x.com', 'Ann Lee', NULL)")
    enable_capture(pipe.source, ["products", "customers"])
    request_snapshot(pipe.source, ["customers", "products"])
    _sql(pipe.source, "DROP TABLE customers")  # before its snapshot ran
    insert_product(pipe.source, 2)
    with caplog.at_level(logging.WARNING, logger="cdc.capture.sqlite"):
        pipe.drain()
        _sql(pipe.source, "CREATE TABLE unrelated (x)")  # another schema change: no new word
        insert_product(pipe.source, 3)
        pipe.drain()
    assert [r[0] for r in pipe.target_rows()] == [1, 2, 3]
    dropped = [w for w in _warnings(caplog) if "cannot be repaired" in w]
    assert len(dropped) == 1 and "'customers'" in dropped[0] and "table dropped" in dropped[0]
    states = {s.table: s.status for s in snapshot_states(pipe.source)}
    assert states == {"customers": "failed", "products": "done"}
    (drift,) = capture_drift(pipe.capture.conn)
    assert (drift.table, drift.repairable) == ("customers", False)


def test_a_repair_keeps_the_position_and_an_unfinished_snapshot_of_another_table(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pipe = Pipeline(tmp_path / "p", partitions=1, chunk=2)
    try:
        for i in range(1, 8):
            _sql(pipe.source, f"INSERT INTO customers VALUES ({i}, 'c{i}@x.com', 'C {i}', NULL)")
        enable_capture(pipe.source, ["products", "customers"])
        insert_product(pipe.source, 1)
        pipe.capture.run_once()  # the product's insert is published
        position = pipe.capture.position()
        request_snapshot(pipe.source, ["customers"])
        assert pipe.capture.run_once() == 2  # the customers snapshot is under way
        _sql(pipe.source, "ALTER TABLE products ADD COLUMN weight_g INTEGER")
        _sql(pipe.source, "UPDATE products SET weight_g = 900, price_cents = 5 WHERE id = 1")
        with caplog.at_level(logging.WARNING, logger="cdc.capture.sqlite"):
            pipe.drain()
        assert pipe.capture.position() >= position
        states = {s.table: (s.status, s.rows_done) for s in snapshot_states(pipe.source)}
        assert states == {"customers": ("done", 7), "products": ("done", 1)}
        assert len(_warnings(caplog)) == 1
        _assert_in_sync(pipe)
        msgs = pipe.log.consumer("peek", list(pipe.topics)).poll(max_records=100, timeout_s=1.0)
        events = [json.loads(m.value) for m in msgs if m.value]
        products = [e for e in events if e["source"]["table"] == "products"]
        assert [e["op"] for e in products] == ["c", "u", "r"]  # each once: the position held
        assert products[-1]["after"]["weight_g"] == 900
        customers = [e["after"]["id"] for e in events if e["source"]["table"] == "customers"]
        assert customers == [1, 2, 3, 4, 5, 6, 7]  # the snapshot went on where it was
    finally:
        pipe.close()


def test_status_shows_capture_drift_until_the_worker_repairs_it(pipe: Pipeline) -> None:
    enable_capture(pipe.source, ["products", "customers"])
    _sql(pipe.source, "ALTER TABLE products ADD COLUMN weight_g INTEGER")

    def drift() -> dict[str, str | None]:
        rows = pipeline_status(
            tables=["products", "customers"],
            topics={t: topic_name("mono", "main", t) for t in ("products", "customers")},
            transport=pipe.log,
            source=pipe.source,
        )
        return {r.table: r.capture_drift for r in rows}

    assert drift() == {"products": "column added: products.weight_g", "customers": None}
    pipe.drain()
    assert drift() == {"products": None, "customers": None}
