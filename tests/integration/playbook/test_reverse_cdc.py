"""After the `writes` step, the service owns the tables and reverse CDC feeds the monolith:
a product created or repriced through the catalog service appears in the monolith's tables,
the monolith prices orders with it, and no event loops back."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from kit.playbook import Playbook
from kit.playbook import pipelines as pl
from tests.playbook_shop import Shop, make_shop

pytestmark = pytest.mark.integration


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    s = make_shop(tmp_path)
    try:
        yield s
    finally:
        s.close()


def _rows(url: str, sql: str, **params: object) -> list[tuple]:
    engine = pl.make_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def _until(predicate, timeout_s: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def _published(pb: Playbook, pipe: pl.Pipeline) -> int:
    ends = pb.transport().end_offsets(list(pipe.topics.values()))
    return sum(ends.values())


def test_writes_through_the_service_reach_the_monolith_which_prices_orders_with_them(
    shop: Shop,
) -> None:
    m = shop.manifest
    pb = Playbook(m, actor="test")
    stop = threading.Event()
    workers: list[threading.Thread] = []
    try:
        for _ in range(8):  # schema .. writes (canary has two stages)
            result = pb.advance("catalog")
            assert result.ok, result
            if result.step == "writes":
                break
        assert pb.state.get("catalog").write_owner == "service"
        rev = pb.reverse("catalog")
        # the long-lived reverse workers, as `kit up` would run them
        wanted = {w.name for w in pl.desired_workers(m)}
        assert {rev.capture_worker, rev.sink_worker} <= wanted
        for name in (rev.capture_worker, rev.sink_worker):
            t = threading.Thread(target=pl.run_worker, args=(m, name, stop), daemon=True)
            t.start()
            workers.append(t)

        catalog = m.services["catalog"].url
        created = httpx.post(
            f"{catalog}/products",
            json={
                "sku": "NEW-1",
                "name": "Reverse Bench",
                "category_id": 1,
                "price": {"cents": 1234, "currency": "EUR"},
                "active": True,
            },
        )
        assert created.status_code == 201, created.text
        pid = created.json()["id"]
        repriced = httpx.patch(
            f"{catalog}/products/1", json={"price": {"cents": 777, "currency": "EUR"}}
        )
        assert repriced.status_code == 200, repriced.text

        mono_db = m.monolith.database_url
        _until(
            lambda: (
                _rows(mono_db, "SELECT price_cents FROM products WHERE id = :i", i=pid) == [(1234,)]
            )
        )
        _until(lambda: _rows(mono_db, "SELECT price_cents FROM products WHERE id = 1") == [(777,)])
        row = _rows(
            mono_db, "SELECT sku, name, active, currency FROM products WHERE id = :i", i=pid
        )
        assert row == [("NEW-1", "Reverse Bench", 1, "EUR")]

        # the monolith (orders, inventory) works with the service-created product
        mono = m.monolith.url
        assert httpx.put(f"{mono}/inventory/{pid}", json={"on_hand": 10}).status_code == 200
        customer = _rows(mono_db, "SELECT id FROM customers ORDER BY id LIMIT 1")[0][0]
        order = httpx.post(
            f"{mono}/orders",
            json={"customer_id": customer, "lines": [{"product_id": pid, "quantity": 3}]},
        )
        assert order.status_code == 201, order.text
        assert order.json()["total"] == {"cents": 3702, "currency": "EUR"}
        httpx.put(f"{mono}/inventory/1", json={"on_hand": 10})
        order1 = httpx.post(
            f"{mono}/orders",
            json={"customer_id": customer, "lines": [{"product_id": 1, "quantity": 2}]},
        )
        assert order1.status_code == 201, order1.text
        assert order1.json()["total"]["cents"] == 1554

        # no loops: the reverse sink's writes to the monolith are not captured back, and the
        # number of events stays bounded (the service writes a new product in two statements:
        # insert, then its id-based slug; plus the repricing)
        fwd = pb.forward("catalog")
        reverse_events = _published(pb, rev)
        forward_events = _published(pb, fwd)
        time.sleep(1.5)
        assert _published(pb, rev) == reverse_events <= 3
        assert _published(pb, fwd) == forward_events
        assert _rows(mono_db, "SELECT count(*) FROM _cdc_changes WHERE tbl = 'products'") == [(0,)]
    finally:
        stop.set()
        for t in workers:
            t.join(timeout=10)
        pb.close()


def test_cdc_running_both_ways_does_not_loop_events(shop: Shop) -> None:
    """With capture on both sides at once (the writes transition), each change makes one event."""
    m = shop.manifest
    pb = Playbook(m, actor="test")
    try:
        for _ in range(3):  # schema, capture, verify
            assert pb.advance("catalog").ok
        fwd, rev = pb.forward("catalog"), pb.reverse("catalog")
        pl.enable_capture(rev.source_url, rev.source_tables)  # reverse capture on top
        base_fwd, base_rev = _published(pb, fwd), _published(pb, rev)
        engine = pl.make_engine(m.monolith.database_url)
        with engine.begin() as conn:
            conn.execute(text("UPDATE products SET name = 'From Monolith' WHERE id = 2"))
        engine.dispose()
        svc = pl.make_engine(rev.source_url)
        with svc.begin() as conn:
            conn.execute(text("UPDATE catalog_product SET name = 'From Service' WHERE id = 3"))
        svc.dispose()
        for _ in range(3):  # each direction applies the other's change; nothing comes back
            pl.drain(m, fwd, timeout_s=20, transport=pb.transport())
            pl.drain(m, rev, timeout_s=20, transport=pb.transport())
        assert _published(pb, fwd) - base_fwd == 1
        assert _published(pb, rev) - base_rev == 1
        assert _rows(rev.source_url, "SELECT name FROM catalog_product WHERE id = 2") == [
            ("From Monolith",)
        ]
        assert _rows(m.monolith.database_url, "SELECT name FROM products WHERE id = 3") == [
            ("From Service",)
        ]
    finally:
        pb.close()
