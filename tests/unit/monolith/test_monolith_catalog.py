"""Catalog endpoints: categories and products, happy paths and every bad-input case."""

from __future__ import annotations

import pytest

TIMESTAMP = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$"


def test_category_is_created_listed_and_fetched(client, shop) -> None:
    garden = shop.category("Garden")
    benches = shop.category("Benches", parent_id=garden["id"])
    assert benches["parent_id"] == garden["id"]
    assert set(benches) == {"id", "name", "parent_id", "created_at"}
    assert client.get(f"/categories/{garden['id']}").get_json() == garden
    listed = client.get(f"/categories?parent_id={garden['id']}").get_json()
    assert [c["id"] for c in listed["items"]] == [benches["id"]]
    by_name = client.get("/categories?sort=-name").get_json()
    assert [c["name"] for c in by_name["items"]] == ["Garden", "Benches"]


def test_category_with_unknown_parent_is_refused(client, error) -> None:
    response = client.post("/categories", json={"name": "Orphans", "parent_id": 999})
    assert response.status_code == 422
    assert error(response)["fields"] == {"parent_id": "does not exist"}


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {"name": "is required"}),
        ({"name": ""}, {"name": "must be 1 to 100 characters"}),
        ({"name": "x" * 101}, {"name": "must be 1 to 100 characters"}),
        ({"name": 5}, {"name": "must be a string"}),
        ({"name": "A", "colour": "red"}, {"colour": "unknown field"}),
        ({"name": "A", "parent_id": "1"}, {"parent_id": "must be an integer"}),
        ({"name": "A", "parent_id": 0}, {"parent_id": "must be between 1 and 2147483647"}),
    ],
)
def test_category_bad_bodies_name_each_field(client, error, body, fields) -> None:
    response = client.post("/categories", json=body)
    assert response.status_code == 422
    assert error(response)["fields"] == fields


def test_unknown_category_is_404(client, error) -> None:
    response = client.get("/categories/42")
    assert response.status_code == 404
    assert error(response) == {"code": "not_found", "message": "category 42 not found"}


def test_product_round_trip_keeps_the_documented_shape(client, shop) -> None:
    category = shop.category()
    product = shop.product(category["id"], cents=12999, description="Solid oak")
    assert list(product) == [
        "id", "sku", "name", "description", "category_id", "price", "active",
        "created_at", "updated_at",
    ]  # fmt: skip
    assert product["price"] == {"cents": 12999, "currency": "EUR"}
    assert product["active"] is True
    assert product["created_at"] == product["updated_at"]
    assert client.get(f"/products/{product['id']}").get_json() == product


def test_product_list_filters_sorts_and_pages(client, shop) -> None:
    garden, kitchen = shop.category("Garden")["id"], shop.category("Kitchen")["id"]
    cheap = shop.product(garden, cents=100, name="Oak Bench")
    shop.product(kitchen, cents=500, name="Copper Pan")
    dear = shop.product(garden, cents=900, name="OAK TABLE")
    shop.product(garden, cents=900, name="Pine Table", active=False)

    def ids(query: str) -> list[int]:
        response = client.get(f"/products?{query}")
        assert response.status_code == 200, response.get_json()
        return [p["id"] for p in response.get_json()["items"]]

    assert ids(f"category_id={garden}&sort=-price") == [dear["id"], dear["id"] + 1, cheap["id"]]
    assert ids("q=oak") == [cheap["id"], dear["id"]]
    assert ids("active=false") == [dear["id"] + 1]
    assert ids("min_price=200&max_price=600") == [cheap["id"] + 1]
    assert ids("q=%25") == []  # LIKE wildcards are matched literally
    first = client.get("/products?per_page=3&sort=price&active=true").get_json()
    assert first["total"] == 3 and first["prev"] is None
    assert first["next"] is None
    page1 = client.get("/products?per_page=2&sort=-price").get_json()
    assert page1["next"] == "/products?page=2&per_page=2&sort=-price"
    page2 = client.get(page1["next"]).get_json()
    assert page2["prev"] == "/products?page=1&per_page=2&sort=-price"
    assert [p["price"]["cents"] for p in page1["items"] + page2["items"]] == [900, 900, 500, 100]


def test_product_create_refuses_a_duplicate_sku(client, shop, error) -> None:
    product = shop.product()
    body = {
        "sku": product["sku"],
        "name": "Copy",
        "category_id": product["category_id"],
        "price": {"cents": 1, "currency": "EUR"},
    }
    response = client.post("/products", json=body)
    assert response.status_code == 409
    assert error(response)["code"] == "conflict"
    assert error(response)["fields"] == {"sku": "already exists"}


@pytest.mark.parametrize(
    ("patch", "fields"),
    [
        ({"sku": "lower case"}, {"sku": "must be 1 to 64 of A-Z 0-9 -"}),
        ({"sku": "X" * 65}, {"sku": "must be 1 to 64 of A-Z 0-9 -"}),
        ({"name": ""}, {"name": "must be 1 to 200 characters"}),
        (
            {"price": {"cents": -1, "currency": "EUR"}},
            {"price": "cents must be a non-negative integer"},
        ),
        (
            {"price": {"cents": 1, "currency": "eur"}},
            {"price": "currency must be three upper-case letters"},
        ),
        (
            {"price": {"cents": 1.5, "currency": "EUR"}},
            {"price": "cents must be a non-negative integer"},
        ),
        (
            {"price": {"cents": 2**31, "currency": "EUR"}},
            {"price": "must be between 0 and 2147483647"},
        ),
        ({"price": 100}, {"price": "must be a money"}),
        ({"category_id": 99}, {"category_id": "does not exist"}),
        ({"category_id": True}, {"category_id": "must be an integer"}),
        ({"active": "yes"}, {"active": "must be a boolean"}),
        ({"description": None}, {"description": "must not be null"}),
        ({"stock": 5}, {"stock": "unknown field"}),
    ],
)
def test_product_create_names_each_bad_field(client, shop, error, patch, fields) -> None:
    category = shop.category()
    body = {
        "sku": "SKU-1",
        "name": "Bench",
        "category_id": category["id"],
        "price": {"cents": 100, "currency": "EUR"},
        **patch,
    }
    response = client.post("/products", json=body)
    assert response.status_code == 422, response.get_json()
    assert error(response)["fields"] == fields
    assert client.get("/products").get_json()["total"] == 0


def test_product_create_lists_every_missing_field(client, error) -> None:
    response = client.post("/products", json={})
    assert error(response)["fields"] == {
        "category_id": "is required",
        "name": "is required",
        "price": "is required",
        "sku": "is required",
    }


def test_product_patch_changes_given_fields_and_bumps_updated_at(client, shop) -> None:
    product = shop.product()
    other = shop.category("Other")
    response = client.patch(
        f"/products/{product['id']}",
        json={
            "name": "Renamed",
            "price": {"cents": 5, "currency": "USD"},
            "category_id": other["id"],
        },
    )
    assert response.status_code == 200, response.get_json()
    changed = response.get_json()
    assert changed["name"] == "Renamed"
    assert changed["price"] == {"cents": 5, "currency": "USD"}
    assert changed["category_id"] == other["id"]
    assert changed["sku"] == product["sku"]
    assert changed["updated_at"] > product["updated_at"]
    assert changed["created_at"] == product["created_at"]


@pytest.mark.parametrize(
    ("body", "status", "fields"),
    [
        ({"sku": "NEW-1"}, 422, {"sku": "cannot be changed"}),
        ({}, 422, None),
        ({"name": None}, 422, {"name": "must not be null"}),
        ({"category_id": 12345}, 422, {"category_id": "does not exist"}),
    ],
)
def test_product_patch_refuses_bad_changes(client, shop, error, body, status, fields) -> None:
    product = shop.product()
    response = client.patch(f"/products/{product['id']}", json=body)
    assert response.status_code == status
    assert error(response).get("fields") == fields
    assert client.get(f"/products/{product['id']}").get_json() == product


def test_product_patch_of_unknown_id_is_404(client, error) -> None:
    response = client.patch("/products/77", json={"name": "x"})
    assert response.status_code == 404
    assert error(response)["message"] == "product 77 not found"


def test_active_product_cannot_be_deleted_until_deactivated(client, shop, error) -> None:
    product = shop.product()
    refused = client.delete(f"/products/{product['id']}")
    assert refused.status_code == 409
    assert error(refused)["code"] == "conflict"
    client.patch(f"/products/{product['id']}", json={"active": False})
    deleted = client.delete(f"/products/{product['id']}")
    assert deleted.status_code == 204 and deleted.data == b""
    assert client.get(f"/products/{product['id']}").status_code == 404
    assert client.delete(f"/products/{product['id']}").status_code == 404


def test_huge_ids_are_plain_404s(client, error) -> None:
    response = client.get(f"/products/{2**70}")
    assert response.status_code == 404
    assert error(response)["code"] == "not_found"
    bad = client.get(f"/products?category_id={2**70}")
    assert bad.status_code == 400
    assert error(bad)["fields"] == {"category_id": "must be at most 2147483647"}
