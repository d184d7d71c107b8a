"""Catalog HTTP endpoints: thin views that parse the request and call the catalog service."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from monolith.catalog import service
from monolith.db import MAX_INT
from monolith.web import ID_CHECK, between, json_response, list_response, no_content
from shoplib.db import session, transaction
from shoplib.pagination import QueryArgs
from shoplib.validation import Field, json_body, length, pattern, validate

CATEGORY_CREATE = {
    "name": Field("string", required=True, checks=(length(1, 100),)),
    "parent_id": Field("integer", nullable=True, checks=(ID_CHECK,)),
}

_PRICE = Field("money", required=True, checks=(lambda v: between(0, MAX_INT)(v["cents"]),))
PRODUCT_CREATE = {
    "sku": Field(
        "string", required=True, checks=(pattern(r"[A-Z0-9-]{1,64}", "1 to 64 of A-Z 0-9 -"),)
    ),
    "name": Field("string", required=True, checks=(length(1, 200),)),
    "description": Field("string", checks=(length(0, 100_000),)),
    "category_id": Field("integer", required=True, checks=(ID_CHECK,)),
    "price": _PRICE,
    "active": Field("boolean"),
}
PRODUCT_PATCH = {name: PRODUCT_CREATE[name] for name in PRODUCT_CREATE if name != "sku"}


def catalog_blueprint() -> Blueprint:
    """`/categories` and `/products`."""
    blueprint = Blueprint("catalog", __name__)

    @blueprint.get("/categories")
    def list_categories() -> Any:
        args = QueryArgs(request.args)
        page = args.page(service.CATEGORY_SORTS)
        parent_id = args.integer("parent_id", minimum=1)
        args.finish()
        items, total = service.list_categories(session(), page, parent_id)
        return list_response(items, total, page)

    @blueprint.post("/categories")
    def create_category() -> Any:
        data = validate(json_body(request), CATEGORY_CREATE)
        with transaction() as db:
            created = service.create_category(db, data["name"], data.get("parent_id"))
        return json_response(created, 201)

    @blueprint.get("/categories/<int:id>")
    def get_category(id: int) -> Any:
        return json_response(service.get_category(session(), id))

    @blueprint.get("/products")
    def list_products() -> Any:
        args = QueryArgs(request.args)
        page = args.page(service.PRODUCT_SORTS)
        filters = service.ProductFilter(
            category_id=args.integer("category_id", minimum=1),
            active=args.boolean("active"),
            min_price=args.integer("min_price", minimum=0),
            max_price=args.integer("max_price", minimum=0),
            q=args.text("q"),
        )
        args.finish()
        items, total = service.list_products(session(), page, filters)
        return list_response(items, total, page)

    @blueprint.post("/products")
    def create_product() -> Any:
        data = validate(json_body(request), PRODUCT_CREATE)
        with transaction() as db:
            created = service.create_product(db, data)
        return json_response(created, 201)

    @blueprint.get("/products/<int:id>")
    def get_product(id: int) -> Any:
        return json_response(service.get_product(session(), id))

    @blueprint.patch("/products/<int:id>")
    def update_product(id: int) -> Any:
        changes = validate(json_body(request), PRODUCT_PATCH, partial=True, immutable=("sku",))
        with transaction() as db:
            updated = service.update_product(db, id, changes)
        return json_response(updated)

    @blueprint.delete("/products/<int:id>")
    def delete_product(id: int) -> Any:
        with transaction() as db:
            service.delete_product(db, id)
        return no_content()

    return blueprint
