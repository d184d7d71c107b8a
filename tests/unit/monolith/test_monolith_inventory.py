"""Inventory endpoints: set, adjust, never below reservations, list by availability."""

from __future__ import annotations

import pytest


def test_put_creates_then_sets_the_stock_row(client, shop) -> None:
    product = shop.product()
    assert client.get(f"/inventory/{product['id']}").status_code == 404
    created = client.put(f"/inventory/{product['id']}", json={"on_hand": 7})
    assert created.status_code == 200
    assert created.get_json() | {"updated_at": None} == {
        "product_id": product["id"], "on_hand": 7, "reserved": 0, "available": 7,
        "updated_at": None,
    }  # fmt: skip
    again = client.put(f"/inventory/{product['id']}", json={"on_hand": 3})
    assert again.get_json()["on_hand"] == 3


def test_put_for_an_unknown_product_is_422(client, error) -> None:
    response = client.put("/inventory/999", json={"on_hand": 1})
    assert response.status_code == 422
    assert error(response)["fields"] == {"product_id": "does not exist"}


def test_on_hand_cannot_drop_below_reserved(client, shop, error) -> None:
    product = shop.product(stock=5)
    shop.order(shop.customer()["id"], (product["id"], 4))
    put = client.put(f"/inventory/{product['id']}", json={"on_hand": 3})
    assert put.status_code == 409
    assert error(put)["code"] == "conflict"
    adjust = client.post(f"/inventory/{product['id']}/adjust", json={"delta": -2})
    assert adjust.status_code == 409
    assert shop.stock(product["id"])["on_hand"] == 5
    ok = client.post(f"/inventory/{product['id']}/adjust", json={"delta": -1})
    assert ok.status_code == 200
    assert ok.get_json()["available"] == 0


def test_adjust_adds_and_subtracts(client, shop) -> None:
    product = shop.product(stock=5)
    assert (
        client.post(f"/inventory/{product['id']}/adjust", json={"delta": 10}).get_json()["on_hand"]
        == 15
    )
    assert (
        client.post(f"/inventory/{product['id']}/adjust", json={"delta": -15}).get_json()["on_hand"]
        == 0
    )


def test_adjust_without_a_stock_row_is_404_and_overflow_is_422(client, shop, error) -> None:
    assert client.post("/inventory/5/adjust", json={"delta": 1}).status_code == 404
    product = shop.product(stock=2**31 - 2)
    too_much = client.post(f"/inventory/{product['id']}/adjust", json={"delta": 5})
    assert too_much.status_code == 422
    assert "delta" in error(too_much)["fields"]


@pytest.mark.parametrize(
    ("path_suffix", "method", "body", "fields"),
    [
        ("", "put", {}, {"on_hand": "is required"}),
        ("", "put", {"on_hand": -1}, {"on_hand": "must be between 0 and 2147483647"}),
        ("", "put", {"on_hand": "3"}, {"on_hand": "must be an integer"}),
        ("", "put", {"on_hand": 3, "reserved": 1}, {"reserved": "unknown field"}),
        ("/adjust", "post", {"delta": 1.0}, {"delta": "must be an integer"}),
        ("/adjust", "post", {}, {"delta": "is required"}),
    ],
)
def test_inventory_bad_bodies_are_422(client, shop, error, path_suffix, method, body, fields):
    product = shop.product(stock=1)
    response = getattr(client, method)(f"/inventory/{product['id']}{path_suffix}", json=body)
    assert response.status_code == 422
    assert error(response)["fields"] == fields


def test_inventory_list_sorts_by_available_and_filters_below(client, shop) -> None:
    a = shop.product(stock=10)["id"]
    b = shop.product(stock=2)["id"]
    c = shop.product(stock=10)["id"]
    listing = client.get("/inventory?sort=-available").get_json()
    assert [row["product_id"] for row in listing["items"]] == [a, c, b]
    below = client.get("/inventory?below=5").get_json()
    assert [row["product_id"] for row in below["items"]] == [b]
    assert client.get("/inventory?sort=id").status_code == 400
