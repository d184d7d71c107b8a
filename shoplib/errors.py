"""JSON error bodies: `{"error": {"code", "message", "fields"?}}` for every failure.

Every error a client can see goes through here, so the monolith and the services produce
byte-identical error bodies and nothing ever answers with an HTML page or a bare 500.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

_HTTP_CODES: dict[int, str] = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class ApiError(Exception):
    """An error with an HTTP status, a stable machine code and a human message."""

    def __init__(
        self, status: int, code: str, message: str, fields: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.fields:
            error["fields"] = dict(sorted(self.fields.items()))
        return {"error": error}


def not_found(what: str, ident: object) -> ApiError:
    return ApiError(404, "not_found", f"{what} {ident} not found")


def validation_error(fields: dict[str, str], message: str = "request body is invalid") -> ApiError:
    return ApiError(422, "validation_error", message, fields)


def invalid_query(fields: dict[str, str]) -> ApiError:
    return ApiError(400, "invalid_query", "query parameters are invalid", fields)


def conflict(
    message: str, code: str = "conflict", fields: dict[str, str] | None = None
) -> ApiError:
    return ApiError(409, code, message, fields)


def error_response(error: ApiError) -> tuple[Response, int]:
    return jsonify(error.body()), error.status


def register_error_handlers(app: Flask) -> None:
    """Turn every error into the JSON error body; unexpected ones into a logged 500 body."""

    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> tuple[Response, int]:
        return error_response(error)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> tuple[Response, int]:
        status = error.code or 500
        code = _HTTP_CODES.get(status, "http_error")
        if status == 404:
            message = "no such resource"
        elif status == 405:
            message = "method not allowed for this path"
        else:
            message = error.description or error.name
        response, status = error_response(ApiError(status, code, message))
        allowed = getattr(error, "valid_methods", None)
        if status == 405 and allowed:
            response.headers["Allow"] = ", ".join(sorted(allowed))
        return response, status

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> tuple[Response, int]:
        log.exception("unhandled error", exc_info=error)
        return error_response(ApiError(500, "internal_error", "internal server error"))
