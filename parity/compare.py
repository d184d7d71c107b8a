"""The comparator: status, chosen headers and bodies of two responses, under rules.

JSON bodies get a structural diff with exact paths; null differs from absent, and
integer/float/string/boolean are distinct types. Text bodies are compared line by line after
normalising whitespace and line endings. Noise (from rules, learned, or from this request's
own primary/secondary control pair) is marked on the differences, never dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import orjson

from kitcore.jsonscan import may_hold_big_int
from parity.depth import (
    MAX_WALK_DEPTH,
    clip,
    first_difference_offset,
    path_at_offset,
    preview_at,
)
from parity.model import (
    ABSENT,
    ComparisonResult,
    Difference,
    DiffKind,
    Request,
    Response,
    both_denied,
)
from parity.paths import Segment, generalise, render_path
from parity.rules import (
    IGNORE,
    NORMALISE,
    TOLERANCE,
    UNORDERED,
    CompiledRules,
    EndpointResolver,
    RuleSet,
)
from parity.textdiff import line_opcodes

MAX_DIFFERENCES = 500
_SCALARS = (str, int, float, bool, type(None))


def json_type(value: Any) -> str:
    t = type(value)
    if t is dict:
        return "object"
    if t is list:
        return "array"
    if t is str:
        return "string"
    if t is bool:
        return "boolean"
    if t is int:
        return "integer"
    if t is float:
        return "number"
    if value is None:
        return "null"
    return t.__name__


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


_PLAIN = frozenset({str, int, bool, float})


def _strictly_equal(a: Any, b: Any) -> bool:
    """Equal values that also agree in every type, all the way down: 1 vs 1.0 vs True.

    Containers are told apart by serialising both at C speed (orjson); repr() is the
    fallback for what orjson refuses (integers beyond 64 bits, non-JSON values). Values too
    deep for either are "not known equal": the walk then compares them piece by piece.
    NaN equals NaN here (the same answer twice is no difference)."""
    t = type(a)
    if t is not type(b):
        return False
    try:
        if a != b:
            return t is float and a != a and b != b
        if t in _PLAIN:
            return True
        try:
            return orjson.dumps(a) == orjson.dumps(b)
        except (TypeError, orjson.JSONEncodeError):
            return repr(a) == repr(b)
    except RecursionError:
        return False


def _canonical(value: Any) -> str:
    """Sorted-key JSON text of a value; a value too deep for the encoder gets a text of its
    own (it then matches nothing exactly and is compared under rules instead)."""
    try:
        return _CANONICAL.encode(value)
    except RecursionError:
        return f"<deep {id(value)}>"


class _Differ:
    """One structural walk; collects differences into `out` (capped)."""

    __slots__ = ("rules", "matcher", "actions", "out", "limit")

    def __init__(self, rules: CompiledRules | None, limit: int = MAX_DIFFERENCES) -> None:
        self.rules = rules
        self.matcher = rules.matcher if rules is not None else None
        self.actions = rules.actions if rules is not None else ()
        self.out: list[Difference] = []
        self.limit = limit

    def emit(self, kind: DiffKind, segs: tuple[Segment, ...], a: Any, b: Any) -> None:
        if len(self.out) < self.limit:
            self.out.append(Difference(kind, render_path(segs), clip(a), clip(b)))

    def run(self, a: Any, b: Any) -> list[Difference]:
        if _strictly_equal(a, b):
            return self.out
        if self.matcher is None:
            self.walk(a, b, (), None, ())
        else:
            state, accepted = self.matcher.start()
            self.walk(a, b, (), state, accepted)
        return self.out

    def child(self, state: Any, seg: Segment) -> tuple[Any, tuple[int, ...]]:
        if state is None:
            return None, ()
        return self.matcher.step(state, seg)  # type: ignore[union-attr]

    def walk(
        self, a: Any, b: Any, segs: tuple[Segment, ...], state: Any, accepted: tuple[int, ...]
    ) -> None:
        if len(segs) >= MAX_WALK_DEPTH:
            self.walk_deep(a, b, segs)
            return
        tolerance = None
        unordered: Any = ABSENT
        if accepted:
            for idx in accepted:
                action, arg = self.actions[idx]
                if action == IGNORE:
                    return
                if action == NORMALISE:
                    a, b = arg(a), arg(b)
                elif action == TOLERANCE:
                    tolerance = arg
                elif action == UNORDERED:
                    unordered = arg
        ta, tb = type(a), type(b)
        if ta is not tb:  # a tolerance never hides a type change: 1 and 1.0 differ
            self.emit(DiffKind.TYPE, segs, a, b)
            return
        if ta is dict:
            self.walk_object(a, b, segs, state)
        elif ta is list:
            if unordered is not ABSENT:
                self.walk_unordered(a, b, segs, state, unordered)
            else:
                self.walk_array(a, b, segs, state)
        elif not _scalar_equal(a, b):
            if tolerance is not None and ta in (int, float) and tolerance.accepts(a, b):
                return
            self.emit(DiffKind.VALUE, segs, a, b)

    def walk_deep(self, a: Any, b: Any, segs: tuple[Segment, ...]) -> None:
        """Below MAX_WALK_DEPTH: the same structural comparison (no rules, no order
        detection) with an explicit stack, so no nesting depth can exhaust the call stack."""
        stack: list[tuple[Any, Any, tuple[Segment, ...]]] = [(a, b, segs)]
        while stack and len(self.out) < self.limit:
            a, b, segs = stack.pop()
            ta = type(a)
            if ta is not type(b):
                self.emit(DiffKind.TYPE, segs, a, b)
            elif ta is dict:
                children = []
                for key, va in a.items():
                    vb = b.get(key, ABSENT)
                    if vb is ABSENT:
                        self.emit(DiffKind.MISSING, (*segs, key), va, ABSENT)
                    elif va is not vb:
                        children.append((va, vb, (*segs, key)))
                for key, vb in b.items():
                    if key not in a:
                        self.emit(DiffKind.EXTRA, (*segs, key), ABSENT, vb)
                stack.extend(reversed(children))
            elif ta is list:
                n = min(len(a), len(b))
                for i in range(n, len(a)):
                    self.emit(DiffKind.MISSING, (*segs, i), a[i], ABSENT)
                for i in range(n, len(b)):
                    self.emit(DiffKind.EXTRA, (*segs, i), ABSENT, b[i])
                stack.extend((a[i], b[i], (*segs, i)) for i in reversed(range(n)))
            elif not _scalar_equal(a, b):
                self.emit(DiffKind.VALUE, segs, a, b)

    def walk_object(self, a: dict, b: dict, segs: tuple[Segment, ...], state: Any) -> None:
        for key, va in a.items():
            vb = b.get(key, ABSENT)
            if _strictly_equal(va, vb):
                continue  # strictly equal values differ under no rule
            if state is None:
                if vb is ABSENT:
                    self.emit(DiffKind.MISSING, (*segs, key), va, ABSENT)
                    continue
                self.walk(va, vb, (*segs, key), None, ())
                continue
            cstate, caccepted = self.matcher.step(state, key)  # type: ignore[union-attr]
            if vb is ABSENT:
                if not self._ignored(caccepted):
                    self.emit(DiffKind.MISSING, (*segs, key), va, ABSENT)
                continue
            self.walk(va, vb, (*segs, key), cstate, caccepted)
        if len(b) != len(a) or any(k not in a for k in b):
            for key, vb in b.items():
                if key not in a:
                    _, caccepted = self.child(state, key)
                    if not self._ignored(caccepted):
                        self.emit(DiffKind.EXTRA, (*segs, key), ABSENT, vb)

    def _ignored(self, accepted: tuple[int, ...]) -> bool:
        return any(self.actions[i][0] == IGNORE for i in accepted)

    def walk_array(self, a: list, b: list, segs: tuple[Segment, ...], state: Any) -> None:
        n = min(len(a), len(b))
        mark = len(self.out)
        differing: list[int] = []
        for i in range(n):
            va, vb = a[i], b[i]
            if _strictly_equal(va, vb):
                continue
            differing.append(i)
            if state is None:
                self.walk(va, vb, (*segs, i), None, ())
            else:
                cstate, caccepted = self.matcher.step(state, i)  # type: ignore[union-attr]
                self.walk(va, vb, (*segs, i), cstate, caccepted)
        if len(self.out) > mark and len(a) == len(b) and len(differing) > 1:
            # only the differing positions can be a permutation of each other
            if self._same_multiset([a[i] for i in differing], [b[i] for i in differing]):
                # same elements, other order: one `order` difference says it better
                del self.out[mark:]
                self.emit(DiffKind.ORDER, segs, _order_view(a), _order_view(b))
                return
            if _same_ids_other_order(a, b):
                # same records (by id) in another order, some also changed: report the
                # order once, then compare each record with its counterpart
                del self.out[mark:]
                self.emit(DiffKind.ORDER, segs, _order_view(a), _order_view(b))
                self.walk_unordered(a, b, segs, state, "id")
                return
        for i in range(n, len(a)):
            _, caccepted = self.child(state, i)
            if not self._ignored(caccepted):
                self.emit(DiffKind.MISSING, (*segs, i), a[i], ABSENT)
        for i in range(n, len(b)):
            _, caccepted = self.child(state, i)
            if not self._ignored(caccepted):
                self.emit(DiffKind.EXTRA, (*segs, i), ABSENT, b[i])

    @staticmethod
    def _same_multiset(a: list, b: list) -> bool:
        try:
            return sorted(map(_canonical, a)) == sorted(map(_canonical, b))
        except (TypeError, ValueError, RecursionError):
            return False

    def _equal_under_rules(
        self, va: Any, vb: Any, segs: tuple[Segment, ...], state: Any, acc: tuple[int, ...]
    ) -> bool:
        probe = _Differ(self.rules, limit=1)
        probe.walk(va, vb, segs, state, acc)
        return not probe.out

    def walk_unordered(
        self, a: list, b: list, segs: tuple[Segment, ...], state: Any, key: str | None
    ) -> None:
        if key is not None:
            # a key may repeat: each control element takes a candidate element of its key,
            # one equal to it under the rules first, else the first one left
            by_key: dict[Any, list[int]] = {}
            for j, vb in enumerate(b):
                if isinstance(vb, dict) and key in vb:
                    by_key.setdefault(_canonical(vb[key]), []).append(j)
            slots_of = [
                by_key.get(_canonical(va[key]), []) if isinstance(va, dict) and key in va else []
                for va in a
            ]
            partner: dict[int, int] = {}
            for i, slots in enumerate(slots_of):
                if len(slots) > 1:
                    cstate, cacc = self.child(state, i)
                    j = next(
                        (
                            k
                            for k in slots
                            if self._equal_under_rules(a[i], b[k], (*segs, i), cstate, cacc)
                        ),
                        None,
                    )
                    if j is not None:
                        slots.remove(j)
                        partner[i] = j
            for i, slots in enumerate(slots_of):
                if i not in partner and slots:
                    partner[i] = slots.pop(0)
            used: set[int] = set(partner.values())
            for i, va in enumerate(a):
                cstate, cacc = self.child(state, i)
                j = partner.get(i)
                if j is None:
                    if not self._ignored(cacc):
                        self.emit(DiffKind.MISSING, (*segs, i), va, ABSENT)
                    continue
                self.walk(va, b[j], (*segs, i), cstate, cacc)
            for j, vb in enumerate(b):
                if j not in used:
                    _, cacc = self.child(state, j)
                    if not self._ignored(cacc):
                        self.emit(DiffKind.EXTRA, (*segs, j), ABSENT, vb)
            return
        # keyless: exact (canonical) matches first, then rule-aware matches, rest missing/extra
        remaining: dict[str, list[int]] = {}
        for j, vb in enumerate(b):
            remaining.setdefault(_canonical(vb), []).append(j)
        used = set()
        unmatched: list[int] = []
        for i, va in enumerate(a):
            slots = remaining.get(_canonical(va))
            if slots:
                used.add(slots.pop(0))
            else:
                unmatched.append(i)
        leftovers = [j for j in range(len(b)) if j not in used]
        for i in unmatched:
            cstate, cacc = self.child(state, i)
            if self._ignored(cacc):
                continue
            match = next(
                (
                    j
                    for j in leftovers
                    if self._equal_under_rules(a[i], b[j], (*segs, i), cstate, cacc)
                ),
                None,
            )
            if match is None:
                self.emit(DiffKind.MISSING, (*segs, i), a[i], ABSENT)
            else:
                leftovers.remove(match)
        for j in leftovers:
            _, cacc = self.child(state, j)
            if not self._ignored(cacc):
                self.emit(DiffKind.EXTRA, (*segs, j), ABSENT, b[j])


def _same_ids_other_order(a: list, b: list) -> bool:
    try:
        ids_a = [x["id"] for x in a if type(x) is dict]
        ids_b = [x["id"] for x in b if type(x) is dict]
    except KeyError:
        return False
    if len(ids_a) != len(a) or len(ids_b) != len(b) or ids_a == ids_b:
        return False
    try:
        return len(set(ids_a)) == len(ids_a) and set(ids_a) == set(ids_b)
    except TypeError:
        return False


def _order_view(items: list) -> list:
    """Short view of an array for an `order` difference: ids when elements have them."""
    if items and all(isinstance(x, dict) and "id" in x for x in items):
        return [x["id"] for x in items]
    return items


def diff_json(control: Any, candidate: Any, rules: CompiledRules | None = None) -> list[Difference]:
    """Structural differences between two parsed JSON documents."""
    return _Differ(rules).run(control, candidate)


def _normalise_text(text: str) -> list[str]:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return [" ".join(line.split()) for line in lines if line.strip()]


def diff_text(control: str, candidate: str) -> list[Difference]:
    """Line differences after normalising whitespace and line endings; paths are `line:N`."""
    a, b = _normalise_text(control), _normalise_text(candidate)
    if a == b:
        return []
    out: list[Difference] = []
    for tag, i1, i2, j1, j2 in line_opcodes(a, b):
        if tag == "equal":
            continue
        if tag == "replace":
            for k in range(max(i2 - i1, j2 - j1)):
                ca = a[i1 + k] if i1 + k < i2 else ABSENT
                cb = b[j1 + k] if j1 + k < j2 else ABSENT
                kind = (
                    DiffKind.VALUE
                    if ca is not ABSENT and cb is not ABSENT
                    else (DiffKind.MISSING if cb is ABSENT else DiffKind.EXTRA)
                )
                out.append(
                    Difference(kind, f"line:{(i1 + k if ca is not ABSENT else j1 + k) + 1}", ca, cb)
                )
        elif tag == "delete":
            out.extend(
                Difference(DiffKind.MISSING, f"line:{i + 1}", a[i], ABSENT) for i in range(i1, i2)
            )
        elif tag == "insert":
            out.extend(
                Difference(DiffKind.EXTRA, f"line:{j + 1}", ABSENT, b[j]) for j in range(j1, j2)
            )
        if len(out) >= MAX_DIFFERENCES:
            break
    return out[:MAX_DIFFERENCES]


def _norm_header(name: str, value: str) -> str:
    value = " ".join(value.split())
    if name == "content-type":
        return ";".join(p.strip() for p in value.lower().split(";"))
    return value


class _TooDeep:
    """A JSON body nested deeper than any parser here accepts."""


TOO_DEEP: Any = _TooDeep()


def _try_json(body: bytes) -> tuple[bool, Any]:
    if not body:
        return False, None
    if not may_hold_big_int(body):  # orjson would read an integer beyond 64 bits as a float
        try:
            return True, orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # NaN/Infinity literals, lone surrogates...: the stdlib accepts those
    try:
        return True, json.loads(body)
    except RecursionError:
        return True, TOO_DEEP
    except ValueError:
        return False, None


def _scalar_equal(a: Any, b: Any) -> bool:
    return a == b or (a != a and b != b)  # NaN equals NaN


def deep_body_difference(control: bytes, candidate: bytes) -> Difference:
    """Bodies too deep to parse: one difference at the path where their bytes part."""
    at = first_difference_offset(control, candidate)
    return Difference(
        DiffKind.BODY,
        path_at_offset(control, at),
        f"<nested too deep to compare structurally> {preview_at(control, at)}",
        f"<nested too deep to compare structurally> {preview_at(candidate, at)}",
    )


def _preview(body: bytes, limit: int = 200) -> str:
    text = body[:limit].decode("utf-8", errors="replace")
    return text + ("..." if len(body) > limit else "")


class Comparator:
    """Compares responses per endpoint under a RuleSet; holds no per-run state."""

    def __init__(
        self, rules: RuleSet | None = None, resolver: EndpointResolver | None = None
    ) -> None:
        self.rules = rules or RuleSet()
        self.resolver = resolver or EndpointResolver(self.rules.endpoint_patterns())

    def endpoint_of(self, request: Request) -> str:
        return self.resolver.resolve(request.method, request.path)

    def differences(
        self, control: Response, candidate: Response, endpoint: str | None = None
    ) -> list[Difference]:
        """All differences (not yet classified as noise) between two responses."""
        rules = self.rules.compiled(endpoint or "*")
        out: list[Difference] = []
        if control.status != candidate.status:
            out.append(Difference(DiffKind.STATUS, "status", control.status, candidate.status))
        for name in rules.headers_to_compare(control.headers, candidate.headers):
            ha, hb = control.headers.get(name), candidate.headers.get(name)
            na = _norm_header(name, ha) if ha is not None else None
            nb = _norm_header(name, hb) if hb is not None else None
            if na != nb:
                out.append(
                    Difference(
                        DiffKind.HEADER,
                        f"headers.{name}",
                        ha if ha is not None else ABSENT,
                        hb if hb is not None else ABSENT,
                    )
                )
        out.extend(self.body_differences(control, candidate, rules))
        return out

    def body_differences(
        self, control: Response, candidate: Response, rules: CompiledRules
    ) -> list[Difference]:
        if control.body == candidate.body:
            return []
        if control.is_json or candidate.is_json:
            ok_a, a = _try_json(control.body)
            ok_b, b = _try_json(candidate.body)
            if a is TOO_DEEP or b is TOO_DEEP:
                return [deep_body_difference(control.body, candidate.body)]
            if ok_a and ok_b:
                return diff_json(a, b, rules if rules.matcher is not None else None)
            if ok_a or ok_b:
                return [
                    Difference(
                        DiffKind.BODY,
                        "$",
                        a if ok_a else _preview(control.body),
                        b if ok_b else _preview(candidate.body),
                    )
                ]
        try:
            ta, tb = control.body.decode("utf-8"), candidate.body.decode("utf-8")
        except UnicodeDecodeError:
            return [
                Difference(
                    DiffKind.BODY,
                    "$",
                    f"<{len(control.body)} bytes>",
                    f"<{len(candidate.body)} bytes>",
                )
            ]
        return diff_text(ta, tb)

    def noise_paths(self, primary: Response, secondary: Response, endpoint: str) -> set[str]:
        """Generalised paths where the control disagrees with itself (Diffy's noise)."""
        return {generalise(d.path) for d in self.differences(primary, secondary, endpoint)}

    def classify(
        self, differences: Iterable[Difference], endpoint: str, noise: Iterable[str] = ()
    ) -> list[Difference]:
        """Mark differences at declared or learned noise paths (or below them) as noise."""
        rules = self.rules.compiled(endpoint)
        learned = _NoiseIndex(noise)
        out = []
        for d in differences:
            is_noise = rules.is_noise(d.path) or learned.covers(d.path)
            out.append(d.as_noise() if is_noise else d.as_regression())
        return out

    def compare(
        self,
        request: Request,
        control: Response,
        candidate: Response | None,
        *,
        candidate_error: str | None = None,
        secondary: Response | None = None,
        noise: Iterable[str] = (),
        endpoint: str | None = None,
    ) -> ComparisonResult:
        """Full verdict for one request. A failed candidate is an `error`, never an exception."""
        endpoint = endpoint or self.endpoint_of(request)
        if candidate is None:
            return ComparisonResult(
                endpoint,
                request,
                error=candidate_error or "candidate gave no response",
                control=control,
            )
        diffs = self.differences(control, candidate, endpoint)
        extra_noise = set(noise)
        if diffs and secondary is not None:
            extra_noise |= self.noise_paths(control, secondary, endpoint)
        if diffs:
            diffs = self.classify(diffs, endpoint, extra_noise)
        return ComparisonResult(
            endpoint,
            request,
            diffs,
            control=control,
            candidate=candidate,
            denied=both_denied(control, candidate),
        )


class _NoiseIndex:
    """Noise path strings; a difference is covered when its generalised path, or an ancestor
    of it, is listed."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.paths = set(paths)

    def covers(self, path: str) -> bool:
        if not self.paths:
            return False
        if path in self.paths:
            return True
        g = generalise(path)
        if g in self.paths:
            return True
        # ancestors: cut at every '.' or '[' boundary
        for i in range(len(g) - 1, 0, -1):
            if g[i] in ".[" and g[:i] in self.paths:
                return True
        return False
