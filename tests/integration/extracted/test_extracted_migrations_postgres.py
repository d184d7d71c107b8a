"""The services' migrations on a real PostgreSQL: up (matching the models), a write, down."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, inspect

from extracted.catalog.models import Base as CatalogBase
from extracted.customers.models import Base as CustomersBase
from shoplib.db import make_engine
from tests.contract.harness import downgrade, migrate, service_app

pytestmark = pytest.mark.integration

SCHEMAS: dict[str, tuple[MetaData, set[str]]] = {
    "catalog": (CatalogBase.metadata, {"catalog_category", "catalog_product"}),
    "customers": (CustomersBase.metadata, {"customer"}),
}


@pytest.mark.parametrize("service", sorted(SCHEMAS))
def test_service_migrations_go_up_and_down_on_postgresql(service: str, pg_url: str) -> None:
    metadata, tables = SCHEMAS[service]
    migrate(service, pg_url)
    engine = make_engine(pg_url)
    try:
        assert set(inspect(engine).get_table_names()) == tables | {f"alembic_version_{service}"}
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={"compare_type": True, "version_table": f"alembic_version_{service}"},
            )
            assert compare_metadata(context, metadata) == []
        downgrade(service, pg_url)
        assert set(inspect(engine).get_table_names()) == {f"alembic_version_{service}"}
    finally:
        engine.dispose()


def test_services_serve_from_postgresql(pg_url: str) -> None:
    migrate("catalog", pg_url)
    migrate("customers", pg_url)
    catalog = service_app("catalog", pg_url).test_client()
    category = catalog.post("/categories", json={"name": "Garden"}).get_json()
    product = catalog.post(
        "/products",
        json={"sku": "A-1", "name": "Oak Bench", "category_id": category["id"],
              "price": {"cents": 12999, "currency": "EUR"}},
    )  # fmt: skip
    assert product.status_code == 201
    assert product.get_json()["price"] == {"cents": 12999, "currency": "EUR"}
    listed = catalog.get("/products?sort=-price&min_price=12999&q=oak").get_json()
    assert listed["total"] == 1
    customers = service_app("customers", pg_url).test_client()
    assert customers.post("/customers", json={"email": "A@x.io", "name": "A B"}).status_code == 201
    duplicate = customers.post("/customers", json={"email": "a@X.io", "name": "C"})
    assert duplicate.status_code == 409
    assert customers.get("/readyz").status_code == 200
