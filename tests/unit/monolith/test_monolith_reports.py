"""Reports: sales per category and top products, computed through the modules' services."""

from __future__ import annotations

import datetime as dt


def _today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


def test_sales_by_category_counts_orders_units_and_revenue(client, shop) -> None:
    garden, kitchen = shop.category("Garden")["id"], shop.category("Kitchen")["id"]
    bench = shop.product(garden, cents=1000, stock=50)["id"]
    chair = shop.product(garden, cents=300, stock=50)["id"]
    pan = shop.product(kitchen, cents=2500, stock=50)["id"]
    customer = shop.customer()["id"]
    shop.order(customer, (bench, 1), (chair, 2))  # garden 1600, one order
    shop.order(customer, (pan, 1))  # kitchen 2500
    cancelled = shop.order(customer, (pan, 5))
    client.post(f"/orders/{cancelled['id']}/cancel")
    gone = shop.product(garden, cents=700, stock=5)
    shop.order(customer, (gone["id"], 1))
    client.patch(f"/products/{gone['id']}", json={"active": False})
    client.delete(f"/products/{gone['id']}")

    day = _today()
    report = client.get(f"/reports/sales-by-category?from={day}&to={day}").get_json()
    assert report == {
        "from": day,
        "to": day,
        "currency": "EUR",
        "rows": [
            {"category_id": kitchen, "category_name": "Kitchen", "orders": 1, "units": 1,
             "revenue": {"cents": 2500, "currency": "EUR"}},
            {"category_id": garden, "category_name": "Garden", "orders": 1, "units": 3,
             "revenue": {"cents": 1600, "currency": "EUR"}},
            {"category_id": None, "category_name": "(deleted products)", "orders": 1,
             "units": 1, "revenue": {"cents": 700, "currency": "EUR"}},
        ],
    }  # fmt: skip
    empty = client.get("/reports/sales-by-category?from=2001-01-01&to=2001-12-31").get_json()
    assert empty["rows"] == []


def test_top_products_ranks_by_revenue(client, shop) -> None:
    a = shop.product(cents=100, stock=50)["id"]
    b = shop.product(cents=1000, stock=50)["id"]
    c = shop.product(cents=1000, stock=50)["id"]
    customer = shop.customer()["id"]
    shop.order(customer, (a, 5), (b, 1))
    shop.order(customer, (c, 1))
    day = _today()
    report = client.get(f"/reports/top-products?from={day}&to={day}&limit=2").get_json()
    assert [row["product_id"] for row in report["rows"]] == [b, c]
    assert report["rows"][0] == {
        "product_id": b,
        "name": "Product 2",
        "units": 1,
        "revenue": {"cents": 1000, "currency": "EUR"},
    }


def test_report_query_problems_are_400(client, error) -> None:
    cases = {
        "": {"from": "is required (YYYY-MM-DD)", "to": "is required (YYYY-MM-DD)"},
        "?from=2026-02-30&to=2026-03-01": {"from": "must be a YYYY-MM-DD date"},
        "?from=2026-03-02&to=2026-03-01": {"to": "must not be before from"},
        "?from=2026-03-01&to=2026-03-01&currency=eur": {
            "currency": "must be three upper-case letters"
        },
    }
    for query, fields in cases.items():
        response = client.get(f"/reports/sales-by-category{query}")
        assert response.status_code == 400, query
        assert error(response) == {
            "code": "invalid_query",
            "message": "query parameters are invalid",
            "fields": fields,
        }
    limit = client.get("/reports/top-products?from=2026-01-01&to=2026-01-02&limit=101")
    assert error(limit)["fields"] == {"limit": "must be at most 100"}
