"""Customers endpoints: case-insensitive unique emails, stripped names, erasure."""

from __future__ import annotations

import pytest


def test_customer_is_created_with_a_stripped_name(client, shop) -> None:
    customer = shop.customer("Ada.Lovelace@Example.com", "  Ada Lovelace \t")
    assert customer["name"] == "Ada Lovelace"
    assert customer["email"] == "Ada.Lovelace@Example.com"
    assert customer["phone"] is None
    assert list(customer) == ["id", "email", "name", "phone", "created_at", "updated_at"]
    assert client.get(f"/customers/{customer['id']}").get_json() == customer


def test_email_is_unique_case_insensitively(client, shop, error) -> None:
    shop.customer("ada@example.com")
    response = client.post("/customers", json={"email": "ADA@Example.COM", "name": "Other Ada"})
    assert response.status_code == 409
    assert error(response)["fields"] == {"email": "already exists"}
    assert client.get("/customers").get_json()["total"] == 1


def test_email_change_to_a_taken_address_is_refused_but_own_case_change_is_fine(
    client, shop, error
) -> None:
    ada = shop.customer("ada@example.com")
    grace = shop.customer("grace@example.com", "Grace Hopper")
    clash = client.patch(f"/customers/{grace['id']}", json={"email": "Ada@example.com"})
    assert clash.status_code == 409
    assert error(clash)["code"] == "conflict"
    recase = client.patch(f"/customers/{ada['id']}", json={"email": "ADA@example.com"})
    assert recase.status_code == 200
    assert recase.get_json()["email"] == "ADA@example.com"


def test_customer_list_filters_by_email_and_name(client, shop) -> None:
    ada = shop.customer("Ada@Example.com", "Ada Lovelace")
    shop.customer("grace@example.com", "Grace Hopper")
    cher = shop.customer("cher@example.com", "Cher")

    def ids(query: str) -> list[int]:
        response = client.get(f"/customers?{query}")
        assert response.status_code == 200, response.get_json()
        return [c["id"] for c in response.get_json()["items"]]

    assert ids("email=ada@EXAMPLE.com") == [ada["id"]]
    assert ids("q=LOVE") == [ada["id"]]
    assert ids("sort=name") == [ada["id"], cher["id"], ada["id"] + 1]
    assert ids("sort=-email&per_page=1") == [ada["id"] + 1]


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"name": "X"}, {"email": "is required"}),
        (
            {"email": "no-at-sign", "name": "X"},
            {"email": "must be an email address with exactly one @"},
        ),
        ({"email": "a@b@c", "name": "X"}, {"email": "must be an email address with exactly one @"}),
        ({"email": "x" * 250 + "@a.com", "name": "X"}, {"email": "must be 3 to 254 characters"}),
        ({"email": "a@b.c", "name": "   "}, {"name": "must be 1 to 200 characters"}),
        (
            {"email": "a@b.c", "name": "X", "phone": "1" * 33},
            {"phone": "must be 0 to 32 characters"},
        ),
        ({"email": "a@b.c", "name": ["X"]}, {"name": "must be a string"}),
        ({"email": "a@b.c", "name": "X", "vip": True}, {"vip": "unknown field"}),
    ],
)
def test_customer_bad_bodies_name_each_field(client, error, body, fields) -> None:
    response = client.post("/customers", json=body)
    assert response.status_code == 422
    assert error(response)["fields"] == fields


def test_customer_patch_and_delete(client, shop) -> None:
    customer = shop.customer()
    patched = client.patch(f"/customers/{customer['id']}", json={"phone": "+44 1", "name": " Ada "})
    assert patched.status_code == 200
    assert patched.get_json()["phone"] == "+44 1"
    assert patched.get_json()["name"] == "Ada"
    cleared = client.patch(f"/customers/{customer['id']}", json={"phone": None})
    assert cleared.get_json()["phone"] is None
    assert client.delete(f"/customers/{customer['id']}").status_code == 204
    assert client.get(f"/customers/{customer['id']}").status_code == 404
    assert client.delete(f"/customers/{customer['id']}").status_code == 404
    assert client.patch(f"/customers/{customer['id']}", json={"name": "x"}).status_code == 404


def test_deleted_customers_orders_keep_their_customer_id(client, shop) -> None:
    customer = shop.customer()
    product = shop.product(stock=5)
    order = shop.order(customer["id"], (product["id"], 1))
    assert client.delete(f"/customers/{customer['id']}").status_code == 204
    assert client.get(f"/orders/{order['id']}").get_json()["customer_id"] == customer["id"]
