"""Declarative request-body validation: a spec of `Field`s, one 422 naming every bad field.

Both sides of a migration validate with the same specs-and-messages machinery, so the
`fields` of a 422 are identical whichever side answered.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flask import Request

from shoplib.errors import ApiError, validation_error
from shoplib.money import CURRENCY_RE

Check = Callable[[Any], str | None]


@dataclass(frozen=True)
class Field:
    """One body field: its JSON type, whether it is required, and extra checks.

    `kind` is one of "string", "integer", "boolean", "object", "array", "money".
    Checks return an error message or None.
    """

    kind: str
    required: bool = False
    nullable: bool = False
    checks: tuple[Check, ...] = ()


_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "money": lambda v: isinstance(v, dict),
}


def length(low: int, high: int) -> Check:
    return lambda v: None if low <= len(v) <= high else f"must be {low} to {high} characters"


def pattern(regex: str, description: str) -> Check:
    compiled = re.compile(regex)
    return lambda v: None if compiled.fullmatch(v) else f"must be {description}"


def at_least(low: int) -> Check:
    return lambda v: None if v >= low else f"must be at least {low}"


def money_check(value: dict[str, Any]) -> str | None:
    unknown = set(value) - {"cents", "currency"}
    if unknown:
        return f"unknown money field(s): {', '.join(sorted(unknown))}"
    cents, currency = value.get("cents"), value.get("currency")
    if not isinstance(cents, int) or isinstance(cents, bool) or cents < 0:
        return "cents must be a non-negative integer"
    if not isinstance(currency, str) or not CURRENCY_RE.match(currency):
        return "currency must be three upper-case letters"
    return None


def json_body(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400/415 explaining why not."""
    raw = request.get_data(cache=True)
    if request.mimetype != "application/json" and (raw or request.mimetype):
        raise ApiError(415, "unsupported_media_type", "request body must be application/json")
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict):
        raise ApiError(400, "malformed_json", "request body must be a JSON object")
    return payload


def validate(
    payload: Mapping[str, Any],
    spec: Mapping[str, Field],
    *,
    partial: bool = False,
    immutable: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Check `payload` against `spec`; return the accepted fields or raise a 422.

    `partial=True` validates a PATCH: nothing is required, but at least one field must be
    given. Fields in `immutable` are refused with "cannot be changed".
    """
    problems: dict[str, str] = {}
    for name in payload:
        if name in immutable:
            problems[name] = "cannot be changed"
        elif name not in spec:
            problems[name] = "unknown field"
    for name, field in spec.items():
        if name not in payload:
            if field.required and not partial:
                problems[name] = "is required"
            continue
        value = payload[name]
        if value is None:
            if not field.nullable:
                problems[name] = "must not be null"
            continue
        if not _TYPE_CHECKS[field.kind](value):
            problems[name] = f"must be {'an' if field.kind[0] in 'aeiou' else 'a'} {field.kind}"
            continue
        checks = (money_check, *field.checks) if field.kind == "money" else field.checks
        for check in checks:
            message = check(value)
            if message:
                problems[name] = message
                break
    if partial and not payload:
        raise validation_error({}, "request body must change at least one field")
    if problems:
        raise validation_error(problems)
    return {name: payload[name] for name in spec if name in payload}


def between(low: int, high: int) -> Check:
    """An integer range check with the contract's message (the monolith and the services share it)."""
    return lambda v: None if low <= v <= high else f"must be between {low} and {high}"


def stripped_length(low: int, high: int) -> Check:
    """Length check applied after stripping surrounding whitespace (same message as `length`)."""
    return lambda v: (
        None if low <= len(v.strip()) <= high else f"must be {low} to {high} characters"
    )
