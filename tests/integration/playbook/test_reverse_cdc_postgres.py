"""Reverse CDC on PostgreSQL: after `writes`, a product created and repriced through the proxy
(now served by the catalog service) lands in the monolith's PostgreSQL tables, the monolith
prices orders with it, and nothing loops back — the sinks tag their commits with a
replication origin and the pgoutput captures skip those transactions.

The monolith and both services run on one real PostgreSQL server (three databases); events
go through the embedded log (the Kafka variant is the end-to-end demo test)."""

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
from tests.integration.playbook.test_crash_and_proxy import _ProxyThread
from tests.playbook_shop import Shop, seed_monolith, write_manifest

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_shop(tmp_path: Path, postgres_server) -> Iterator[Shop]:  # type: ignore[no-untyped-def]
    from kit.manifest import load_manifest

    urls = {n: postgres_server.create_database() for n in ("monolith", "catalog", "customers")}
    path = write_manifest(tmp_path)
    manifest = path.read_text()
    for name, url in urls.items():
        manifest = manifest.replace(f"sqlite:///var/{name}.db", url)
    path.write_text(manifest)
    m = load_manifest(path)
    seed_monolith(m.monolith.database_url)
    shop = Shop(path, m)
    try:
        for name in ("monolith", "catalog", "customers"):
            shop.serve(name)
        yield shop
    finally:
        shop.close()
        for url in urls.values():
            postgres_server.drop_database(url.rsplit("/", 1)[1])


def _rows(url: str, sql: str, **params: object) -> list[tuple]:
    engine = pl.make_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def _until(predicate, timeout_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def _published(pb: Playbook, pipe: pl.Pipeline) -> int:
    return sum(pb.transport().end_offsets(list(pipe.topics.values())).values())


def _slots(url: str) -> set[str]:
    from cdc.capture.postgres import list_slots

    return {s.name for s in list_slots(url)}


def test_on_postgresql_writes_through_the_proxy_reach_the_monolith_without_loops(
    pg_shop: Shop,
) -> None:
    from kit.playbook.proxy import build_proxy

    m = pg_shop.manifest
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
        fwd, rev = pb.forward("catalog"), pb.reverse("catalog")
        # per-pipeline slots: forward dropped when forward CDC stopped, reverse in place
        assert rev.slot in _slots(rev.source_url) and fwd.slot not in _slots(fwd.source_url)
        wanted = {w.name for w in pl.desired_workers(m)}
        assert {rev.capture_worker, rev.sink_worker} <= wanted
        assert fwd.capture_worker not in wanted
        for name in (rev.capture_worker, rev.sink_worker):
            t = threading.Thread(target=pl.run_worker, args=(m, name, stop), daemon=True)
            t.start()
            workers.append(t)

        runtime = build_proxy(m, listen_port=0, admin_port=0)
        with _ProxyThread(runtime):
            proxy = runtime.proxy_url
            created = httpx.post(
                f"{proxy}/products",
                json={
                    "sku": "PG-NEW-1",
                    "name": "Reverse Bench",
                    "category_id": 1,
                    "price": {"cents": 1234, "currency": "EUR"},
                    "active": True,
                },
            )
            assert created.status_code == 201, created.text
            pid = created.json()["id"]
            assert pid > 50  # the service's sequence moved past the monolith's ids
            repriced = httpx.patch(
                f"{proxy}/products/1", json={"price": {"cents": 777, "currency": "EUR"}}
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
        assert row == [("PG-NEW-1", "Reverse Bench", True, "EUR")]

        mono = m.monolith.url
        assert httpx.put(f"{mono}/inventory/{pid}", json={"on_hand": 10}).status_code == 200
        customer = _rows(mono_db, "SELECT id FROM customers ORDER BY id LIMIT 1")[0][0]
        order = httpx.post(
            f"{mono}/orders",
            json={"customer_id": customer, "lines": [{"product_id": pid, "quantity": 3}]},
        )
        assert order.status_code == 201, order.text
        assert order.json()["total"] == {"cents": 3702, "currency": "EUR"}

        # no loops: the reverse sink's commits carry its replication origin; nothing new is
        # published once the two writes (create = insert + slug update, reprice) went through
        reverse_events = _published(pb, rev)
        time.sleep(1.5)
        assert _published(pb, rev) == reverse_events <= 3
        lags = pb.lag("catalog", "reverse")
        assert all((x.events or 0) == 0 for x in lags), lags
    finally:
        stop.set()
        for t in workers:
            t.join(timeout=10)
        pb.close()


def test_on_postgresql_cdc_running_both_ways_does_not_loop_events(pg_shop: Shop) -> None:
    """Capture on both sides at once: each change is published once, by its own side."""
    m = pg_shop.manifest
    pb = Playbook(m, actor="test")
    try:
        for _ in range(3):  # schema, capture, verify
            assert pb.advance("catalog").ok
        fwd, rev = pb.forward("catalog"), pb.reverse("catalog")
        pl.enable_pipe_capture(m, rev)  # reverse capture on top (slot created right away)
        base_fwd, base_rev = _published(pb, fwd), _published(pb, rev)
        engine = pl.make_engine(m.monolith.database_url)
        with engine.begin() as conn:
            conn.execute(text("UPDATE products SET name = 'From Monolith' WHERE id = 2"))
        engine.dispose()
        svc = pl.make_engine(rev.source_url)
        with svc.begin() as conn:
            conn.execute(text("UPDATE catalog_product SET name = 'From Service' WHERE id = 3"))
        svc.dispose()
        for _ in range(2):  # each direction applies the other's change; nothing comes back
            pl.drain(m, fwd, timeout_s=30, transport=pb.transport())
            pl.drain(m, rev, timeout_s=30, transport=pb.transport())
        assert _published(pb, fwd) - base_fwd == 1
        assert _published(pb, rev) - base_rev == 1
        assert _rows(rev.source_url, "SELECT name FROM catalog_product WHERE id = 2") == [
            ("From Monolith",)
        ]
        assert _rows(m.monolith.database_url, "SELECT name FROM products WHERE id = 3") == [
            ("From Service",)
        ]
        # rollback of capture drops the forward slot; the reverse one is ours to drop here
        pl.disable_pipe_capture(m, rev)
        assert rev.slot not in _slots(rev.source_url)
        assert pb.rollback("catalog").ok  # verify -> capture
        assert pb.rollback("catalog").ok  # capture -> schema: slot gone, tables emptied
        assert fwd.slot not in _slots(fwd.source_url)
        assert _rows(rev.source_url, "SELECT count(*) FROM catalog_product") == [(0,)]
    finally:
        pb.close()
