"""The monolith under real gunicorn workers: no oversell under concurrent orders, demo tour.

Orders for the last units race across two worker processes; the conditional reservation
UPDATE must let exactly as many succeed as there are units, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from kit.commands.demo import prepare_monolith_db, run_tour, start_gunicorn, stop_process
from kitcore.net import free_port, wait_http_ok

pytestmark = pytest.mark.integration

UNITS = 12
BUYERS = 30


@pytest.fixture(params=["sqlite", "postgresql"])
def monolith_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    url = (
        f"sqlite:///{tmp_path / 'monolith.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    prepare_monolith_db(url, scale=1, seed=4)
    return url


@pytest.fixture
def base_url(monolith_url: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    process = start_gunicorn(
        "monolith.app:create_app()",
        port,
        {"MONOLITH_DATABASE_URL": monolith_url},
        workers=2,
        log_path=tmp_path / "gunicorn.log",
    )
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/readyz", timeout_s=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process)


def test_concurrent_orders_never_oversell(base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=30) as http:
        category = http.post("/categories", json={"name": "Race"}).json()
        product = http.post(
            "/products",
            json={
                "sku": "RACE-1", "name": "Last units", "category_id": category["id"],
                "price": {"cents": 100, "currency": "EUR"},
            },
        ).json()  # fmt: skip
        assert http.put(f"/inventory/{product['id']}", json={"on_hand": UNITS}).status_code == 200
        customer = http.post("/customers", json={"email": "racer@example.com", "name": "R"}).json()

    def buy(_: int) -> int:
        with httpx.Client(base_url=base_url, timeout=60) as buyer:
            response = buyer.post(
                "/orders",
                json={
                    "customer_id": customer["id"],
                    "lines": [{"product_id": product["id"], "quantity": 1}],
                },
            )
            return response.status_code

    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(buy, range(BUYERS)))
    assert statuses.count(201) == UNITS, statuses
    assert statuses.count(409) == BUYERS - UNITS, statuses
    with httpx.Client(base_url=base_url) as http:
        stock = http.get(f"/inventory/{product['id']}").json()
        assert (stock["on_hand"], stock["reserved"], stock["available"]) == (UNITS, UNITS, 0)
        orders = http.get(f"/orders?customer_id={customer['id']}&per_page=100").json()
        assert orders["total"] == UNITS


def test_demo_tour_passes_against_gunicorn(base_url: str) -> None:
    lines: list[str] = []
    steps = run_tour(base_url, lines.append)
    assert steps >= 15
    assert any("409" in line for line in lines)
