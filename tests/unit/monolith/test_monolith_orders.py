"""Orders: placement in one transaction, atomic refusal when stock is short, lifecycle."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from monolith.inventory.models import Reservation
from monolith.orders.models import Order, OrderLine
from shoplib.db import make_engine


def _count(db_url: str, model: type) -> int:
    engine = make_engine(db_url)
    try:
        with engine.connect() as connection:
            return int(connection.scalar(select(func.count()).select_from(model)) or 0)
    finally:
        engine.dispose()


def test_order_is_priced_from_the_catalog_and_reserves_stock(client, shop) -> None:
    customer = shop.customer()
    bench = shop.product(cents=12999, stock=10)
    lamp = shop.product(cents=500, stock=3)
    order = shop.order(customer["id"], (bench["id"], 2), (lamp["id"], 3))
    assert order["status"] == "pending"
    assert order["lines"] == [
        {
            "product_id": bench["id"], "quantity": 2,
            "unit_price": {"cents": 12999, "currency": "EUR"},
            "line_total": {"cents": 25998, "currency": "EUR"},
        },
        {
            "product_id": lamp["id"], "quantity": 3,
            "unit_price": {"cents": 500, "currency": "EUR"},
            "line_total": {"cents": 1500, "currency": "EUR"},
        },
    ]  # fmt: skip
    assert order["total"] == {"cents": 27498, "currency": "EUR"}
    assert shop.stock(bench["id"])["reserved"] == 2
    assert shop.stock(lamp["id"])["available"] == 0
    assert client.get(f"/orders/{order['id']}").get_json() == order


def test_order_placement_reserves_nothing_when_one_line_is_short(
    client, shop, error, db_url
) -> None:
    customer = shop.customer()
    plenty = shop.product(stock=10)
    short = shop.product(stock=1)
    unstocked = shop.product()
    response = client.post(
        "/orders",
        json={
            "customer_id": customer["id"],
            "lines": [
                {"product_id": plenty["id"], "quantity": 5},
                {"product_id": short["id"], "quantity": 2},
                {"product_id": unstocked["id"], "quantity": 1},
            ],
        },
    )
    assert response.status_code == 409
    body = error(response)
    assert body["code"] == "insufficient_stock"
    assert body["fields"] == {
        str(short["id"]): "requested 2, available 1",
        str(unstocked["id"]): "requested 1, available 0",
    }
    assert shop.stock(plenty["id"])["reserved"] == 0
    assert shop.stock(short["id"])["reserved"] == 0
    assert _count(db_url, Order) == 0
    assert _count(db_url, OrderLine) == 0
    assert _count(db_url, Reservation) == 0


@pytest.mark.parametrize(
    ("lines", "fields"),
    [
        ([], {"lines": "must hold 1 to 100 lines"}),
        ([{"product_id": 1, "quantity": 101}] * 101, {"lines": "must hold 1 to 100 lines"}),
        ([{"product_id": 1}], {"lines[0].quantity": "is required"}),
        ([{"product_id": 1, "quantity": 0}], {"lines[0].quantity": "must be between 1 and 10000"}),
        ([{"product_id": "1", "quantity": 1}], {"lines[0].product_id": "must be an integer"}),
        ([{"product_id": 1, "quantity": 1, "x": 1}], {"lines[0].x": "unknown field"}),
        (["oops"], {"lines[0]": "must be an object"}),
        (
            [{"product_id": 1, "quantity": 1}, {"product_id": 1, "quantity": 2}],
            {"lines[1].product_id": "duplicate product in this order"},
        ),
        ("nope", {"lines": "must be an array"}),
    ],
)
def test_order_body_problems_are_422_naming_each_line_field(client, error, lines, fields):
    response = client.post("/orders", json={"customer_id": 1, "lines": lines})
    assert response.status_code == 422
    assert error(response)["fields"] == fields


def test_order_refers_to_unknown_or_inactive_things_with_422(client, shop, error, db_url):
    customer = shop.customer()
    inactive = shop.product(stock=5, active=False)
    response = client.post(
        "/orders",
        json={
            "customer_id": 9999,
            "lines": [
                {"product_id": 8888, "quantity": 1},
                {"product_id": inactive["id"], "quantity": 1},
            ],
        },
    )
    assert response.status_code == 422
    assert error(response)["fields"] == {
        "customer_id": "does not exist",
        "lines[0].product_id": "does not exist",
        "lines[1].product_id": "is not active",
    }
    usd = shop.product(currency="USD", stock=5)
    eur = shop.product(stock=5)
    mixed = client.post(
        "/orders",
        json={
            "customer_id": customer["id"],
            "lines": [
                {"product_id": usd["id"], "quantity": 1},
                {"product_id": eur["id"], "quantity": 1},
            ],
        },
    )
    assert mixed.status_code == 422
    assert error(mixed)["fields"] == {"lines": "products are priced in more than one currency"}
    assert _count(db_url, Order) == 0


def test_lifecycle_pay_then_ship_commits_the_reservation(client, shop, error) -> None:
    product = shop.product(stock=10)
    order = shop.order(shop.customer()["id"], (product["id"], 4))
    assert client.post(f"/orders/{order['id']}/ship").status_code == 409
    paid = client.post(f"/orders/{order['id']}/pay")
    assert paid.status_code == 200 and paid.get_json()["status"] == "paid"
    assert paid.get_json()["updated_at"] >= order["updated_at"]
    shipped = client.post(f"/orders/{order['id']}/ship")
    assert shipped.get_json()["status"] == "shipped"
    stock = shop.stock(product["id"])
    assert (stock["on_hand"], stock["reserved"]) == (6, 0)
    cancel = client.post(f"/orders/{order['id']}/cancel")
    assert cancel.status_code == 409
    assert error(cancel) == {
        "code": "invalid_state",
        "message": "cannot cancel an order that is shipped",
    }


@pytest.mark.parametrize("first", ["pay", None])
def test_cancel_releases_the_reservation_from_pending_or_paid(client, shop, first) -> None:
    product = shop.product(stock=3)
    order = shop.order(shop.customer()["id"], (product["id"], 3))
    if first:
        client.post(f"/orders/{order['id']}/{first}")
    cancelled = client.post(f"/orders/{order['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.get_json()["status"] == "cancelled"
    stock = shop.stock(product["id"])
    assert (stock["on_hand"], stock["reserved"]) == (3, 0)
    for action in ("pay", "ship", "cancel"):
        assert client.post(f"/orders/{order['id']}/{action}").status_code == 409
    assert shop.stock(product["id"])["reserved"] == 0


def test_actions_on_unknown_orders_are_404_and_get_is_405(client, error) -> None:
    assert client.post("/orders/5/pay").status_code == 404
    wrong_method = client.get("/orders/5/pay")
    assert wrong_method.status_code == 405
    assert error(wrong_method)["code"] == "method_not_allowed"
    assert wrong_method.headers["Allow"] == "OPTIONS, POST"


def test_order_list_filters_and_sorts(client, shop) -> None:
    ada, grace = shop.customer()["id"], shop.customer("g@example.com", "Grace")["id"]
    cheap = shop.product(cents=100, stock=50)["id"]
    dear = shop.product(cents=10_000, stock=50)["id"]
    first = shop.order(ada, (cheap, 1))
    second = shop.order(grace, (dear, 1))
    third = shop.order(ada, (dear, 2))
    client.post(f"/orders/{second['id']}/cancel")

    def ids(query: str) -> list[int]:
        response = client.get(f"/orders?{query}")
        assert response.status_code == 200, response.get_json()
        return [o["id"] for o in response.get_json()["items"]]

    assert ids(f"customer_id={ada}") == [first["id"], third["id"]]
    assert ids("status=cancelled") == [second["id"]]
    assert ids("sort=-total") == [third["id"], second["id"], first["id"]]
    assert ids("sort=-created_at&per_page=1") == [third["id"]]
    assert client.get("/orders?status=lost").status_code == 400
