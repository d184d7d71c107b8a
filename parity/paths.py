"""JSONPath-like paths: rendering concrete paths and matching wildcard patterns.

Concrete paths are tuples of segments (`str` keys, `int` indices) while diffing, and strings
such as `$.items[3].price.cents` in reports. Patterns add `[*]` / `.*` (any one child) and
`..` (any depth, including zero). Matching runs as a small NFA whose state is carried down
the tree walk, so rule lookup costs one cached dict hit per node.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Segment = str | int

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")  # fullmatch: `$` would allow a final \n
_INDEX = re.compile(r"\[(\d+)\]")


class PathSyntaxError(ValueError):
    """A path pattern that cannot be parsed; the message shows where."""


def render_path(segments: Sequence[Segment]) -> str:
    """`('items', 3, 'price')` → `$.items[3].price`; odd keys use `['...']`."""
    parts = ["$"]
    for seg in segments:
        if isinstance(seg, int):
            parts.append(f"[{seg}]")
        elif _IDENT.fullmatch(seg):
            parts.append(f".{seg}")
        else:
            escaped = seg.replace("\\", "\\\\").replace("'", "\\'")
            parts.append(f"['{escaped}']")
    return "".join(parts)


def generalise(path: str) -> str:
    """Replace every array index by `[*]` (how learned noise spreads to all elements)."""
    return _INDEX.sub("[*]", path)


# Pattern tokens
KEY, INDEX, ANY, DESCEND = "key", "index", "any", "descend"
Token = tuple[str, Segment | None]


def parse_pattern(pattern: str) -> tuple[Token, ...]:
    """Parse `$.a[*].b`, `$..id`, `$['odd key'][0]` into tokens; raise PathSyntaxError."""
    text = pattern.strip()
    if not text.startswith("$"):
        raise PathSyntaxError(f"path {pattern!r}: must start with '$'")
    tokens: list[Token] = []
    i, n = 1, len(text)

    def fail(msg: str) -> PathSyntaxError:
        return PathSyntaxError(f"path {pattern!r} at column {i + 1}: {msg}")

    while i < n:
        ch = text[i]
        if ch == ".":
            if i + 1 < n and text[i + 1] == ".":
                tokens.append((DESCEND, None))
                i += 2
                if i < n and text[i] == "[":
                    continue
            else:
                i += 1
            if i >= n:
                raise fail("expected a name after '.'")
            if text[i] == "*":
                tokens.append((ANY, None))
                i += 1
                continue
            m = re.match(r"[A-Za-z_][A-Za-z0-9_\-]*", text[i:])
            if not m:
                raise fail("expected a name, '*' or '[' after '.'")
            tokens.append((KEY, m.group(0)))
            i += m.end()
        elif ch == "[":
            close = _find_close(text, i)
            if close < 0:
                raise fail("unclosed '['")
            inner = text[i + 1 : close].strip()
            if inner == "*":
                tokens.append((ANY, None))
            elif inner.isdigit():
                tokens.append((INDEX, int(inner)))
            elif len(inner) >= 2 and inner[0] == inner[-1] and inner[0] in "'\"":
                body = inner[1:-1]
                tokens.append((KEY, re.sub(r"\\(.)", r"\1", body)))
            else:
                raise fail(f"bad selector [{inner}] (use [N], [*] or ['key'])")
            i = close + 1
        else:
            raise fail(f"unexpected character {ch!r}")
    if tokens and tokens[-1][0] == DESCEND:
        raise PathSyntaxError(f"path {pattern!r}: '..' must be followed by a name")
    return tuple(tokens)


def _find_close(text: str, start: int) -> int:
    quote = None
    i = start + 1
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "]":
            return i
        i += 1
    return -1


def parse_concrete(path: str) -> tuple[Segment, ...]:
    """Parse a concrete rendered path back to segments (no wildcards allowed)."""
    tokens = parse_pattern(path)
    segs: list[Segment] = []
    for kind, value in tokens:
        if kind not in (KEY, INDEX):
            raise PathSyntaxError(f"path {path!r}: wildcards are not allowed here")
        segs.append(value)  # type: ignore[arg-type]
    return tuple(segs)


def select(doc: Any, pattern: str) -> list[Any]:
    """Values at a JSONPath pattern (`$.data[*].id`, `$..id`, `$[*]`) in document order."""
    nodes = [doc]
    for kind, value in parse_pattern(pattern):
        nxt: list[Any] = []
        for node in nodes:
            if kind == DESCEND:
                stack = [node]  # the node and every container below it (iterative)
                while stack:
                    cur = stack.pop()
                    nxt.append(cur)
                    children = cur.values() if isinstance(cur, dict) else cur
                    if isinstance(cur, dict | list):
                        stack.extend(
                            c for c in reversed(list(children)) if isinstance(c, dict | list)
                        )
            elif kind == ANY:
                if isinstance(node, dict):
                    nxt.extend(node.values())
                elif isinstance(node, list):
                    nxt.extend(node)
            elif kind == KEY and isinstance(node, dict) and value in node:
                nxt.append(node[value])
            elif kind == INDEX and isinstance(node, list) and -len(node) <= value < len(node):  # type: ignore[operator]
                nxt.append(node[value])  # type: ignore[index]
        nodes = nxt
    return nodes


def _token_matches(token: Token, seg: Segment) -> bool:
    kind, value = token
    if kind == ANY:
        return True
    if kind == KEY:
        return isinstance(seg, str) and seg == value
    if kind == INDEX:
        return isinstance(seg, int) and seg == value
    return False


State = frozenset  # of (pattern index, token position)


@dataclass
class PathMatcher:
    """Matches many patterns at once while walking a tree.

    `start()` gives the state at `$`; `step(state, seg)` gives the child's state and the
    indices of patterns that match exactly at the child. A state of None means no pattern can
    match anywhere below, which lets the walker take its fast path.
    """

    patterns: tuple[tuple[Token, ...], ...]

    def __post_init__(self) -> None:
        self._cache: dict[tuple[State, Segment], tuple[State | None, tuple[int, ...]]] = {}
        self._start = self._closure({(i, 0) for i in range(len(self.patterns))})

    @classmethod
    def compile(cls, patterns: Sequence[str]) -> PathMatcher:
        return cls(tuple(parse_pattern(p) for p in patterns))

    def _closure(self, states: set[tuple[int, int]]) -> State:
        out = set(states)
        stack = list(states)
        while stack:
            idx, pos = stack.pop()
            toks = self.patterns[idx]
            if pos < len(toks) and toks[pos][0] == DESCEND and (idx, pos + 1) not in out:
                out.add((idx, pos + 1))
                stack.append((idx, pos + 1))
        return frozenset(out)

    def start(self) -> tuple[State | None, tuple[int, ...]]:
        """State and accepted patterns at the root `$`."""
        accepted = tuple(sorted(i for i, p in self._start if p == len(self.patterns[i])))
        return (self._start or None), accepted

    def step(self, state: State, seg: Segment) -> tuple[State | None, tuple[int, ...]]:
        key = (state, seg)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        nxt: set[tuple[int, int]] = set()
        for idx, pos in state:
            toks = self.patterns[idx]
            if pos >= len(toks):
                continue
            tok = toks[pos]
            if tok[0] == DESCEND:
                nxt.add((idx, pos))  # stay: descend one more level
            elif _token_matches(tok, seg):
                nxt.add((idx, pos + 1))
        closed = self._closure(nxt)
        accepted = tuple(sorted(i for i, p in closed if p == len(self.patterns[i])))
        live = frozenset(s for s in closed if s[1] < len(self.patterns[s[0]]))
        result = ((live or None), accepted)
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[key] = result
        return result

    def matching(self, segments: Sequence[Segment], *, prefixes: bool = False) -> set[int]:
        """Patterns matching the concrete path (or, with `prefixes`, any ancestor of it)."""
        state, accepted = self.start()
        found = set(accepted) if prefixes or not segments else set()
        for n, seg in enumerate(segments):
            if state is None:
                break
            state, accepted = self.step(state, seg)
            if prefixes or n == len(segments) - 1:
                found.update(accepted)
        return found
