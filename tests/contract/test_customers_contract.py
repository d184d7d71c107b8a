"""The customers service answers /customers exactly as the monolith does, on data loaded
from the monolith through extracted/customers/mapping.toml.
"""

from __future__ import annotations

import pytest

from tests.contract.conftest import Databases, Sides
from tests.contract.harness import compare

READS = [
    "/customers",
    "/customers?page=2&per_page=15",
    "/customers?page=99",
    "/customers?sort=name&per_page=100",
    "/customers?sort=-name&per_page=100",
    "/customers?sort=email&per_page=40&page=2",
    "/customers?sort=-email",
    "/customers?sort=created_at&per_page=25",
    "/customers?sort=-created_at&page=3&per_page=10",
    "/customers?email=mary.ann@example.com",
    "/customers?email=MARY.ANN@EXAMPLE.COM",
    "/customers?email=cher@example.com&sort=-id",
    "/customers?email=nobody@example.com",
    "/customers?q=an",
    "/customers?q=AN&sort=name",
    "/customers?q=%25",
    "/customers?q=_",
    "/customers?q=al%09b",
    "/customers?q=zo%C3%AB",
    "/customers?q=jean-luc%20%20p",
    "/customers/1",
    "/customers/80",
    "/customers/81",
    "/customers/999999",
    "/customers/0",
    "/customers/99999999999999",
]

BAD_QUERIES = [
    "/customers?page=0",
    "/customers?per_page=101",
    "/customers?sort=phone",
    "/customers?sort=-full_name&page=x",
    "/customers?email=" + "a" * 255,
    "/customers?q=" + "b" * 201,
]


def test_the_data_was_loaded_through_the_mapping(seeded_databases: Databases) -> None:
    assert seeded_databases.loaded["customer"] >= 80


@pytest.mark.parametrize("path", READS + BAD_QUERIES)
def test_reads_answer_alike(customers_sides: Sides, path: str) -> None:
    compare(customers_sides.monolith, customers_sides.service, "GET", path)


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("PUT", "/customers/1", {}),
        ("POST", "/customers", {"data": "[", "content_type": "application/json"}),
        ("POST", "/customers", {"json": "just a string"}),
        (
            "POST",
            "/customers",
            {"data": "email=a", "content_type": "application/x-www-form-urlencoded"},
        ),
        ("POST", "/customers", {"json": {}}),
        ("POST", "/customers", {"json": {"email": "no-at-sign", "name": " ", "phone": 5}}),
        ("POST", "/customers", {"json": {"email": "a@b@c", "name": "x" * 201, "vip": True}}),
        ("POST", "/customers", {"json": {"email": "@b", "name": "A"}}),
        ("POST", "/customers", {"json": {"email": "a" * 250 + "@b.io", "name": "A"}}),
        ("POST", "/customers", {"json": {"email": "MARY.ANN@example.com", "name": "Dup"}}),
        ("PATCH", "/customers/1", {"json": {}}),
        ("PATCH", "/customers/1", {"json": {"email": None, "id": 3}}),
        ("PATCH", "/customers/1", {"json": {"email": "Cher@Example.com"}}),
        ("PATCH", "/customers/999999", {"json": {"name": "x"}}),
        ("PATCH", "/customers/999999", {"json": {"name": "  "}}),
        ("PATCH", "/customers/999999", {"json": {"email": "Cher@example.com"}}),
        ("PATCH", "/customers/999999", {"data": "x", "content_type": "text/plain"}),
        ("DELETE", "/customers/999999", {}),
    ],
)
def test_refused_requests_answer_alike(
    customers_write_sides: Sides, method: str, path: str, kwargs: dict
) -> None:
    compare(customers_write_sides.monolith, customers_write_sides.service, method, path, **kwargs)


def test_a_customer_lifecycle_answers_alike(customers_write_sides: Sides) -> None:
    monolith, service = customers_write_sides.monolith, customers_write_sides.service
    steps = [
        ("POST", "/customers", {"email": "New.Person@Example.com", "name": "  Ada  King  Lovelace ",
                                "phone": "+44 20 7946 0000"}),
        ("POST", "/customers", {"email": "new.person@example.COM", "name": "Dup"}),
        ("POST", "/customers", {"email": "solo@example.com", "name": "Solo", "phone": None}),
        ("GET", "/customers?email=NEW.PERSON@EXAMPLE.COM", None),
        ("GET", "/customers?sort=-id&per_page=3", None),
        ("GET", "/customers?q=king%20%20l", None),
        ("PATCH", "/customers/1", {"name": "Renamed Person", "email": "RENAMED@example.com"}),
        ("PATCH", "/customers/1", {"email": "renamed@EXAMPLE.com", "phone": None}),
        ("GET", "/customers/1", None),
        ("GET", "/customers?sort=name&per_page=100", None),
        ("DELETE", "/customers/1", None),
        ("GET", "/customers/1", None),
        ("POST", "/customers", {"email": "renamed@example.com", "name": "Reuses The Address"}),
        ("DELETE", "/customers/1", None),
    ]  # fmt: skip
    for method, path, body in steps:
        kwargs = {"json": body} if body is not None else {}
        compare(monolith, service, method, path, **kwargs)
    newest = compare(monolith, service, "GET", "/customers?sort=-id&per_page=1")
    newest_id = newest.monolith.get_json()["items"][0]["id"]
    compare(monolith, service, "DELETE", f"/customers/{newest_id}")
    compare(monolith, service, "POST", "/customers", json={"email": "z@z.io", "name": "Z"})
