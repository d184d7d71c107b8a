"""OpenAPI 3 helpers: serve a document and find routes it does not describe."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask, Response, jsonify

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
