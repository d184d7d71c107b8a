"""The sink: dead letters, Debezium-shaped input, schema drift, value coercion."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import text

from cdc.capture.sqlite import enable_capture
from cdc.events import build_event, source_block
from cdc.mapping import load_mapping
from cdc.ports import OutgoingMessage
from cdc.sink import (
    Sink,
    SinkConfig,
    SinkError,
    count_dead_letters,
    drop_dead_letters,
    list_dead_letters,
    retry_dead_letters,
)
from tests.unit.cdc import debezium_samples as dbz
from tests.unit.cdc.synthetic import Pipeline, insert_product


@pytest.fixture
def pipe(tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(tmp_path / "p")
    yield p
    p.close()


def _event(table: str, op: str, row: dict, before: dict | None = None) -> OutgoingMessage:
    src = source_block(name="mono", db="src", schema="main", table=table, seq=1, ts_ms=1)
    key, value = build_event(
        op,
        before if op != "c" else None,
        row if op != "d" else None,
        key_columns=["id"],
        source=src,
    )
    return OutgoingMessage(f"mono.main.{table}", key, value)


def _product(pid: int, **kw: object) -> dict:
    row = {
        "id": pid,
        "sku": f"S{pid}",
        "name": f"P {pid}",
        "price_cents": 100,
        "currency": "EUR",
        "active": 1,
        "created_at": "2024-01-02 03:04:05",
        "updated_at": None,
    }
    row.update(kw)
    return row


def _customer(cid: int, email: str, **kw: object) -> dict:
    row = {"id": cid, "email": email, "full_name": "Ann Lee", "created_at": None}
    row.update(kw)
    return row


def _publish(pipe: Pipeline, msgs: list[OutgoingMessage]) -> None:
    prod = pipe.log.producer()
    prod.send_batch(msgs)
    prod.close()


def test_poison_events_are_dead_lettered_and_later_good_events_still_apply(pipe: Pipeline) -> None:
    _publish(
        pipe,
        [
            _event("products", "c", _product(1)),
            OutgoingMessage("mono.main.products", b'{"id":2}', b"{not json"),
            _event("products", "c", _product(3, price_cents="lots")),  # mapping failure
            _event("customers", "c", _customer(1, "a@x.com")),
            _event("customers", "c", _customer(2, "A@X.COM")),  # unique violation after lower()
            _event("customers", "c", _customer(3, "c@x.com", nickname="cc")),  # strict drift
            _event("products", "c", _product(4)),
            _event("customers", "c", _customer(5, "e@x.com")),
        ],
    )
    src = source_block(name="mono", db="src", schema="main", table="orders", seq=1, ts_ms=1)
    key, value = build_event("c", None, {"id": 1}, key_columns=["id"], source=src)
    _publish(pipe, [OutgoingMessage("mono.main.products", key, value)])  # unknown table
    pipe.sink.drain(idle_polls=1)
    assert [r[0] for r in pipe.target_rows()] == [1, 4]
    assert [r[0] for r in pipe.target_rows("customer_account")] == [1, 5]
    reasons = sorted(d.reason for d in list_dead_letters(pipe.target, "g"))
    assert len(reasons) == 5
    joined = "\n".join(reasons)
    assert "undecodable event: value is not JSON" in joined
    assert "column 'price_amount'" in joined and "'lots'" in joined
    assert "database rejected the event" in joined and "UNIQUE" in joined
    assert "strict" in joined and "nickname" in joined
    assert "unknown table 'orders'" in joined
    letter = next(d for d in list_dead_letters(pipe.target, "g") if "not JSON" in d.reason)
    assert letter.value == b"{not json" and letter.key == b'{"id":2}'
    assert sum(pipe.sink.stored_offsets().values()) == 9  # the pipeline moved past all of them


def test_dead_letters_can_be_retried_after_a_fix_and_dropped(pipe: Pipeline) -> None:
    _publish(
        pipe,
        [
            _event("customers", "c", _customer(1, "a@x.com")),
            _event("customers", "c", _customer(2, "A@x.com")),
            OutgoingMessage("mono.main.customers", None, b"garbage"),
        ],
    )
    pipe.sink.drain(idle_polls=1)
    assert count_dead_letters(pipe.target, "g") == 2
    with pipe.target.begin() as conn:  # the fix: the conflicting row goes away
        conn.execute(text("DELETE FROM customer_account WHERE id = 1"))
    ok, failed = retry_dead_letters(pipe.sink)
    assert (ok, failed) == (1, 1)
    assert [r[0] for r in pipe.target_rows("customer_account")] == [2]
    remaining = list_dead_letters(pipe.target, "g")
    assert remaining[0].attempts == 1
    assert drop_dead_letters(pipe.target, [remaining[0].id], "g") == 1
    assert count_dead_letters(pipe.target, "g") == 0


def test_debezium_events_wrapped_and_plain_apply(tmp_path: Path) -> None:
    pipe = Pipeline(tmp_path / "p")
    try:
        topic = "dbserver1.public.products"
        _publish(
            pipe,
            [
                OutgoingMessage(
                    topic,
                    dbz.wrapped_key(1),
                    dbz.wrapped(dbz.product_payload("c", None, dbz.product_row(1), 10)),
                ),
                OutgoingMessage(
                    topic,
                    b'{"id":2}',
                    dbz.plain(dbz.product_payload("c", None, dbz.product_row(2, 250), 11)),
                ),
                OutgoingMessage(
                    topic,
                    b'{"id":2}',
                    dbz.plain(
                        dbz.product_payload(
                            "u",
                            dbz.product_row(2, 250),
                            dbz.product_row(2, 300, name="Oak Chair"),
                            12,
                        )
                    ),
                ),
                OutgoingMessage(
                    topic,
                    dbz.wrapped_key(3),
                    dbz.wrapped(dbz.product_payload("c", None, dbz.product_row(3), 13)),
                ),
                OutgoingMessage(
                    topic,
                    dbz.wrapped_key(3),
                    dbz.wrapped(
                        dbz.product_payload(
                            "d",
                            {
                                "id": 3,
                                "sku": None,
                                "name": None,
                                "price_cents": None,
                                "currency": None,
                                "active": None,
                                "created_at": None,
                                "updated_at": None,
                            },
                            None,
                            14,
                        )
                    ),
                ),
                OutgoingMessage(topic, dbz.wrapped_key(3), None),  # tombstone
            ],
        )
        sink = Sink(pipe.target, pipe.mapping, pipe.log, SinkConfig("dbz", (topic,)))
        sink.drain(idle_polls=1)
        sink.close()
        assert count_dead_letters(pipe.target) == 0
        with pipe.target.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT id, title, slug, price_amount, is_listed, created_at "
                    "FROM catalog_product ORDER BY id"
                )
            ).all()
        assert [(r[0], r[1], r[2]) for r in rows] == [
            (1, "Oak Bench", "oak-bench-1"),
            (2, "Oak Chair", "oak-chair-2"),
        ]
        assert Decimal(str(rows[0][3])) == Decimal("19.99") and Decimal(str(rows[1][3])) == Decimal(
            "3"
        )
        assert rows[0][5].startswith("2024-01-02 03:04:05")
    finally:
        pipe.close()


def test_new_nullable_source_column_is_ignored_unless_the_table_is_strict(pipe: Pipeline) -> None:
    enable_capture(pipe.source, ["products", "customers"])
    insert_product(pipe.source, 1)
    with pipe.source.begin() as conn:
        conn.execute(text("ALTER TABLE products ADD COLUMN color TEXT"))
        conn.execute(text("ALTER TABLE customers ADD COLUMN nickname TEXT"))
    enable_capture(pipe.source, ["products", "customers"])  # what the Alembic revision calls
    with pipe.source.begin() as conn:
        conn.execute(text("UPDATE products SET color = 'red', price_cents = 5 WHERE id = 1"))
        conn.execute(text("INSERT INTO customers (id, email, nickname) VALUES (1, 'a@x.com', 'A')"))
    pipe.drain()
    assert float(pipe.target_rows()[0][4]) == 0.05
    assert pipe.target_rows("customer_account") == []
    (letter,) = list_dead_letters(pipe.target, "g")
    assert "strict" in letter.reason and "nickname" in letter.reason


def test_value_coercion_follows_target_column_types(pipe: Pipeline) -> None:
    _publish(
        pipe,
        [
            _event(
                "products",
                "c",
                _product(1, active="true", price_cents="250", created_at="2024-05-06T07:08:09Z"),
            )
        ],
    )
    pipe.sink.drain(idle_polls=1)
    with pipe.target.connect() as conn:
        row = conn.execute(
            text("SELECT is_listed, price_amount, created_at FROM catalog_product")
        ).one()
    assert row[0] == 1 and float(row[1]) == 2.5 and row[2].startswith("2024-05-06 07:08:09")


def test_sink_refuses_to_start_when_the_target_lacks_a_mapped_column(tmp_path: Path) -> None:
    pipe = Pipeline(tmp_path / "p")
    try:
        bad = tmp_path / "bad.toml"
        bad.write_text(
            (tmp_path / "p" / "mapping.toml")
            .read_text()
            .replace('title = "name"', 'headline = "name"')
        )
        with pytest.raises(SinkError, match="catalog_product.*headline"):
            Sink(pipe.target, load_mapping(bad), pipe.log, SinkConfig("g", pipe.topics))
    finally:
        pipe.close()


def test_sink_config_validates_fields() -> None:
    with pytest.raises(ValueError, match="group"):
        SinkConfig("", ("t",))
    with pytest.raises(ValueError, match="topics"):
        SinkConfig("g", ())


def test_dead_letter_listing_keeps_original_bytes_and_position(pipe: Pipeline) -> None:
    _publish(pipe, [OutgoingMessage("mono.main.products", b"k", json.dumps({"op": "zz"}).encode())])
    pipe.sink.drain(idle_polls=1)
    (letter,) = list_dead_letters(pipe.target)
    assert letter.topic == "mono.main.products" and letter.offset == 0
    assert "unsupported op 'zz'" in letter.reason
    assert letter.created_ms <= int(dt.datetime.now().timestamp() * 1000) + 1000
