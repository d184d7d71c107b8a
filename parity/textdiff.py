"""Line alignment that stays near-linear on big inputs (text bodies, the HTML side-by-side).

difflib's SequenceMatcher is quadratic on long inputs with many repeated lines (a 0.25 MB
HTML page took 38 s). Here the common head and tail are cut first; what is left is aligned
patience-style on lines unique to both sides, recursively between those anchors, and only
small regions (where the quadratic matcher is cheap) go to SequenceMatcher. A big region
without any unique line is paired position by position.
"""

from __future__ import annotations

import difflib
from bisect import bisect_left
from collections.abc import Sequence

Opcode = tuple[str, int, int, int, int]

# regions up to this many line-pair comparisons go to difflib (exact and cheap there)
SMALL_REGION = 40_000


def line_opcodes(a: Sequence[str], b: Sequence[str]) -> list[Opcode]:
    """`difflib`-style opcodes (`equal`/`replace`/`delete`/`insert`) aligning `a` with `b`."""
    n, m = len(a), len(b)
    head = 0
    while head < n and head < m and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < n - head and tail < m - head and a[n - 1 - tail] == b[m - 1 - tail]:
        tail += 1
    out: list[Opcode] = []
    if head:
        out.append(("equal", 0, head, 0, head))
    _align(a, b, head, n - tail, head, m - tail, out)
    if tail:
        out.append(("equal", n - tail, n, m - tail, m))
    return _merge(out)


def _align(
    a: Sequence[str], b: Sequence[str], i1: int, i2: int, j1: int, j2: int, out: list[Opcode]
) -> None:
    """Opcodes for a[i1:i2] vs b[j1:j2], appended in order (an explicit stack, no recursion).

    Stack entries are regions to align, or anchors (`equal` single lines) to emit; regions
    are pushed in reverse so they are handled (and emit) in order."""
    stack: list[tuple[bool, int, int, int, int]] = [(False, i1, i2, j1, j2)]
    while stack:
        anchor, i1, i2, j1, j2 = stack.pop()
        if anchor:
            out.append(("equal", i1, i2, j1, j2))
        elif i1 == i2 or j1 == j2:
            if i1 < i2:
                out.append(("delete", i1, i2, j1, j1))
            elif j1 < j2:
                out.append(("insert", i1, i1, j1, j2))
        elif (i2 - i1) * (j2 - j1) <= SMALL_REGION:
            sm = difflib.SequenceMatcher(None, a[i1:i2], b[j1:j2], autojunk=False)
            out.extend(
                (tag, i1 + x1, i1 + x2, j1 + y1, j1 + y2)
                for tag, x1, x2, y1, y2 in sm.get_opcodes()
            )
        else:
            anchors = _unique_anchors(a, b, i1, i2, j1, j2)
            if not anchors:
                if not _myers(a, b, i1, i2, j1, j2, out):
                    _positional(a, b, i1, i2, j1, j2, out)
                continue
            parts: list[tuple[bool, int, int, int, int]] = []
            pi, pj = i1, j1
            for ai, bj in anchors:
                parts.append((False, pi, ai, pj, bj))
                parts.append((True, ai, ai + 1, bj, bj + 1))
                pi, pj = ai + 1, bj + 1
            parts.append((False, pi, i2, pj, j2))
            stack.extend(reversed(parts))


def _unique_anchors(
    a: Sequence[str], b: Sequence[str], i1: int, i2: int, j1: int, j2: int
) -> list[tuple[int, int]]:
    """Lines occurring once on each side, kept in the longest run increasing on both."""
    count_a: dict[str, int] = {}
    for i in range(i1, i2):
        line = a[i]
        count_a[line] = -1 if line in count_a else i
    count_b: dict[str, int] = {}
    for j in range(j1, j2):
        line = b[j]
        count_b[line] = -1 if line in count_b else j
    pairs = [
        (i, count_b[line]) for line, i in count_a.items() if i >= 0 and count_b.get(line, -1) >= 0
    ]
    pairs.sort()
    return _longest_increasing(pairs)


def _longest_increasing(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Longest subsequence of `pairs` (sorted by the first item) increasing in the second."""
    tails: list[int] = []
    tail_at: list[int] = []
    back: list[int] = [-1] * len(pairs)
    for k, (_, j) in enumerate(pairs):
        pos = bisect_left(tails, j)
        if pos == len(tails):
            tails.append(j)
            tail_at.append(k)
        else:
            tails[pos] = j
            tail_at[pos] = k
        back[k] = tail_at[pos - 1] if pos else -1
    out: list[tuple[int, int]] = []
    k = tail_at[-1] if tail_at else -1
    while k >= 0:
        out.append(pairs[k])
        k = back[k]
    out.reverse()
    return out


MYERS_BUDGET = 4_000_000  # (lines) x (edit distance) steps before giving up on a region


def _myers(
    a: Sequence[str], b: Sequence[str], i1: int, i2: int, j1: int, j2: int, out: list[Opcode]
) -> bool:
    """Myers' O((N+M)D) shortest edit script for a region without unique lines (repeated
    rows); False, with nothing emitted, when the edit distance exceeds the budget."""
    n, m = i2 - i1, j2 - j1
    max_d = min(n + m, MYERS_BUDGET // (n + m))
    offset = max_d + 1
    v = [0] * (2 * max_d + 3)
    trace: list[list[int]] = []
    for d in range(max_d + 1):
        trace.append(v[offset - d - 1 : offset + d + 2])  # only what step d reads
        for k in range(-d, d + 1, 2):
            if k == -d or (k != d and v[offset + k - 1] < v[offset + k + 1]):
                x = v[offset + k + 1]
            else:
                x = v[offset + k - 1] + 1
            y = x - k
            while x < n and y < m and a[i1 + x] == b[j1 + y]:
                x += 1
                y += 1
            v[offset + k] = x
            if x >= n and y >= m:
                _backtrack(trace, d, n, m, i1, j1, out)
                return True
    return False


def _backtrack(
    trace: list[list[int]], d_end: int, n: int, m: int, i1: int, j1: int, out: list[Opcode]
) -> None:
    ops: list[Opcode] = []
    x, y = n, m
    for d in range(d_end, 0, -1):
        v = trace[d]  # v[t] is V[k] for k = t - d - 1 (as it stood before step d)
        k = x - y
        if k == -d or (k != d and v[k - 1 + d + 1] < v[k + 1 + d + 1]):
            prev_k = k + 1
        else:
            prev_k = k - 1
        prev_x = v[prev_k + d + 1]
        prev_y = prev_x - prev_k
        mid_x, mid_y = (prev_x, prev_y + 1) if prev_k == k + 1 else (prev_x + 1, prev_y)
        if x > mid_x:
            ops.append(("equal", i1 + mid_x, i1 + x, j1 + mid_y, j1 + y))
        if prev_k == k + 1:
            ops.append(("insert", i1 + prev_x, i1 + prev_x, j1 + prev_y, j1 + mid_y))
        else:
            ops.append(("delete", i1 + prev_x, i1 + mid_x, j1 + prev_y, j1 + prev_y))
        x, y = prev_x, prev_y
    if x > 0:
        ops.append(("equal", i1, i1 + x, j1, j1 + y))
    ops.reverse()
    out.extend(ops)


def _positional(
    a: Sequence[str], b: Sequence[str], i1: int, i2: int, j1: int, j2: int, out: list[Opcode]
) -> None:
    """Last resort for a huge region far apart: line k against line k (equal where equal)."""
    common = min(i2 - i1, j2 - j1)
    for k in range(common):
        tag = "equal" if a[i1 + k] == b[j1 + k] else "replace"
        out.append((tag, i1 + k, i1 + k + 1, j1 + k, j1 + k + 1))
    if i1 + common < i2:
        out.append(("delete", i1 + common, i2, j1 + common, j1 + common))
    if j1 + common < j2:
        out.append(("insert", i1 + common, i1 + common, j1 + common, j2))


def _merge(ops: list[Opcode]) -> list[Opcode]:
    """Join adjacent opcodes of the same tag, and adjacent changes into one `replace` (what
    difflib would have produced)."""
    out: list[Opcode] = []
    for op in ops:
        if op[1] == op[2] and op[3] == op[4]:
            continue
        if out and out[-1][2] == op[1] and out[-1][4] == op[3]:
            prev = out[-1]
            tags = {prev[0], op[0]}
            if len(tags) == 1 or (tags <= _CHANGES and "equal" not in tags):
                tag = op[0] if len(tags) == 1 else "replace"
                out[-1] = (tag, prev[1], op[2], prev[3], op[4])
                continue
        out.append(op)
    return out


_CHANGES = frozenset({"replace", "delete", "insert"})
