"""The catalog service answers /categories and /products exactly as the monolith does, on
data loaded from the monolith through extracted/catalog/mapping.toml.
"""

from __future__ import annotations

import pytest

from tests.contract.conftest import Databases, Sides
from tests.contract.harness import compare

READS = [
    "/categories",
    "/categories?sort=-name",
    "/categories?sort=name&per_page=3&page=2",
    "/categories?parent_id=1",
    "/categories?parent_id=2&sort=-id",
    "/categories/1",
    "/categories/3",
    "/categories/999999",
    "/categories/0",
    "/products",
    "/products?page=2",
    "/products?page=3&per_page=7",
    "/products?page=999",
    "/products?per_page=100&sort=price",
    "/products?per_page=100&sort=-price",
    "/products?per_page=50&sort=name&page=2",
    "/products?sort=-name",
    "/products?sort=created_at&per_page=30",
    "/products?sort=-created_at&per_page=30&page=3",
    "/products?category_id=2&per_page=100",
    "/products?category_id=1&active=false&sort=-price",
    "/products?active=true&min_price=1000&max_price=20000&sort=price",
    "/products?active=0&per_page=100",
    "/products?min_price=12999&max_price=12999",
    "/products?max_price=0",
    "/products?q=oak",
    "/products?q=OAK&sort=-price",
    "/products?q=100%25",
    "/products?q=_",
    "/products?q=%C3%A4pfel",
    "/products?q=&category_id=",
    "/products/1",
    "/products/7",
    "/products/121",
    "/products/999999",
    "/products/99999999999999",
    "/nowhere",
]

BAD_QUERIES = [
    "/products?page=0",
    "/products?per_page=1000",
    "/products?per_page=0&page=-1",
    "/products?sort=colour",
    "/products?sort=-sku",
    "/products?active=maybe",
    "/products?min_price=-1&max_price=x",
    "/products?category_id=abc",
    "/products?category_id=99999999999999999999",
    "/products?q=" + "x" * 201,
    "/categories?parent_id=0",
    "/categories?sort=price",
]


def test_the_data_was_loaded_through_the_mapping(seeded_databases: Databases) -> None:
    assert seeded_databases.loaded["catalog_product"] >= 120
    assert seeded_databases.loaded["catalog_category"] >= 4


@pytest.mark.parametrize("path", READS + BAD_QUERIES)
def test_reads_answer_alike(catalog_sides: Sides, path: str) -> None:
    compare(catalog_sides.monolith, catalog_sides.service, "GET", path)


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("PUT", "/products", {}),
        ("DELETE", "/categories/1", {}),
        ("POST", "/categories", {"data": "{", "content_type": "application/json"}),
        ("POST", "/categories", {"json": [1, 2]}),
        ("POST", "/products", {"data": "sku=A", "content_type": "text/plain"}),
        ("POST", "/categories", {"json": {}}),
        ("POST", "/categories", {"json": {"name": "", "parent_id": "1", "x": 1}}),
        ("POST", "/categories", {"json": {"name": "n" * 101, "parent_id": 0}}),
        ("POST", "/categories", {"json": {"name": "Orphan", "parent_id": 99999}}),
        ("POST", "/products", {"json": {"sku": "bad sku", "name": 5, "price": {"cents": 1.5}}}),
        (
            "POST",
            "/products",
            {
                "json": {
                    "sku": "S-" + "9" * 63,
                    "name": "x",
                    "category_id": 99999,
                    "price": {"cents": 2**31, "currency": "eur", "tax": 1},
                    "active": "yes",
                    "description": None,
                }
            },
        ),
        (
            "POST",
            "/products",
            {
                "json": {
                    "sku": "N",
                    "name": "x",
                    "category_id": 1,
                    "price": {"cents": 1, "currency": "EUR\n"},
                }
            },
        ),
        ("PATCH", "/products/1", {"json": {}}),
        ("PATCH", "/products/1", {"json": {"sku": "NEW", "price": None}}),
        ("PATCH", "/products/1", {"json": {"category_id": 99999}}),
        ("PATCH", "/products/999999", {"json": {"name": "x"}}),
        ("PATCH", "/products/999999", {"json": {"name": ""}}),
        ("PATCH", "/products/999999", {"json": {}}),
        ("PATCH", "/products/999999", {"data": "{", "content_type": "application/json"}),
        ("PATCH", "/products/1", {"data": "x", "content_type": "application/xml"}),
        ("DELETE", "/products/999999", {}),
    ],
)
def test_refused_requests_answer_alike(
    catalog_write_sides: Sides, method: str, path: str, kwargs: dict
) -> None:
    compare(catalog_write_sides.monolith, catalog_write_sides.service, method, path, **kwargs)


def test_a_product_lifecycle_answers_alike(catalog_write_sides: Sides) -> None:
    monolith, service = catalog_write_sides.monolith, catalog_write_sides.service
    steps = [
        ("POST", "/categories", {"name": "Contract", "parent_id": 1}),
        ("POST", "/categories", {"name": "Contract root"}),
        ("GET", "/categories?sort=-id&per_page=2", None),
        ("POST", "/products", {"sku": "C-1", "name": "Contract Bench", "category_id": 1,
                               "price": {"cents": 4200, "currency": "EUR"}}),
        ("POST", "/products", {"sku": "C-1", "name": "Again", "category_id": 1,
                               "price": {"cents": 1, "currency": "EUR"}}),
        ("POST", "/products", {"sku": "C-2", "name": "Hidden", "category_id": 2,
                               "price": {"cents": 4200, "currency": "USD"}, "active": False,
                               "description": "not listed"}),
        ("GET", "/products?min_price=4200&max_price=4200&sort=-id", None),
        ("PATCH", "/products/1", {"name": "Renamed Product", "price": {"cents": 1, "currency": "GBP"}}),
        ("GET", "/products/1", None),
        ("GET", "/products?q=renamed", None),
        ("DELETE", "/products/1", None),
        ("PATCH", "/products/1", {"active": False}),
        ("DELETE", "/products/1", None),
        ("GET", "/products/1", None),
        ("DELETE", "/products/1", None),
        ("GET", "/products?sort=-price&per_page=5", None),
    ]  # fmt: skip
    for method, path, body in steps:
        kwargs = {"json": body} if body is not None else {}
        compare(monolith, service, method, path, **kwargs)
    # the newest product is deleted too, and the next one reuses nothing unexpected
    last = compare(monolith, service, "GET", "/products?sort=-id&per_page=1").monolith.get_json()
    newest = last["items"][0]["id"]
    compare(monolith, service, "PATCH", f"/products/{newest}", json={"active": False})
    compare(monolith, service, "DELETE", f"/products/{newest}")
    compare(
        monolith,
        service,
        "POST",
        "/products",
        json={"sku": "C-3", "name": "After delete", "category_id": 1,
              "price": {"cents": 0, "currency": "EUR"}},
    )  # fmt: skip
