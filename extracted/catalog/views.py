"""HTTP endpoints of the catalog service: parse the request, call the service, render JSON."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from extracted.catalog import service
from shoplib.db import session
from shoplib.validation import json_body


def catalog_blueprint() -> Blueprint:
    """The `/categories*` and `/products*` endpoints, exactly as the monolith serves them."""
    blueprint = Blueprint("catalog", __name__)

    @blueprint.get("/categories")
    def list_categories() -> Response:
        return jsonify(service.list_categories(session(), request.args, request.path))

    @blueprint.post("/categories")
    def create_category() -> tuple[Response, int]:
        return jsonify(service.create_category(session(), json_body(request))), 201

    @blueprint.get("/categories/<int:category_id>")
    def get_category(category_id: int) -> Response:
        return jsonify(service.get_category(session(), category_id))

    @blueprint.get("/products")
    def list_products() -> Response:
        return jsonify(service.list_products(session(), request.args, request.path))

    @blueprint.post("/products")
    def create_product() -> tuple[Response, int]:
        return jsonify(service.create_product(session(), json_body(request))), 201

    @blueprint.get("/products/<int:product_id>")
    def get_product(product_id: int) -> Response:
        return jsonify(service.get_product(session(), product_id))

    @blueprint.patch("/products/<int:product_id>")
    def update_product(product_id: int) -> Response:
        return jsonify(service.update_product(session(), product_id, json_body(request)))

    @blueprint.delete("/products/<int:product_id>")
    def delete_product(product_id: int) -> tuple[str, int]:
        service.delete_product(session(), product_id)
        return "", 204

    return blueprint
