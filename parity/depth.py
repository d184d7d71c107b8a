"""Hostile nesting: JSON deeper than a recursive walk (or a parser) can go.

Every consumer of a parsed body that recurses (the rule-aware walk, `json.dumps` of a
difference, redaction, the HTML report) must see bounded depth. The comparator walks with
rules down to `MAX_WALK_DEPTH` and iteratively (no rules) below it; values kept in a
difference are clipped to `CLIP_DEPTH`; a body no parser accepts is reported at the deepest
path its bytes reach before the two sides part.
"""

from __future__ import annotations

import re
from typing import Any

from parity.paths import Segment, render_path

MAX_WALK_DEPTH = 100  # rule-aware recursive walk; deeper subtrees are compared iteratively
CLIP_DEPTH = 32  # containers kept in a difference are cut below this depth
CLIPPED = "<clipped: nested deeper>"


def deeper_than(value: Any, limit: int) -> bool:
    """True when `value` nests containers more than `limit` levels (iterative, early exit)."""
    if type(value) not in (dict, list):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if type(node) is dict else node
        stack.extend((c, depth + 1) for c in children if type(c) in (dict, list))
    return False


def clip(value: Any, limit: int = CLIP_DEPTH) -> Any:
    """`value` itself when shallow enough, else a copy cut at `limit` levels (JSON-safe for
    any recursive serialiser)."""
    if not deeper_than(value, limit):
        return value
    return _cut(value, limit)


def _cut(value: Any, left: int) -> Any:
    # bounded recursion: at most `limit` frames
    if type(value) is dict:
        return {k: _cut(v, left - 1) for k, v in value.items()} if left > 0 else CLIPPED
    if type(value) is list:
        return [_cut(v, left - 1) for v in value] if left > 0 else CLIPPED
    return value


_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}:,]')


def first_difference_offset(a: bytes, b: bytes) -> int:
    """Length of the common prefix of `a` and `b` (binary search on C-speed slice compares)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def path_at_offset(text: bytes, offset: int) -> str:
    """The JSON path open at byte `offset` of `text`, read by a token scan (no parse, no
    recursion): how a body too deep for any parser still gets a precise location."""
    frames: list[list[Any]] = []  # [is_object, segment, expecting_key]
    for m in _TOKEN.finditer(text, 0, offset):
        tok = m.group()
        if tok == b"{":
            frames.append([True, None, True])
        elif tok == b"[":
            frames.append([False, 0, False])
        elif tok in (b"}", b"]"):
            if frames:
                frames.pop()
        elif tok == b",":
            if frames:
                top = frames[-1]
                if top[0]:
                    top[2] = True
                else:
                    top[1] += 1
        elif tok == b":":
            if frames:
                frames[-1][2] = False
        elif frames and frames[-1][0] and frames[-1][2]:
            frames[-1][1] = tok[1:-1].decode("utf-8", "replace")
    segs: list[Segment] = [f[1] for f in frames if f[1] is not None]
    return render_path(segs)


def preview_at(body: bytes, offset: int, width: int = 60) -> str:
    """A short excerpt of `body` around `offset` (what a deep difference shows)."""
    start = max(0, offset - width // 2)
    text = body[start : start + width].decode("utf-8", "replace")
    return ("..." if start else "") + text + ("..." if start + width < len(body) else "")
