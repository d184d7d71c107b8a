"""Debezium's unchanged-TOAST placeholder, in every form its PostgreSQL connector writes it.

With the default replica identity, an UPDATE that leaves a TOASTed column (a large text,
bytea, array, jsonb, hstore value) unchanged does not carry its value; Debezium writes the
``unavailable.value.placeholder`` in its place, spelled by the column's type
(PostgresValueConverter / UnchangedToastedReplicationMessageColumn):

- text, varchar, json(b), uuid, ...: the string ``__debezium_unavailable_value``;
- bytea: the placeholder's bytes, which the JSON converter writes as base64 (or, with
  ``binary.handling.mode`` = hex / base64-url-safe, as hex / URL-safe base64);
- text[] (and other string arrays): ``["__debezium_unavailable_value"]``;
- bytea[]: a one-element list of the bytes form;
- int[] / bigint[]: the placeholder's bytes as numbers, ``[95, 95, 100, ...]``;
- hstore: ``{"__debezium_unavailable_value": "__debezium_unavailable_value"}``.

A sink that wrote any of these as data would silently replace the stored value, so the sink
asks `is_unavailable` of every value of an event that may hold one (`may_hold_placeholder`, a
cheap scan of the raw bytes, decides which events are looked at).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

UNAVAILABLE_VALUE = "__debezium_unavailable_value"
UNAVAILABLE_BYTES = UNAVAILABLE_VALUE.encode()
UNAVAILABLE_BASE64 = base64.b64encode(UNAVAILABLE_BYTES).decode()
UNAVAILABLE_BASE64_URL = base64.urlsafe_b64encode(UNAVAILABLE_BYTES).decode()
UNAVAILABLE_HEX = UNAVAILABLE_BYTES.hex()
UNAVAILABLE_NUMBERS = list(UNAVAILABLE_BYTES)  # int[] / bigint[] placeholder
# Every scalar spelling (a str in the event, or bytes once a schema's base64 was decoded).
SCALAR_FORMS: frozenset[Any] = frozenset(
    {
        UNAVAILABLE_VALUE,
        UNAVAILABLE_BYTES,
        UNAVAILABLE_BASE64,
        UNAVAILABLE_BASE64_URL,
        UNAVAILABLE_HEX,
        UNAVAILABLE_HEX.upper(),
    }
)
# Byte strings one of which any raw event holding a placeholder contains (JSON escapes aside).
_RAW_MARKERS = (
    UNAVAILABLE_BYTES,
    UNAVAILABLE_BASE64.rstrip("=").encode(),
    UNAVAILABLE_HEX.encode(),
    UNAVAILABLE_HEX.upper().encode(),
    b"95,95,100,101,98,101,122",
    b"95, 95, 100, 101, 98, 101, 122",
)


def is_unavailable(value: Any) -> bool:
    """True when `value` is the placeholder in one of the forms above."""
    kind = type(value)
    if kind is str or kind is bytes:
        return value in SCALAR_FORMS
    if kind is list:
        if len(value) == 1:
            item = value[0]
            return (type(item) is str or type(item) is bytes) and item in SCALAR_FORMS
        return value == UNAVAILABLE_NUMBERS
    if kind is dict:
        return len(value) == 1 and value.get(UNAVAILABLE_VALUE) == UNAVAILABLE_VALUE
    return False


def unavailable_columns(row: Mapping[str, Any]) -> set[str]:
    """Columns of a row image that hold the placeholder."""
    return {name for name, value in row.items() if is_unavailable(value)}


def any_unavailable(row: Mapping[str, Any]) -> bool:
    return any(map(is_unavailable, row.values()))


def plain_row_may_hold(row: Mapping[str, Any]) -> bool:
    """For a row of str/int/bool/None only (the sink's fast path): a placeholder is one of the
    scalar spellings, so one set test answers."""
    return not SCALAR_FORMS.isdisjoint(row.values())


def may_hold_placeholder(raw: bytes | None) -> bool:
    """False when a row image decoded from `raw` cannot hold the placeholder.

    Each spelling appears verbatim in the raw JSON unless escapes are used (a backslash) or a
    Kafka Connect schema turns base64 into bytes (the ``{schema, payload}`` wrapper, whose
    base64 form is scanned for anyway). A few substring scans are far cheaper than looking at
    every value of every row.
    """
    if type(raw) is not bytes:
        return True
    find = raw.find  # `x in raw` first tries x as an int (a raised and cleared TypeError)
    for marker in _RAW_MARKERS:
        if find(marker) >= 0:
            return True
    return find(b"\\") >= 0 or find(b'"payload"') >= 0
