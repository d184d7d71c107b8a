"""Small view helpers shared by the modules' blueprints (request parsing, list responses)."""

from __future__ import annotations

from typing import Any

from flask import Request, Response, jsonify, request

from monolith.db import MAX_INT
from shoplib.pagination import PageRequest, page_envelope
from shoplib.validation import Check


def between(low: int, high: int) -> Check:
    """An integer range check with the contract's message."""
    return lambda v: None if low <= v <= high else f"must be between {low} and {high}"


ID_CHECK = between(1, MAX_INT)


def stripped_length(low: int, high: int) -> Check:
    """Length check applied after stripping surrounding whitespace."""
    return lambda v: (
        None if low <= len(v.strip()) <= high else f"must be {low} to {high} characters"
    )


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
