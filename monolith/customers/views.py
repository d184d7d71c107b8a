"""Customers HTTP endpoints: thin views over the customers service."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from monolith.customers import service
from monolith.web import json_response, list_response, no_content, stripped_length
from shoplib.db import session, transaction
from shoplib.pagination import QueryArgs
from shoplib.validation import Field, json_body, length, validate


def _email(value: str) -> str | None:
    local, at, domain = value.partition("@")
    if not at or not local or not domain or "@" in domain:
        return "must be an email address with exactly one @"
    return None


CUSTOMER_CREATE = {
    "email": Field("string", required=True, checks=(length(3, 254), _email)),
    "name": Field("string", required=True, checks=(stripped_length(1, 200),)),
    "phone": Field("string", nullable=True, checks=(length(0, 32),)),
}


def customers_blueprint() -> Blueprint:
    """`/customers`."""
    blueprint = Blueprint("customers", __name__)

    @blueprint.get("/customers")
    def list_customers() -> Any:
        args = QueryArgs(request.args)
        page = args.page(service.CUSTOMER_SORTS)
        filters = service.CustomerFilter(email=args.text("email", 254), q=args.text("q"))
        args.finish()
        items, total = service.list_customers(session(), page, filters)
        return list_response(items, total, page)

    @blueprint.post("/customers")
    def create_customer() -> Any:
        data = validate(json_body(request), CUSTOMER_CREATE)
        with transaction() as db:
            created = service.create_customer(db, data)
        return json_response(created, 201)

    @blueprint.get("/customers/<int:id>")
    def get_customer(id: int) -> Any:
        return json_response(service.get_customer(session(), id))

    @blueprint.patch("/customers/<int:id>")
    def update_customer(id: int) -> Any:
        changes = validate(json_body(request), CUSTOMER_CREATE, partial=True)
        with transaction() as db:
            updated = service.update_customer(db, id, changes)
        return json_response(updated)

    @blueprint.delete("/customers/<int:id>")
    def delete_customer(id: int) -> Any:
        with transaction() as db:
            service.delete_customer(db, id)
        return no_content()

    return blueprint
