"""The customers service's OpenAPI 3 document: only the endpoints this service owns."""

from __future__ import annotations

from typing import Any

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
CUSTOMER = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "email": {"type": "string", "maxLength": 254},
        "name": {"type": "string", "maxLength": 200},
        "phone": {"type": ["string", "null"], "maxLength": 32},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
    },
}
CUSTOMER_PAGE = {
    "type": "object",
    "properties": {
        "items": {"type": "array", "items": {"$ref": "#/components/schemas/Customer"}},
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


_ID = {"name": "customer_id", "in": "path", "required": True, "schema": {"type": "integer"}}


def openapi_document() -> dict[str, Any]:
    """The document served at `/openapi.json`."""
    body = {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "customers service", "version": "1.0.0"},
        "paths": {
            "/healthz": {"get": {"summary": "liveness", "responses": {"200": _json({})}}},
            "/readyz": {
                "get": {
                    "summary": "readiness (database answers)",
                    "responses": {"200": _json({}), "503": _json({})},
                }
            },
            "/customers": {
                "get": {
                    "summary": "list customers (sort id, name, email, created_at)",
                    "parameters": [
                        _query("page"),
                        _query("per_page"),
                        _query("sort", "string"),
                        _query("email", "string"),
                        _query("q", "string"),
                    ],
                    "responses": {"200": _json(CUSTOMER_PAGE), **_errors(400)},
                },
                "post": {
                    "summary": "create a customer (e-mail unique case-insensitively)",
                    "requestBody": body,
                    "responses": {
                        "201": _json("Customer", "created"),
                        **_errors(400, 409, 415, 422),
                    },
                },
            },
            "/customers/{customer_id}": {
                "get": {
                    "summary": "one customer",
                    "parameters": [_ID],
                    "responses": {"200": _json("Customer"), **_errors(404)},
                },
                "patch": {
                    "summary": "change email, name or phone",
                    "parameters": [_ID],
                    "requestBody": body,
                    "responses": {"200": _json("Customer"), **_errors(400, 404, 409, 415, 422)},
                },
                "delete": {
                    "summary": "erase a customer",
                    "parameters": [_ID],
                    "responses": {"204": {"description": "deleted"}, **_errors(404)},
                },
            },
        },
        "components": {"schemas": {"Error": ERROR, "Customer": CUSTOMER}},
    }
