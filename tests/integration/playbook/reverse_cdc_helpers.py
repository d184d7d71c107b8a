"""What the reverse-CDC tests (SQLite and PostgreSQL) do alike: reach `writes`, run the
reverse workers, query a database, wait for a condition, and check both directions."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
from sqlalchemy import text

from kit.manifest import Manifest
from kit.playbook import Playbook
from kit.playbook import pipelines as pl


def rows(url: str, sql: str, **params: object) -> list[tuple]:
    """Every row `sql` returns on `url`, as plain tuples."""
    engine = pl.make_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def execute(url: str, sql: str) -> None:
    """Run one statement on `url` in its own transaction."""
    engine = pl.make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


def until(predicate: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def published(pb: Playbook, pipe: pl.Pipeline) -> int:
    """Events published on the pipeline's topics so far."""
    return sum(pb.transport().end_offsets(list(pipe.topics.values())).values())


def advance_to_writes(pb: Playbook, service: str) -> None:
    """Run the steps schema .. writes (canary has two stages); the service then owns writes."""
    for _ in range(8):
        result = pb.advance(service)
        assert result.ok, result
        if result.step == "writes":
            break
    assert pb.state.get(service).write_owner == "service"


@contextmanager
def reverse_workers(m: Manifest, rev: pl.Pipeline) -> Iterator[None]:
    """The long-lived reverse capture and sink workers, as `kit up` would run them."""
    assert {rev.capture_worker, rev.sink_worker} <= {w.name for w in pl.desired_workers(m)}
    stop = threading.Event()
    workers = [
        threading.Thread(target=pl.run_worker, args=(m, name, stop), daemon=True)
        for name in (rev.capture_worker, rev.sink_worker)
    ]
    for t in workers:
        t.start()
    try:
        yield
    finally:
        stop.set()
        for t in workers:
            t.join(timeout=10)


def create_and_reprice_product(base_url: str, sku: str) -> int:
    """Create a product and reprice product 1 through `base_url`; the new product's id."""
    created = httpx.post(
        f"{base_url}/products",
        json={
            "sku": sku,
            "name": "Reverse Bench",
            "category_id": 1,
            "price": {"cents": 1234, "currency": "EUR"},
            "active": True,
        },
    )
    assert created.status_code == 201, created.text
    repriced = httpx.patch(
        f"{base_url}/products/1", json={"price": {"cents": 777, "currency": "EUR"}}
    )
    assert repriced.status_code == 200, repriced.text
    return created.json()["id"]


def assert_monolith_sells_the_service_product(
    m: Manifest, pid: int, expected_row: tuple, timeout_s: float
) -> None:
    """Reverse CDC brought product `pid` and the repricing of product 1 into the monolith's
    tables, and the monolith prices an order of the new product with them."""
    mono_db = m.monolith.database_url
    by_id = "SELECT price_cents FROM products WHERE id = :i"
    until(lambda: rows(mono_db, by_id, i=pid) == [(1234,)], timeout_s)
    until(lambda: rows(mono_db, by_id, i=1) == [(777,)], timeout_s)
    row = rows(mono_db, "SELECT sku, name, active, currency FROM products WHERE id = :i", i=pid)
    assert row == [expected_row]

    mono = m.monolith.url
    assert httpx.put(f"{mono}/inventory/{pid}", json={"on_hand": 10}).status_code == 200
    customer = rows(mono_db, "SELECT id FROM customers ORDER BY id LIMIT 1")[0][0]
    order = httpx.post(
        f"{mono}/orders",
        json={"customer_id": customer, "lines": [{"product_id": pid, "quantity": 3}]},
    )
    assert order.status_code == 201, order.text
    assert order.json()["total"] == {"cents": 3702, "currency": "EUR"}


def assert_each_side_applies_the_others_change_once(
    pb: Playbook, m: Manifest, fwd: pl.Pipeline, rev: pl.Pipeline, rounds: int, timeout_s: float
) -> None:
    """With capture on both sides, a change on each side is published once, by its own side,
    and lands on the other side; nothing comes back."""
    base_fwd, base_rev = published(pb, fwd), published(pb, rev)
    execute(m.monolith.database_url, "UPDATE products SET name = 'From Monolith' WHERE id = 2")
    execute(rev.source_url, "UPDATE catalog_product SET name = 'From Service' WHERE id = 3")
    for _ in range(rounds):
        pl.drain(m, fwd, timeout_s=timeout_s, transport=pb.transport())
        pl.drain(m, rev, timeout_s=timeout_s, transport=pb.transport())
    assert published(pb, fwd) - base_fwd == 1
    assert published(pb, rev) - base_rev == 1
    assert rows(rev.source_url, "SELECT name FROM catalog_product WHERE id = 2") == [
        ("From Monolith",)
    ]
    assert rows(m.monolith.database_url, "SELECT name FROM products WHERE id = 3") == [
        ("From Service",)
    ]
