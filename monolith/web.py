"""Small view helpers shared by the modules' blueprints (request parsing, list responses)."""

from __future__ import annotations

from typing import Any

from flask import Request, Response, jsonify, request

from shoplib.pagination import PageRequest, page_envelope
from shoplib.routing import MAX_INT
from shoplib.validation import between, stripped_length

__all__ = ["ID_CHECK", "between", "json_response", "list_response", "no_content", "stripped_length"]

ID_CHECK = between(1, MAX_INT)


def list_response(
    items: list[dict[str, Any]], total: int, page: PageRequest, req: Request | None = None
) -> Response:
    """The pagination envelope for the current request as a JSON response."""
    current = req or request
    return jsonify(page_envelope(items, total, page, current.path, current.args))


def json_response(payload: dict[str, Any], status: int = 200) -> tuple[Response, int]:
    return jsonify(payload), status


def no_content() -> tuple[str, int]:
    return "", 204
