"""Side-by-side line diffs of two response bodies (monolith on the left, service on the right).

JSON bodies are pretty-printed with sorted keys first, so a diff shows values that differ
rather than key order or whitespace. Output rows are plain data; the page escapes them.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

MAX_LINES = 400


def pretty(text: str | None) -> str:
    """Indented JSON when the text is JSON, else the text as it is."""
    if text is None:
        return ""
    try:
        return json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False)
    except ValueError:
        return text


def side_by_side(left: str | None, right: str | None) -> list[dict[str, Any]]:
    """Rows `{tag, left, right, left_no, right_no}`; tag is equal/changed/removed/added."""
    a = pretty(left).splitlines()[:MAX_LINES]
    b = pretty(right).splitlines()[:MAX_LINES]
    rows: list[dict[str, Any]] = []
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            for k in range(i2 - i1):
                rows.append(_row("equal", a, b, i1 + k, j1 + k))
            continue
        length = max(i2 - i1, j2 - j1)
        for k in range(length):
            li = i1 + k if i1 + k < i2 else None
            rj = j1 + k if j1 + k < j2 else None
            tag = (
                "changed"
                if li is not None and rj is not None
                else "removed"
                if rj is None
                else "added"
            )
            rows.append(_row(tag, a, b, li, rj))
    return rows


def _row(tag: str, a: list[str], b: list[str], i: int | None, j: int | None) -> dict[str, Any]:
    return {
        "tag": tag,
        "left": a[i] if i is not None else "",
        "right": b[j] if j is not None else "",
        "left_no": None if i is None else i + 1,
        "right_no": None if j is None else j + 1,
    }


def pair_view(pair: dict[str, Any]) -> dict[str, Any]:
    """A shadow pair (`ShadowPair.to_dict()`) as a side-by-side comparison."""
    request = pair.get("request") or {}
    monolith = pair.get("monolith") or {}
    service = pair.get("service_response") or {}
    left = monolith.get("body")
    right = service.get("body") if service else None
    return {
        "request_id": pair.get("request_id"),
        "route": pair.get("route"),
        "service": pair.get("service"),
        "at": pair.get("at"),
        "request": f"{request.get('method', '')} {request.get('path', '')}",
        "monolith_status": monolith.get("status"),
        "service_status": service.get("status") if service else None,
        "service_error": pair.get("service_error"),
        "same_status": bool(service) and monolith.get("status") == service.get("status"),
        "same_body": bool(service) and pretty(left) == pretty(right),
        "rows": side_by_side(left, right),
    }
