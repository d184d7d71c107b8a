"""The catalog service's OpenAPI 3 document: only the endpoints this service owns."""

from __future__ import annotations

from typing import Any

from extracted.catalog.service import CATEGORY_SORTS, PRODUCT_SORTS
from shoplib import openapi as oa

CATEGORY = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": "string", "maxLength": 100},
        "parent_id": {"type": ["integer", "null"]},
        "created_at": {"type": "string", "format": "date-time"},
    },
}
PRODUCT = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "sku": {"type": "string", "pattern": "^[A-Z0-9-]{1,64}$"},
        "name": {"type": "string", "maxLength": 200},
        "description": {"type": "string"},
        "category_id": {"type": "integer"},
        "price": {"$ref": "#/components/schemas/Money"},
        "active": {"type": "boolean"},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
    },
}


def openapi_document() -> dict[str, Any]:
    """The document served at `/openapi.json`."""
    paths = {
        "/categories": {
            "get": {
                "summary": "list categories (filter parent_id)",
                "parameters": [*oa.list_params(tuple(CATEGORY_SORTS)), oa.query_param("parent_id")],
                "responses": {
                    "200": oa.json_response(oa.page_of("Category")),
                    **oa.error_responses(400),
                },
            },
            "post": {
                "summary": "create a category",
                "requestBody": oa.json_body(),
                "responses": {
                    "201": oa.json_response("Category", "created"),
                    **oa.error_responses(400, 415, 422),
                },
            },
        },
        "/categories/{category_id}": {
            "get": {
                "summary": "one category",
                "parameters": [oa.path_id("category_id")],
                "responses": {"200": oa.json_response("Category"), **oa.error_responses(404)},
            }
        },
        "/products": {
            "get": {
                "summary": "list products",
                "parameters": [
                    *oa.list_params(tuple(PRODUCT_SORTS)),
                    oa.query_param("category_id"),
                    oa.query_param("active", "boolean"),
                    oa.query_param("min_price"),
                    oa.query_param("max_price"),
                    oa.query_param("q", "string"),
                ],
                "responses": {
                    "200": oa.json_response(oa.page_of("Product")),
                    **oa.error_responses(400),
                },
            },
            "post": {
                "summary": "create a product",
                "requestBody": oa.json_body(),
                "responses": {
                    "201": oa.json_response("Product", "created"),
                    **oa.error_responses(400, 409, 415, 422),
                },
            },
        },
        "/products/{product_id}": {
            "get": {
                "summary": "one product",
                "parameters": [oa.path_id("product_id")],
                "responses": {"200": oa.json_response("Product"), **oa.error_responses(404)},
            },
            "patch": {
                "summary": "change name, description, category_id, price or active",
                "parameters": [oa.path_id("product_id")],
                "requestBody": oa.json_body(),
                "responses": {
                    "200": oa.json_response("Product"),
                    **oa.error_responses(400, 404, 415, 422),
                },
            },
            "delete": {
                "summary": "delete an inactive product",
                "parameters": [oa.path_id("product_id")],
                "responses": {"204": {"description": "deleted"}, **oa.error_responses(404, 409)},
            },
        },
    }
    schemas = {
        "Money": oa.money_schema(),
        "Error": oa.error_schema(),
        "Category": CATEGORY,
        "Product": PRODUCT,
    }
    return oa.service_document("catalog service", paths, schemas)
