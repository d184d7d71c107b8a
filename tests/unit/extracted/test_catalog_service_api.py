"""The catalog service serves /categories and /products as docs/api.md describes."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from extracted.catalog.models import Product
from shoplib.db import session

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def _category(client: FlaskClient, name: str = "Garden", parent_id: int | None = None) -> int:
    response = client.post("/categories", json={"name": name, "parent_id": parent_id})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def _product(client: FlaskClient, category_id: int, **overrides: Any) -> dict[str, Any]:
    body = {
        "sku": "SKU-1",
        "name": "Oak Garden Bench",
        "category_id": category_id,
        "price": {"cents": 12999, "currency": "EUR"},
    } | overrides
    response = client.post("/products", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_created_product_has_the_contract_shape_and_defaults(catalog: FlaskClient) -> None:
    category_id = _category(catalog)
    product = _product(catalog, category_id)
    assert list(product) == [
        "id", "sku", "name", "description", "category_id", "price", "active",
        "created_at", "updated_at",
    ]  # fmt: skip
    assert product["price"] == {"cents": 12999, "currency": "EUR"}
    assert product["description"] == "" and product["active"] is True
    assert TIMESTAMP.match(product["created_at"]) and product["created_at"] == product["updated_at"]
    assert catalog.get(f"/products/{product['id']}").get_json() == product


def test_price_is_stored_as_an_exact_decimal_amount_with_a_slug(
    catalog_app: Flask, catalog: FlaskClient
) -> None:
    product = _product(catalog, _category(catalog), price={"cents": 1, "currency": "USD"})
    with catalog_app.app_context():
        row = session().scalars(select(Product)).one()
        assert row.price_amount == Decimal("0.01")
        assert row.slug == f"oak-garden-bench-{product['id']}"
        assert row.is_listed is True


def test_renaming_a_product_recomputes_its_slug(catalog_app: Flask, catalog: FlaskClient) -> None:
    product = _product(catalog, _category(catalog))
    response = catalog.patch(f"/products/{product['id']}", json={"name": "Crème Brûlée Pan"})
    assert response.status_code == 200
    assert response.get_json()["name"] == "Crème Brûlée Pan"
    with catalog_app.app_context():
        assert session().scalars(select(Product.slug)).one() == f"creme-brulee-pan-{product['id']}"


def test_patch_changes_price_and_active_and_bumps_updated_at(catalog: FlaskClient) -> None:
    product = _product(catalog, _category(catalog))
    response = catalog.patch(
        f"/products/{product['id']}",
        json={"price": {"cents": 999999, "currency": "GBP"}, "active": False, "description": "x"},
    )
    body = response.get_json()
    assert response.status_code == 200
    assert body["price"] == {"cents": 999999, "currency": "GBP"}
    assert body["active"] is False and body["description"] == "x"
    assert body["updated_at"] >= product["updated_at"]
    assert body["created_at"] == product["created_at"]


def test_sku_cannot_be_changed(catalog: FlaskClient) -> None:
    product = _product(catalog, _category(catalog))
    response = catalog.patch(f"/products/{product['id']}", json={"sku": "OTHER"})
    assert response.status_code == 422
    assert response.get_json()["error"]["fields"] == {"sku": "cannot be changed"}


def test_duplicate_sku_is_a_conflict(catalog: FlaskClient) -> None:
    category_id = _category(catalog)
    _product(catalog, category_id)
    response = catalog.post(
        "/products",
        json={
            "sku": "SKU-1",
            "name": "x",
            "category_id": category_id,
            "price": {"cents": 1, "currency": "EUR"},
        },
    )
    assert response.status_code == 409
    assert response.get_json() == {
        "error": {
            "code": "conflict",
            "message": "a product with sku SKU-1 already exists",
            "fields": {"sku": "already exists"},
        }
    }


def test_bad_product_body_names_every_field(catalog: FlaskClient) -> None:
    response = catalog.post(
        "/products",
        json={
            "sku": "lower case",
            "name": "",
            "category_id": 0,
            "price": {"cents": -1, "currency": "EUR"},
            "colour": "red",
        },
    )
    assert response.status_code == 422
    assert response.get_json()["error"]["fields"] == {
        "category_id": "must be between 1 and 2147483647",
        "colour": "unknown field",
        "name": "must be 1 to 200 characters",
        "price": "cents must be a non-negative integer",
        "sku": "must be 1 to 64 of A-Z 0-9 -",
    }


def test_unknown_category_and_currency_with_a_newline_are_refused(catalog: FlaskClient) -> None:
    response = catalog.post(
        "/products",
        json={"sku": "A", "name": "n", "category_id": 5, "price": {"cents": 1, "currency": "EU"}},
    )
    assert response.get_json()["error"]["fields"] == {
        "price": "currency must be three upper-case letters"
    }
    response = catalog.post(
        "/products",
        json={
            "sku": "A",
            "name": "n",
            "category_id": 5,
            "price": {"cents": 1, "currency": "EUR\n"},
        },
    )
    assert response.status_code == 422
    response = catalog.post(
        "/products",
        json={"sku": "A", "name": "n", "category_id": 5, "price": {"cents": 1, "currency": "EUR"}},
    )
    assert response.status_code == 422
    assert response.get_json()["error"]["fields"] == {"category_id": "does not exist"}


def test_prices_beyond_an_int_column_are_refused(catalog: FlaskClient) -> None:
    category_id = _category(catalog)
    response = catalog.post(
        "/products",
        json={
            "sku": "A",
            "name": "n",
            "category_id": category_id,
            "price": {"cents": 2_147_483_648, "currency": "EUR"},
        },
    )
    assert response.status_code == 422
    assert response.get_json()["error"]["fields"] == {"price": "must be between 0 and 2147483647"}


def test_active_products_cannot_be_deleted_until_deactivated(catalog: FlaskClient) -> None:
    product = _product(catalog, _category(catalog))
    path = f"/products/{product['id']}"
    response = catalog.delete(path)
    assert response.status_code == 409
    assert response.get_json()["error"] == {
        "code": "conflict",
        "message": f"product {product['id']} is active; deactivate it before deleting",
    }
    assert catalog.patch(path, json={"active": False}).status_code == 200
    assert catalog.delete(path).status_code == 204
    assert catalog.get(path).status_code == 404


def test_unknown_ids_and_paths_are_404_with_json_bodies(catalog: FlaskClient) -> None:
    assert catalog.get("/products/77").get_json() == {
        "error": {"code": "not_found", "message": "product 77 not found"}
    }
    assert catalog.get("/categories/9").get_json()["error"]["message"] == "category 9 not found"
    huge = catalog.get("/products/99999999999999999999999")
    assert huge.status_code == 404
    assert huge.get_json()["error"] == {"code": "not_found", "message": "no such resource"}
    assert catalog.get("/orders").status_code == 404


def test_wrong_method_is_405_and_bad_bodies_are_400_or_415(catalog: FlaskClient) -> None:
    response = catalog.put("/products")
    assert response.status_code == 405 and response.headers["Allow"]
    assert (
        catalog.post("/categories", data="{", content_type="application/json").get_json()["error"][
            "code"
        ]
        == "malformed_json"
    )
    assert catalog.post("/categories", json=[1]).status_code == 400
    assert catalog.post("/categories", data="name=x", content_type="text/plain").status_code == 415
    # the body is validated before the id is looked up, as on the monolith
    assert catalog.patch("/products/1", json={}).status_code == 422
    assert catalog.patch("/products/1", json={"name": "x"}).status_code == 404


def test_empty_patch_is_refused(catalog: FlaskClient) -> None:
    product = _product(catalog, _category(catalog))
    response = catalog.patch(f"/products/{product['id']}", json={})
    assert response.status_code == 422
    assert response.get_json()["error"]["message"] == "request body must change at least one field"


def test_categories_list_filters_by_parent_and_sorts_by_name(catalog: FlaskClient) -> None:
    garden = _category(catalog, "Garden")
    _category(catalog, "Tools", garden)
    _category(catalog, "Benches", garden)
    _category(catalog, "Kitchen")
    body = catalog.get(f"/categories?parent_id={garden}&sort=-name").get_json()
    assert [c["name"] for c in body["items"]] == ["Tools", "Benches"]
    assert body["total"] == 2 and body["next"] is None and body["prev"] is None
    assert catalog.get("/categories?parent_id=0").get_json()["error"]["fields"] == {
        "parent_id": "must be at least 1"
    }


def test_child_category_needs_an_existing_parent(catalog: FlaskClient) -> None:
    response = catalog.post("/categories", json={"name": "Orphan", "parent_id": 42})
    assert response.status_code == 422
    assert response.get_json()["error"]["fields"] == {"parent_id": "does not exist"}


def test_products_sort_by_price_with_ties_by_id_and_paginate(catalog: FlaskClient) -> None:
    category_id = _category(catalog)
    prices = [500, 100, 500, 300, 100]
    ids = [
        _product(catalog, category_id, sku=f"S-{i}", price={"cents": c, "currency": "EUR"})["id"]
        for i, c in enumerate(prices)
    ]
    body = catalog.get("/products?sort=-price&per_page=2").get_json()
    assert [p["id"] for p in body["items"]] == [ids[0], ids[2]]
    assert body["next"] == "/products?page=2&per_page=2&sort=-price"
    page3 = catalog.get("/products?page=3&per_page=2&sort=-price").get_json()
    assert [p["id"] for p in page3["items"]] == [ids[4]]
    assert page3["prev"] == "/products?page=2&per_page=2&sort=-price" and page3["next"] is None
    ascending = catalog.get("/products?sort=price").get_json()["items"]
    assert [p["id"] for p in ascending] == [ids[1], ids[4], ids[3], ids[0], ids[2]]


def test_products_filters_combine(catalog: FlaskClient) -> None:
    garden, kitchen = _category(catalog, "Garden"), _category(catalog, "Kitchen")
    _product(catalog, garden, sku="A", name="Oak Bench", price={"cents": 100, "currency": "EUR"})
    _product(catalog, garden, sku="B", name="oak 100%", price={"cents": 250, "currency": "EUR"})
    _product(catalog, kitchen, sku="C", name="Oak Spoon", price={"cents": 300, "currency": "EUR"})
    _product(catalog, garden, sku="D", name="Pine Bench", active=False)
    names = lambda query: [p["name"] for p in catalog.get(query).get_json()["items"]]  # noqa: E731
    assert names(f"/products?category_id={garden}&q=OAK") == ["Oak Bench", "oak 100%"]
    assert names("/products?min_price=101&max_price=300") == ["oak 100%", "Oak Spoon"]
    assert names("/products?active=false") == ["Pine Bench"]
    assert names("/products?q=100%25") == ["oak 100%"]
    assert names("/products?q=_") == []


def test_bad_list_queries_are_400_naming_each_parameter(catalog: FlaskClient) -> None:
    response = catalog.get("/products?page=0&per_page=1000&sort=colour&active=maybe&min_price=-1")
    assert response.status_code == 400
    assert response.get_json()["error"] == {
        "code": "invalid_query",
        "message": "query parameters are invalid",
        "fields": {
            "active": "must be true or false",
            "min_price": "must be at least 0",
            "page": "must be at least 1",
            "per_page": "must be at most 100",
            "sort": "must be one of id, name, price, created_at (prefix - for descending)",
        },
    }
    assert catalog.get("/products?category_id=99999999999999999999").status_code == 400


def test_openapi_describes_every_route_and_health_reports_the_database(
    catalog_app: Flask, catalog: FlaskClient
) -> None:
    from extracted.catalog.openapi import openapi_document
    from shoplib.openapi import undocumented_routes

    assert undocumented_routes(catalog_app, openapi_document()) == []
    assert catalog.get("/openapi.json").get_json()["info"]["title"] == "catalog service"
    assert catalog.get("/healthz").get_json() == {"status": "ok"}
    assert catalog.get("/readyz").get_json() == {
        "status": "ready",
        "checks": {"database": "ok", "schema": "ok"},
    }


@pytest.mark.parametrize("service", ["catalog", "customers"])
def test_readiness_fails_until_the_database_is_at_the_alembic_head(
    tmp_path: Path, service: str
) -> None:
    from tests.contract.harness import downgrade, migrate, service_app

    url = f"sqlite:///{tmp_path / 'behind.db'}"
    app = service_app(service, url)
    try:
        client = app.test_client()
        never = client.get("/readyz")  # a fresh database: the tables do not exist yet
        assert never.status_code == 503
        assert never.get_json()["checks"] == {
            "database": "ok",
            "schema": f"no Alembic version table 'alembic_version_{service}': not migrated",
        }
        migrate(service, url)
        downgrade(service, url, "base")  # a version table, but no revision in it
        behind = client.get("/readyz").get_json()["checks"]["schema"]
        assert behind.startswith("schema at (none), the code expects ")
        migrate(service, url)
        assert client.get("/readyz").status_code == 200
        assert client.get("/healthz").status_code == 200
    finally:
        app.extensions["database"].engine.dispose()


def test_readiness_fails_when_the_database_is_unreachable(free_port: int) -> None:
    from tests.contract.harness import service_app

    # nothing listens on a port that was just free: the connection is refused at once
    app = service_app("catalog", f"postgresql+psycopg2://nobody@127.0.0.1:{free_port}/catalog")
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json() == {"status": "unavailable", "checks": {"database": "failed"}}
    assert app.test_client().get("/healthz").status_code == 200
