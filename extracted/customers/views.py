"""HTTP endpoints of the customers service: parse the request, call the service, render JSON."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from extracted.customers import service
from shoplib.db import session
from shoplib.validation import json_body


def customers_blueprint() -> Blueprint:
    """The `/customers*` endpoints, exactly as the monolith serves them."""
    blueprint = Blueprint("customers", __name__)

    @blueprint.get("/customers")
    def list_customers() -> Response:
        return jsonify(service.list_customers(session(), request.args, request.path))

    @blueprint.post("/customers")
    def create_customer() -> tuple[Response, int]:
        return jsonify(service.create_customer(session(), json_body(request))), 201

    @blueprint.get("/customers/<int:customer_id>")
    def get_customer(customer_id: int) -> Response:
        return jsonify(service.get_customer(session(), customer_id))

    @blueprint.patch("/customers/<int:customer_id>")
    def update_customer(customer_id: int) -> Response:
        return jsonify(service.update_customer(session(), customer_id, json_body(request)))

    @blueprint.delete("/customers/<int:customer_id>")
    def delete_customer(customer_id: int) -> tuple[str, int]:
        service.delete_customer(session(), customer_id)
        return "", 204

    return blueprint
