"""Orders HTTP endpoints: thin views over the orders service."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from monolith.orders import service
from monolith.web import ID_CHECK, between, json_response, list_response
from shoplib.db import session, transaction
from shoplib.errors import ApiError, validation_error
from shoplib.pagination import QueryArgs
from shoplib.validation import Field, json_body, validate

MAX_LINES = 100
MAX_QUANTITY = 10_000

ORDER_CREATE = {
    "customer_id": Field("integer", required=True, checks=(ID_CHECK,)),
    "lines": Field(
        "array",
        required=True,
        checks=(
            lambda v: None if 1 <= len(v) <= MAX_LINES else f"must hold 1 to {MAX_LINES} lines",
        ),
    ),
}
ORDER_LINE = {
    "product_id": Field("integer", required=True, checks=(ID_CHECK,)),
    "quantity": Field("integer", required=True, checks=(between(1, MAX_QUANTITY),)),
}


def parse_order(payload: dict[str, Any]) -> tuple[int, list[tuple[int, int]]]:
    """Validate an order body; every bad field, in lines too, is named in one 422."""
    problems: dict[str, str] = {}
    try:
        data = validate(payload, ORDER_CREATE)
    except ApiError as error:
        problems.update(error.fields or {})
        data = {}
    lines: list[tuple[int, int]] = []
    seen: set[int] = set()
    raw_lines = payload.get("lines")
    if isinstance(raw_lines, list) and "lines" not in problems:
        for index, raw in enumerate(raw_lines):
            prefix = f"lines[{index}]"
            if not isinstance(raw, dict):
                problems[prefix] = "must be an object"
                continue
            try:
                line = validate(raw, ORDER_LINE)
            except ApiError as error:
                problems.update({f"{prefix}.{k}": v for k, v in (error.fields or {}).items()})
                continue
            if line["product_id"] in seen:
                problems[f"{prefix}.product_id"] = "duplicate product in this order"
                continue
            seen.add(line["product_id"])
            lines.append((line["product_id"], line["quantity"]))
    if problems:
        raise validation_error(problems)
    return data["customer_id"], lines


def orders_blueprint() -> Blueprint:
    """`/orders` and the lifecycle actions."""
    blueprint = Blueprint("orders", __name__)

    @blueprint.get("/orders")
    def list_orders() -> Any:
        args = QueryArgs(request.args)
        page = args.page(service.ORDER_SORTS)
        filters = service.OrderFilter(
            customer_id=args.integer("customer_id", minimum=1),
            status=args.choice("status", service.ORDER_STATUSES),
        )
        args.finish()
        items, total = service.list_orders(session(), page, filters)
        return list_response(items, total, page)

    @blueprint.post("/orders")
    def place_order() -> Any:
        customer_id, lines = parse_order(json_body(request))
        with transaction() as db:
            order = service.place_order(db, customer_id, lines)
        return json_response(order, 201)

    @blueprint.get("/orders/<int:id>")
    def get_order(id: int) -> Any:
        return json_response(service.get_order(session(), id))

    def action_view(action: str) -> Any:
        def view(id: int) -> Any:
            with transaction() as db:
                return json_response(service.transition(db, id, action))

        view.__name__ = f"{action}_order"
        return view

    for action in service.TRANSITIONS:
        blueprint.add_url_rule(
            f"/orders/<int:id>/{action}", view_func=action_view(action), methods=["POST"]
        )

    return blueprint
