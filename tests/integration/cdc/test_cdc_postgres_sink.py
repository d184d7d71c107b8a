"""The sink on a real PostgreSQL target: upserts, deletes, dead letters, verify, replay."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import delete, text

from cdc.capture.sqlite import CaptureConfig, CaptureWorker, enable_capture, request_snapshot
from cdc.events import topic_name
from cdc.ports import OutgoingMessage
from cdc.sink import Sink, SinkConfig, list_dead_letters, sink_offsets
from cdc.transport.embedded import EmbeddedLog, EmbeddedLogConfig
from cdc.verify import verify
from tests.unit.cdc.synthetic import insert_product, make_source, make_target, write_mapping

pytestmark = pytest.mark.integration


def test_sqlite_source_to_postgres_target_through_the_embedded_log(
    tmp_path: Path, pg_url: str
) -> None:
    source = make_source(tmp_path / "src.db")
    target = make_target(pg_url)
    mapping = write_mapping(tmp_path / "m.toml")
    try:
        for i in range(1, 41):
            insert_product(source, i)
        enable_capture(source, ["products", "customers"])
        request_snapshot(source, ["products"])
        with source.begin() as conn:
            conn.execute(text("UPDATE products SET price_cents = 12345 WHERE id = 2"))
            conn.execute(text("DELETE FROM products WHERE id = 3"))
            conn.execute(text("INSERT INTO customers VALUES (1, 'A@x.com', 'Ann Lee', NULL)"))
            conn.execute(text("INSERT INTO customers VALUES (2, 'a@X.com', 'Dup Licate', NULL)"))
        log = EmbeddedLog(EmbeddedLogConfig(tmp_path / "log", partitions=3))
        worker = CaptureWorker(source, log, CaptureConfig(topic_prefix="mono", snapshot_chunk=9))
        while worker.run_once():
            pass
        worker.close()
        topics = tuple(topic_name("mono", "main", t) for t in mapping.source_tables)
        prod = log.producer()
        prod.send_batch([OutgoingMessage(topics[0], b'{"id":999}', b"\x00bad")])
        prod.close()
        sink = Sink(target, mapping, log, SinkConfig("pg", topics, batch_size=16))
        sink.drain(idle_polls=1)
        sink.close()
        with target.connect() as conn:
            price = conn.execute(
                text("SELECT price_amount FROM catalog_product WHERE id = 2")
            ).scalar()
            listed = conn.execute(
                text("SELECT is_listed FROM catalog_product WHERE id = 1")
            ).scalar()
            ids = [r[0] for r in conn.execute(text("SELECT id FROM customer_account ORDER BY id"))]
        assert price == Decimal("123.45") and listed is True
        assert ids == [1]  # the duplicate email violated UNIQUE and went to the dead letters
        reasons = sorted(d.reason for d in list_dead_letters(target, "pg"))
        assert len(reasons) == 2
        assert any("UniqueViolation" in r or "unique" in r.lower() for r in reasons)
        report = verify(source, target, mapping, tables=["products"], chunk=8)
        assert report.ok and report.tables[0].source_rows == 39
        # replaying everything changes nothing
        with target.begin() as conn:
            conn.execute(delete(sink_offsets))
        again = Sink(target, mapping, log, SinkConfig("pg", topics))
        again.drain(idle_polls=1)
        again.close()
        assert verify(source, target, mapping, tables=["products"]).ok
    finally:
        source.dispose()
        target.dispose()
