"""The catalog service's OpenAPI 3 document: only the endpoints this service owns."""

from __future__ import annotations

from typing import Any

MONEY = {
    "type": "object",
    "required": ["cents", "currency"],
    "properties": {
        "cents": {"type": "integer", "minimum": 0},
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
    },
}
ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "fields": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        }
    },
}
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


def _page_of(schema: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"$ref": f"#/components/schemas/{schema}"}},
            "page": {"type": "integer"},
            "per_page": {"type": "integer"},
            "total": {"type": "integer"},
            "next": {"type": ["string", "null"]},
            "prev": {"type": ["string", "null"]},
        },
    }


def _json(schema: str | dict[str, Any], description: str = "OK") -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{schema}"} if isinstance(schema, str) else schema
    return {"description": description, "content": {"application/json": {"schema": ref}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): _json("Error", "error") for status in statuses}


def _query(name: str, kind: str = "integer") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": {"type": kind}}


def _id(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "integer"}}


_LIST_PARAMS = [_query("page"), _query("per_page"), _query("sort", "string")]


def openapi_document() -> dict[str, Any]:
    """The document served at `/openapi.json`."""
    body = {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}
    health = {"get": {"summary": "liveness", "responses": {"200": _json({"type": "object"})}}}
    ready = {
        "get": {
            "summary": "readiness (database answers)",
            "responses": {"200": _json({"type": "object"}), "503": _json({"type": "object"})},
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "catalog service", "version": "1.0.0"},
        "paths": {
            "/healthz": health,
            "/readyz": ready,
            "/categories": {
                "get": {
                    "summary": "list categories (sort id, name; filter parent_id)",
                    "parameters": [*_LIST_PARAMS, _query("parent_id")],
                    "responses": {"200": _json(_page_of("Category")), **_errors(400)},
                },
                "post": {
                    "summary": "create a category",
                    "requestBody": body,
                    "responses": {"201": _json("Category", "created"), **_errors(400, 415, 422)},
                },
            },
            "/categories/{category_id}": {
                "get": {
                    "summary": "one category",
                    "parameters": [_id("category_id")],
                    "responses": {"200": _json("Category"), **_errors(404)},
                }
            },
            "/products": {
                "get": {
                    "summary": "list products (sort id, name, price, created_at)",
                    "parameters": [
                        *_LIST_PARAMS,
                        _query("category_id"),
                        _query("active", "boolean"),
                        _query("min_price"),
                        _query("max_price"),
                        _query("q", "string"),
                    ],
                    "responses": {"200": _json(_page_of("Product")), **_errors(400)},
                },
                "post": {
                    "summary": "create a product",
                    "requestBody": body,
                    "responses": {
                        "201": _json("Product", "created"),
                        **_errors(400, 409, 415, 422),
                    },
                },
            },
            "/products/{product_id}": {
                "get": {
                    "summary": "one product",
                    "parameters": [_id("product_id")],
                    "responses": {"200": _json("Product"), **_errors(404)},
                },
                "patch": {
                    "summary": "change name, description, category_id, price or active",
                    "parameters": [_id("product_id")],
                    "requestBody": body,
                    "responses": {"200": _json("Product"), **_errors(400, 404, 415, 422)},
                },
                "delete": {
                    "summary": "delete an inactive product",
                    "parameters": [_id("product_id")],
                    "responses": {"204": {"description": "deleted"}, **_errors(404, 409)},
                },
            },
        },
        "components": {
            "schemas": {"Money": MONEY, "Error": ERROR, "Category": CATEGORY, "Product": PRODUCT}
        },
    }
