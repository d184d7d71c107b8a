"""The proxy's own error bodies, in the application's error shape (config `error_template`).

Why a template: an application whose errors look like `{"message": ..., "status": ...}` should
not see a second shape from the proxy in front of it. The template is JSON text; every string
value that is exactly a placeholder is replaced: `"{code}"`, `"{message}"`, `"{route}"`,
`"{service}"` (strings; keys whose placeholder has no value are left out) and `"{status}"` (the
status as a number). Without a template the body is `{"error": {"code", "message", ...}}`.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

PLACEHOLDERS = ("{code}", "{message}", "{route}", "{service}", "{status}")


def parse_template(text: str) -> Any:
    """The parsed template; ValueError naming what is wrong (bad JSON, no code/message)."""
    try:
        template = json.loads(text)
    except (TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"error_template must be JSON text: {exc}") from exc
    if not isinstance(template, dict):
        raise ValueError("error_template must be a JSON object")
    if "{code}" not in text and "{message}" not in text:
        raise ValueError('error_template must use "{code}" or "{message}"')
    return template


def _fill(node: Any, values: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            filled = _fill(value, values)
            if filled is not _ABSENT:
                out[key] = filled
        return out
    if isinstance(node, list):
        return [v for v in (_fill(item, values) for item in node) if v is not _ABSENT]
    if isinstance(node, str) and node in values:
        value = values[node]
        return _ABSENT if value is None else value
    return node


_ABSENT = object()


class ErrorShape:
    """Renders `(status, code, message, route?, service?)` into body bytes."""

    def __init__(self, template: str | None = None) -> None:
        self.template = parse_template(template) if template else None

    def body(self, status: int, code: str, message: str, **extra: Any) -> bytes:
        if self.template is None:
            return json.dumps({"error": {"code": code, "message": message, **extra}}).encode()
        values = {
            "{code}": code,
            "{message}": message,
            "{route}": extra.get("route"),
            "{service}": extra.get("service"),
            "{status}": status,
        }
        return json.dumps(_fill(self.template, values)).encode()

    def response_bytes(
        self, status: int, code: str, message: str, close: bool, **extra: Any
    ) -> bytes:
        """A complete HTTP/1.1 response carrying the error (for the byte-level paths)."""
        body = self.body(status, code, message, **extra)
        head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % (
            status,
            reason(status),
            len(body),
        )
        if close:
            head += b"Connection: close\r\n"
        return head + b"\r\n" + body


def reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Error"
