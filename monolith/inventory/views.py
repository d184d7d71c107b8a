"""Inventory HTTP endpoints: thin views over the inventory service."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from monolith.db import MAX_INT
from monolith.inventory import service
from monolith.web import between, json_response, list_response
from shoplib.db import session, transaction
from shoplib.pagination import QueryArgs
from shoplib.validation import Field, json_body, validate

STOCK_SET = {"on_hand": Field("integer", required=True, checks=(between(0, MAX_INT),))}
STOCK_ADJUST = {"delta": Field("integer", required=True, checks=(between(-MAX_INT, MAX_INT),))}


def inventory_blueprint() -> Blueprint:
    """`/inventory`."""
    blueprint = Blueprint("inventory", __name__)

    @blueprint.get("/inventory")
    def list_stock() -> Any:
        args = QueryArgs(request.args)
        page = args.page(service.STOCK_SORTS, default_sort="product_id")
        below = args.integer("below", minimum=0)
        args.finish()
        items, total = service.list_stock(session(), page, below)
        return list_response(items, total, page)

    @blueprint.get("/inventory/<int:product_id>")
    def get_stock(product_id: int) -> Any:
        return json_response(service.get_stock(session(), product_id))

    @blueprint.put("/inventory/<int:product_id>")
    def set_stock(product_id: int) -> Any:
        data = validate(json_body(request), STOCK_SET)
        with transaction() as db:
            result = service.set_on_hand(db, product_id, data["on_hand"])
        return json_response(result)

    @blueprint.post("/inventory/<int:product_id>/adjust")
    def adjust_stock(product_id: int) -> Any:
        data = validate(json_body(request), STOCK_ADJUST)
        with transaction() as db:
            result = service.adjust(db, product_id, data["delta"])
        return json_response(result)

    return blueprint
