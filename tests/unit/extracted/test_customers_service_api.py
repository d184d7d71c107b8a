"""The customers service serves /customers as docs/api.md describes."""

from __future__ import annotations

import re
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from extracted.customers.models import Customer
from shoplib.db import session

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def _customer(client: FlaskClient, email: str, name: str, **extra: Any) -> dict[str, Any]:
    response = client.post("/customers", json={"email": email, "name": name} | extra)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_created_customer_has_the_contract_shape(customers: FlaskClient) -> None:
    body = _customer(customers, "Ada.Lovelace@example.com", "  Ada Lovelace ", phone="+44 1")
    assert list(body) == ["id", "email", "name", "phone", "created_at", "updated_at"]
    assert body["email"] == "Ada.Lovelace@example.com"
    assert body["name"] == "Ada Lovelace" and body["phone"] == "+44 1"
    assert TIMESTAMP.match(body["created_at"]) and body["created_at"] == body["updated_at"]
    assert customers.get(f"/customers/{body['id']}").get_json() == body


def test_name_is_stored_split_on_the_first_space_and_email_normalised(
    customers_app: Flask, customers: FlaskClient
) -> None:
    _customer(customers, "Mary@Example.com", "Mary Ann  Smith")
    _customer(customers, "cher@example.com", "Cher")
    with customers_app.app_context():
        rows = session().execute(
            select(Customer.given_name, Customer.family_name, Customer.email_normalized)
        )
        assert [tuple(r) for r in rows] == [
            ("Mary", "Ann  Smith", "mary@example.com"),
            ("Cher", None, "cher@example.com"),
        ]
    names = [c["name"] for c in customers.get("/customers").get_json()["items"]]
    assert names == ["Mary Ann  Smith", "Cher"]


def test_duplicate_email_in_any_case_is_a_conflict(customers: FlaskClient) -> None:
    _customer(customers, "ada@example.com", "Ada")
    response = customers.post("/customers", json={"email": "ADA@example.COM", "name": "Other"})
    assert response.status_code == 409
    assert response.get_json() == {
        "error": {
            "code": "conflict",
            "message": "a customer with email ADA@example.COM already exists",
            "fields": {"email": "already exists"},
        }
    }


def test_patch_may_recase_own_email_but_not_take_anothers(customers: FlaskClient) -> None:
    ada = _customer(customers, "ada@example.com", "Ada")
    _customer(customers, "bob@example.com", "Bob")
    response = customers.patch(f"/customers/{ada['id']}", json={"email": "ADA@example.com"})
    assert response.status_code == 200 and response.get_json()["email"] == "ADA@example.com"
    response = customers.patch(f"/customers/{ada['id']}", json={"email": "Bob@example.com"})
    assert response.status_code == 409
    response = customers.patch(
        f"/customers/{ada['id']}", json={"name": " Ada King ", "phone": None}
    )
    assert response.get_json()["name"] == "Ada King" and response.get_json()["phone"] is None


def test_bad_customer_bodies_name_each_field(customers: FlaskClient) -> None:
    response = customers.post(
        "/customers", json={"email": "a@b@c", "name": "   ", "phone": "1" * 33, "age": 3}
    )
    assert response.status_code == 422
    assert response.get_json()["error"]["fields"] == {
        "age": "unknown field",
        "email": "must be an email address with exactly one @",
        "name": "must be 1 to 200 characters",
        "phone": "must be 0 to 32 characters",
    }
    response = customers.post("/customers", json={"email": 5})
    assert response.get_json()["error"]["fields"] == {
        "email": "must be a string",
        "name": "is required",
    }
    assert customers.post("/customers", json={"email": "@x", "name": "A"}).status_code == 422


def test_email_filter_is_exact_and_case_insensitive(customers: FlaskClient) -> None:
    _customer(customers, "Ada@Example.com", "Ada")
    _customer(customers, "ada@example.org", "Ada Two")
    body = customers.get("/customers?email=ADA@EXAMPLE.COM").get_json()
    assert [c["email"] for c in body["items"]] == ["Ada@Example.com"]
    assert body["total"] == 1
    assert customers.get("/customers?email=ada@example").get_json()["total"] == 0


def test_sort_by_name_follows_the_joined_name_with_ties_by_id(customers: FlaskClient) -> None:
    for index, name in enumerate(["Bob Z", "Al", "Al\tB", "Al B", "Bob Z", "Al-C", "al a"]):
        _customer(customers, f"c{index}@x.io", name)
    body = customers.get("/customers?sort=name").get_json()
    # plain code-point order of the whole name, exactly as the monolith sorts `full_name`
    expected = sorted(
        [(c["name"], c["id"]) for c in body["items"]], key=lambda pair: (pair[0], pair[1])
    )
    assert [(c["name"], c["id"]) for c in body["items"]] == expected
    descending = customers.get("/customers?sort=-name").get_json()["items"]
    assert [c["name"] for c in descending][:3] == ["al a", "Bob Z", "Bob Z"]
    assert [c["id"] for c in descending][1:3] == [1, 5]


def test_q_filter_matches_a_substring_of_the_whole_name(customers: FlaskClient) -> None:
    _customer(customers, "a@x.io", "Mary Ann Smith")
    _customer(customers, "b@x.io", "Annie")
    _customer(customers, "c@x.io", "Bob")
    names = [c["name"] for c in customers.get("/customers?q=y an").get_json()["items"]]
    assert names == ["Mary Ann Smith"]
    assert customers.get("/customers?q=ANN").get_json()["total"] == 2


def test_delete_erases_and_then_404s(customers: FlaskClient) -> None:
    ada = _customer(customers, "ada@example.com", "Ada")
    assert customers.delete(f"/customers/{ada['id']}").status_code == 204
    assert customers.get(f"/customers/{ada['id']}").get_json() == {
        "error": {"code": "not_found", "message": f"customer {ada['id']} not found"}
    }
    assert customers.delete(f"/customers/{ada['id']}").status_code == 404
    # the address is free again
    _customer(customers, "ADA@example.com", "Ada")


def test_list_queries_are_validated_and_paginated(customers: FlaskClient) -> None:
    for index in range(5):
        _customer(customers, f"c{index}@x.io", f"Name {index}")
    body = customers.get("/customers?per_page=2&page=2&sort=-created_at&q=name").get_json()
    assert body["page"] == 2 and body["total"] == 5
    assert body["next"] == "/customers?page=3&per_page=2&q=name&sort=-created_at"
    assert body["prev"] == "/customers?page=1&per_page=2&q=name&sort=-created_at"
    response = customers.get("/customers?sort=phone&per_page=x")
    assert response.status_code == 400
    assert response.get_json()["error"]["fields"] == {
        "per_page": "must be an integer",
        "sort": "must be one of id, name, email, created_at (prefix - for descending)",
    }


def test_openapi_and_health(customers_app: Flask, customers: FlaskClient) -> None:
    from extracted.customers.openapi import openapi_document
    from shoplib.openapi import undocumented_routes

    assert undocumented_routes(customers_app, openapi_document()) == []
    assert customers.get("/readyz").status_code == 200
    assert customers.get("/customers/1/orders").status_code == 404
    assert customers.post("/customers/1").status_code == 405
