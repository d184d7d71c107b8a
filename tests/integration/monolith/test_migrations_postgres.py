"""The monolith on a real PostgreSQL: migrations up/down/up, the models match, endpoints work."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from kit import alembic_runner
from migrations import shop_migrations
from monolith.app import create_app
from monolith.config import MonolithConfig
from monolith.schema import metadata
from monolith.seed import SeedPlan, seed_database
from shoplib.db import make_engine

pytestmark = pytest.mark.integration

TABLES = {"categories", "products", "customers", "stock", "reservations", "orders", "order_lines"}


def test_monolith_migrations_round_trip_on_postgresql(pg_url: str) -> None:
    alembic_runner.upgrade(shop_migrations("monolith"), pg_url)
    engine = make_engine(pg_url)
    try:
        assert set(inspect(engine).get_table_names()) == TABLES | {"alembic_version_monolith"}
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={"compare_type": True, "version_table": "alembic_version_monolith"},
            )
            assert compare_metadata(context, metadata()) == []
        insert = text(
            "INSERT INTO customers (email, full_name, created_at, updated_at) "
            "VALUES (:email, 'X', now(), now())"
        )
        with engine.begin() as connection:
            connection.execute(insert, {"email": "Ada@Example.com"})
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(insert, {"email": "ada@EXAMPLE.com"})
        alembic_runner.downgrade(shop_migrations("monolith"), pg_url, "base")
        assert set(inspect(engine).get_table_names()) == {"alembic_version_monolith"}
        assert alembic_runner.current(shop_migrations("monolith"), pg_url) is None
        alembic_runner.upgrade(shop_migrations("monolith"), pg_url)
        assert alembic_runner.current(shop_migrations("monolith"), pg_url) == "m0001_initial"
    finally:
        engine.dispose()


def test_monolith_endpoints_on_postgresql(pg_url: str) -> None:
    alembic_runner.upgrade(shop_migrations("monolith"), pg_url)
    engine = make_engine(pg_url)
    try:
        seed_database(engine, SeedPlan(products=40, customers=10, orders=30), 11)
    finally:
        engine.dispose()
    app = create_app(MonolithConfig(database_url=pg_url))
    client = app.test_client()
    try:
        category = client.post("/categories", json={"name": "Garden"}).get_json()
        assert category["id"] == 21  # sequences moved past the seeded ids
        body = {
            "sku": "PG-1",
            "name": "Oak 100% Bench",
            "category_id": category["id"],
            "price": {"cents": 2**31 - 1, "currency": "EUR"},
        }
        product = client.post("/products", json=body)
        assert product.status_code == 201, product.get_json()
        product_id = product.get_json()["id"]
        assert client.post("/products", json=body).status_code == 409
        assert client.put(f"/inventory/{product_id}", json={"on_hand": 3}).status_code == 200
        huge = client.post(f"/inventory/{product_id}/adjust", json={"delta": 2**31 - 1})
        assert huge.status_code == 422, huge.get_json()
        customer = client.post("/customers", json={"email": "PG@Example.com", "name": "P G"})
        assert customer.status_code == 201
        dup = client.post("/customers", json={"email": "pg@example.COM", "name": "Dup"})
        assert dup.status_code == 409
        order = client.post(
            "/orders",
            json={
                "customer_id": customer.get_json()["id"],
                "lines": [{"product_id": product_id, "quantity": 3}],
            },
        )
        assert order.status_code == 201, order.get_json()
        assert order.get_json()["total"]["cents"] == 3 * (2**31 - 1)  # bigint totals
        short = client.post(
            "/orders",
            json={
                "customer_id": customer.get_json()["id"],
                "lines": [{"product_id": product_id, "quantity": 1}],
            },
        )
        assert short.status_code == 409
        assert short.get_json()["error"]["code"] == "insufficient_stock"
        cancelled = client.post(f"/orders/{order.get_json()['id']}/cancel")
        assert cancelled.get_json()["status"] == "cancelled"
        assert client.get(f"/inventory/{product_id}").get_json()["reserved"] == 0
        found = client.get("/products?q=100%25&sort=-price").get_json()
        assert [p["id"] for p in found["items"]] == [product_id]
        report = client.get("/reports/sales-by-category?from=2024-01-01&to=2026-12-31")
        assert report.status_code == 200 and report.get_json()["rows"]
        assert client.get(f"/orders/{2**31 - 1}").status_code == 404
    finally:
        app.extensions["database"].engine.dispose()
