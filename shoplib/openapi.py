"""OpenAPI 3 helpers: serve a document and find routes it does not describe."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from flask import Blueprint, Flask, Response, jsonify

from shoplib.pagination import DEFAULT_PER_PAGE, MAX_PER_PAGE

_CONVERTER = re.compile(r"<(?:[a-z]+:)?([a-zA-Z_][a-zA-Z0-9_]*)>")
UNDOCUMENTED_PATHS = frozenset({"/openapi.json", "/static/<path:filename>"})


def openapi_path(rule: str) -> str:
    """`/products/<int:id>` → `/products/{id}`."""
    return _CONVERTER.sub(r"{\1}", rule)


def openapi_blueprint(document: Callable[[], dict[str, Any]]) -> Blueprint:
    blueprint = Blueprint("openapi", __name__)

    @blueprint.get("/openapi.json")
    def serve() -> Response:
        return jsonify(document())

    return blueprint


def undocumented_routes(app: Flask, document: dict[str, Any]) -> list[str]:
    """Every `METHOD /path` the app serves that the document does not describe."""
    missing = []
    paths = document.get("paths", {})
    for rule in app.url_map.iter_rules():
        if rule.rule in UNDOCUMENTED_PATHS:
            continue
        described = paths.get(openapi_path(rule.rule), {})
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            if method.lower() not in described:
                missing.append(f"{method} {rule.rule}")
    return missing


# --- building a service's document -------------------------------------------------------
# The extracted services describe their endpoints with the same small vocabulary; these
# helpers are that vocabulary, so each service's `openapi.py` only lists what it owns.

Schema = dict[str, Any]


def error_schema() -> Schema:
    """The contract's error body `{"error": {"code", "message", "fields"?}}`."""
    return {
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


def money_schema() -> Schema:
    """Money as `{cents, currency}`."""
    return {
        "type": "object",
        "required": ["cents", "currency"],
        "properties": {
            "cents": {"type": "integer", "minimum": 0},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
        },
    }


def schema_ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def page_of(schema: str) -> Schema:
    """The pagination envelope `{items, page, per_page, total, next, prev}` of `schema`."""
    return {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": schema_ref(schema)},
            "page": {"type": "integer"},
            "per_page": {"type": "integer"},
            "total": {"type": "integer"},
            "next": {"type": ["string", "null"]},
            "prev": {"type": ["string", "null"]},
        },
    }


def json_response(schema: str | Schema, description: str = "OK") -> Schema:
    """A JSON response whose body is `schema` (a component name or an inline schema)."""
    body = schema_ref(schema) if isinstance(schema, str) else schema
    return {"description": description, "content": {"application/json": {"schema": body}}}


def error_responses(*statuses: int) -> Schema:
    return {str(status): json_response("Error", "error") for status in statuses}


def query_param(name: str, kind: str = "integer") -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": {"type": kind}}


def path_id(name: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "integer"}}


def query(name: str, schema: Schema, description: str, required: bool = False) -> Schema:
    """A documented query parameter."""
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


def list_params(sorts: Sequence[str]) -> list[Schema]:
    """`page`, `per_page` and `sort` (one of `sorts`, `-` for descending), which every list
    endpoint takes; the same bounds and defaults as `shoplib.pagination`."""
    sort_values = [*sorts, *(f"-{s}" for s in sorts)]
    per_page = {
        "type": "integer",
        "minimum": 1,
        "maximum": MAX_PER_PAGE,
        "default": DEFAULT_PER_PAGE,
    }
    return [
        query("page", {"type": "integer", "minimum": 1, "default": 1}, "1-based page number"),
        query("per_page", per_page, "items per page"),
        query(
            "sort",
            {"type": "string", "enum": sort_values, "default": sorts[0]},
            "sort field, `-` prefix for descending; ties broken by id ascending",
        ),
    ]


def json_body() -> Schema:
    return {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}


def service_document(
    title: str,
    paths: dict[str, Schema],
    schemas: dict[str, Schema],
    health_schema: Schema | None = None,
) -> dict[str, Any]:
    """A service's whole document: `/healthz` and `/readyz`, then its own `paths`."""
    health = {"type": "object"} if health_schema is None else health_schema
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1.0.0"},
        "paths": {
            "/healthz": {
                "get": {"summary": "liveness", "responses": {"200": json_response(health)}}
            },
            "/readyz": {
                "get": {
                    "summary": "readiness (database answers)",
                    "responses": {"200": json_response(health), "503": json_response(health)},
                }
            },
            **paths,
        },
        "components": {"schemas": schemas},
    }
