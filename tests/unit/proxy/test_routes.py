"""Route model: mode/pattern parsing and most-specific matching (with Hypothesis properties)."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strangler_proxy.routes import (
    DEFAULT_MATCH,
    Route,
    RouteError,
    RouteTable,
    build_route,
    parse_methods,
    parse_mode,
    parse_pattern,
    specificity_key,
)


@pytest.mark.parametrize(
    ("text", "kind", "percent"),
    [
        ("monolith", "monolith", 0),
        ("SHADOW", "shadow", 0),
        ("extracted", "extracted", 0),
        ("canary:0", "canary", 0),
        ("canary:25", "canary", 25),
        ("canary:12.5", "canary", Decimal("12.5")),
        ("canary:100", "canary", 100),
    ],
)
def test_valid_modes_parse_to_kind_and_percent(text: str, kind: str, percent: object) -> None:
    mode = parse_mode(text)
    assert mode.kind == kind
    assert mode.percent == Decimal(percent)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("canary:150", "canary percent must be between 0 and 100"),
        ("canary:-1", "canary percent must be a number"),
        ("canary:12.55", "at most one decimal"),
        ("canary:", "canary percent must be a number"),
        ("canary:abc", "canary percent must be a number"),
        ("blue-green", "unknown mode"),
        ("", "mode must be one of"),
    ],
)
def test_malformed_modes_are_rejected_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(RouteError, match=message):
        parse_mode(text)


def test_canary_threshold_is_percent_times_one_hundred_buckets() -> None:
    assert parse_mode("canary:12.5").threshold == 1250
    assert str(parse_mode("canary:12.5")) == "canary:12.5"
    assert str(parse_mode("canary:10")) == "canary:10"


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("products", "must start with '/'"),
        ("/products/<float:x>", "unknown converter"),
        ("/products/id-<int:id>", "must span a whole segment"),
        ("/a/<path:rest>/b", "must be the last segment"),
        ("/a/<int:x>/<string:x>", "appears twice"),
        ("/a//b", "empty segment"),
        ("/a?b=1", "query"),
    ],
)
def test_bad_patterns_are_rejected_up_front(pattern: str, message: str) -> None:
    with pytest.raises(RouteError, match=message):
        parse_pattern(pattern)


def test_methods_are_normalised_and_unknown_ones_rejected() -> None:
    assert parse_methods("get, head") == {"GET", "HEAD"}
    with pytest.raises(RouteError, match="unknown HTTP method"):
        parse_methods("FETCH")
    with pytest.raises(RouteError, match="at least one"):
        parse_methods("")


def test_non_monolith_modes_need_a_real_service() -> None:
    with pytest.raises(RouteError, match="needs a service"):
        build_route("GET", "/x", "monolith", "extracted")


def _table(*specs: tuple[str, str]) -> RouteTable:
    return RouteTable(build_route(m, p, "svc", "extracted") for m, p in specs)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/products/new", "/products/new"),
        ("/products/42", "/products/<int:id>"),
        ("/products/abc", "/products/<string:slug>"),
        ("/products/42/reviews", "/products/<int:id>/reviews"),
        ("/products/a/b/c", "/products/<path:rest>"),
        ("/products", "/products"),
        ("/orders/1", "<default>"),
    ],
)
def test_most_specific_route_wins(path: str, expected: str) -> None:
    table = _table(
        ("GET", "/products"),
        ("GET", "/products/new"),
        ("GET", "/products/<int:id>"),
        ("GET", "/products/<string:slug>"),
        ("GET", "/products/<int:id>/reviews"),
        ("GET", "/products/<path:rest>"),
    )
    assert table.match("GET", path).pattern == expected


def test_undeclared_method_falls_through_to_a_less_specific_route_or_default() -> None:
    table = _table(("POST", "/products/<int:id>"), ("GET", "/products/<path:rest>"))
    assert table.match("GET", "/products/1").pattern == "/products/<path:rest>"
    assert table.match("DELETE", "/products/1") is DEFAULT_MATCH
    assert DEFAULT_MATCH.service == "monolith"
    assert DEFAULT_MATCH.mode.kind == "monolith"


def test_duplicate_routes_are_refused() -> None:
    with pytest.raises(RouteError, match="duplicate"):
        _table(("GET", "/a"), ("GET", "/a"))


def test_route_round_trips_through_its_dict_form() -> None:
    route = build_route("GET", "/p/<int:id>", "catalog", "canary:5", sticky_header="X-User")
    assert Route.from_dict(route.to_dict()) == route


# -- properties ---------------------------------------------------------------------------

segment_kinds = st.sampled_from(["static", "int", "string", "path"])
static_words = st.sampled_from(["a", "b", "items", "7"])


@st.composite
def patterns(draw: st.DrawFn) -> str:
    length = draw(st.integers(1, 4))
    parts = []
    for index in range(length):
        kind = draw(segment_kinds)
        if kind == "path" and index != length - 1:
            kind = "string"
        if kind == "static":
            parts.append(draw(static_words))
        else:
            parts.append(f"<{kind}:v{index}>")
    return "/" + "/".join(parts)


concrete_paths = st.lists(
    st.sampled_from(["a", "b", "items", "7", "42", "x-y"]), min_size=1, max_size=5
).map(lambda segs: "/" + "/".join(segs))


@settings(max_examples=300, deadline=None)
@given(st.sets(patterns(), min_size=1, max_size=12), concrete_paths)
def test_match_is_the_most_specific_of_all_matching_patterns(
    pattern_set: set[str], path: str
) -> None:
    table = _table(*(("GET", p) for p in pattern_set))
    compiled = [parse_pattern(p) for p in pattern_set]
    matching = [p for p in compiled if p.match(path)]
    result = table.match("GET", path)
    if not matching:
        assert result is DEFAULT_MATCH
    else:
        best = max(matching, key=specificity_key)
        assert result.pattern == best.text


@settings(max_examples=200, deadline=None)
@given(st.lists(patterns(), min_size=1, max_size=10, unique=True), concrete_paths, st.randoms())
def test_match_does_not_depend_on_declaration_order(
    pattern_list: list[str], path: str, rnd: random.Random
) -> None:
    shuffled = list(pattern_list)
    rnd.shuffle(shuffled)
    first = _table(*(("GET", p) for p in pattern_list)).match("GET", path)
    second = _table(*(("GET", p) for p in shuffled)).match("GET", path)
    assert first.pattern == second.pattern


@settings(max_examples=200, deadline=None)
@given(patterns(), st.data())
def test_a_pattern_matches_paths_generated_from_it_and_static_beats_it(
    pattern: str, data: st.DataObject
) -> None:
    segments = []
    for part in pattern[1:].split("/"):
        if part.startswith("<int:"):
            segments.append(str(data.draw(st.integers(0, 10**6))))
        elif part.startswith("<string:"):
            segments.append(data.draw(st.sampled_from(["abc", "x-y", "42"])))
        elif part.startswith("<path:"):
            segments.append(data.draw(st.sampled_from(["p", "p/q", "p/q/r"])))
        else:
            segments.append(part)
    path = "/" + "/".join(segments)
    assert parse_pattern(pattern).match(path)
    table = _table(("GET", pattern), ("GET", path)) if path != pattern else _table(("GET", pattern))
    assert table.match("GET", path).pattern == path
