"""Rules: endpoint patterns, wildcard ignores, tolerance, unordered arrays, normalisers,
header lists, loading from dicts/TOML with clear errors."""

from __future__ import annotations

import pytest

from parity.compare import Comparator, diff_json
from parity.model import DiffKind, Outcome, Request, Response
from parity.paths import PathMatcher, PathSyntaxError, parse_pattern, render_path
from parity.rules import (
    CompiledRules,
    EndpointPattern,
    EndpointResolver,
    EndpointRules,
    RulesError,
    RuleSet,
)


def compiled(**kwargs):
    return CompiledRules(EndpointRules(**kwargs))


def paths(diffs):
    return sorted(d.path for d in diffs)


def test_endpoint_patterns_match_flask_style_and_openapi_placeholders():
    p = EndpointPattern.parse("GET /products/<int:id>")
    assert p.matches("GET", "/products/42") and not p.matches("GET", "/products/abc")
    assert not p.matches("POST", "/products/42")
    assert EndpointPattern.parse("/orders/{id}/pay").matches("POST", "/orders/5/pay")


def test_resolver_prefers_literal_paths_and_generalises_unknown_numeric_segments():
    r = EndpointResolver(["GET /products/<id>", "GET /products/export"])
    assert r.resolve("GET", "/products/export") == "GET /products/export"
    assert r.resolve("GET", "/products/7") == "GET /products/<id>"
    assert r.resolve("POST", "/orders/5/pay") == "POST /orders/<int:id>/pay"


def test_wildcard_and_descendant_ignores_remove_exactly_those_paths():
    a = {
        "request_id": 1,
        "items": [{"id": 1, "updated_at": "x"}, {"id": 2, "updated_at": "y"}],
        "meta": {"request_id": 5},
    }
    b = {
        "request_id": 2,
        "items": [{"id": 1, "updated_at": "z"}, {"id": 3, "updated_at": "w"}],
        "meta": {"request_id": 6},
    }
    rules = compiled(ignore=["$..request_id", "$.items[*].updated_at"])
    assert paths(diff_json(a, b, rules)) == ["$.items[1].id"]


def test_ignored_fields_that_are_missing_or_extra_are_not_reported():
    rules = compiled(ignore=["$.items[*].debug"])
    assert diff_json({"items": [{"debug": 1}]}, {"items": [{}]}, rules) == []
    assert diff_json({"items": [{}]}, {"items": [{"debug": 1}]}, rules) == []


def test_numeric_tolerance_accepts_small_differences_only():
    rules = compiled(tolerance=[{"path": "$.score", "abs": 0.01}, {"path": "$.big", "rel": 0.001}])
    assert diff_json({"score": 1.0, "big": 1000.0}, {"score": 1.005, "big": 1000.5}, rules) == []
    assert paths(diff_json({"score": 1.0, "big": 1000}, {"score": 1.02, "big": 1002}, rules)) == [
        "$.big",
        "$.score",
    ]


def test_a_tolerance_never_hides_a_type_change():
    rules = compiled(tolerance=[{"path": "$.n", "abs": 1}])
    [d] = diff_json({"n": 1}, {"n": 1.0}, rules)
    assert (d.kind, d.path) == ("type", "$.n")


def test_unordered_by_key_pairs_duplicate_keys_with_their_equal_element():
    rules = compiled(unordered=[{"path": "$.l", "key": "id"}])
    a = {"l": [{"id": 1, "v": 1}, {"id": 1, "v": 2}, {"id": 2, "v": 0}]}
    b = {"l": [{"id": 2, "v": 0}, {"id": 1, "v": 2}, {"id": 1, "v": 1}]}
    assert diff_json(a, b, rules) == []
    changed = {"l": [{"id": 1, "v": 2}, {"id": 1, "v": 3}, {"id": 2, "v": 0}]}
    assert [(d.path, d.control, d.candidate) for d in diff_json(a, changed, rules)] == [
        ("$.l[0].v", 1, 3)
    ]


def test_unordered_arrays_by_key_compare_matching_records():
    rules = compiled(unordered=[{"path": "$.items", "key": "sku"}])
    a = {"items": [{"sku": "A", "n": 1}, {"sku": "B", "n": 2}]}
    b = {"items": [{"sku": "B", "n": 2}, {"sku": "A", "n": 9}]}
    diffs = diff_json(a, b, rules)
    assert [(d.kind, d.path) for d in diffs] == [(DiffKind.VALUE, "$.items[0].n")]


def test_unordered_arrays_without_key_are_multisets():
    rules = compiled(unordered=[{"path": "$..tags"}])
    assert diff_json({"tags": ["a", "b", "b"]}, {"tags": ["b", "a", "b"]}, rules) == []
    diffs = diff_json({"tags": ["a", "b"]}, {"tags": ["b", "c"]}, rules)
    assert {(d.kind, d.path) for d in diffs} == {
        (DiffKind.MISSING, "$.tags[0]"),
        (DiffKind.EXTRA, "$.tags[1]"),
    }


def test_timestamp_normaliser_ignores_the_value_but_keeps_the_type():
    rules = compiled(normalize=[{"path": "$..created_at", "kind": "timestamp"}])
    a = {"created_at": "2026-01-01T00:00:00.000000Z"}
    assert diff_json(a, {"created_at": "2027-05-05T10:00:00.123456Z"}, rules) == []
    assert [d.kind for d in diff_json(a, {"created_at": None}, rules)] == [DiffKind.TYPE]
    assert [d.kind for d in diff_json(a, {"created_at": "yesterday"}, rules)] == [DiffKind.VALUE]


def test_timestamp_rounding_and_case_and_whitespace_normalisers():
    rules = compiled(
        normalize=[
            {"path": "$.t", "kind": "timestamp", "mode": "round", "unit": "min"},
            {"path": "$.email", "kind": "case"},
            {"path": "$.name", "kind": "whitespace"},
        ]
    )
    a = {"t": "2026-01-01T00:00:10Z", "email": "Ada@X.org", "name": "Ada  Lovelace "}
    b = {"t": "2026-01-01T00:00:20+00:00", "email": "ada@x.org", "name": "Ada Lovelace"}
    assert diff_json(a, b, rules) == []
    assert paths(diff_json(a, {**b, "t": "2026-01-01T00:05:00Z"}, rules)) == ["$.t"]


def test_header_allow_and_deny_lists():
    rs = RuleSet.from_dict(
        {
            "defaults": {"headers_allow": ["*"], "headers_deny": ["x-trace"]},
            "endpoints": [{"endpoint": "GET /a", "headers_allow": ["cache-control"]}],
        }
    )
    cmp = Comparator(rs)
    a = Response(
        200, {"Content-Type": "application/json", "X-Trace": "1", "Date": "d1", "Vary": "a"}, b"{}"
    )
    b = Response(
        200, {"Content-Type": "application/json", "X-Trace": "2", "Date": "d2", "Vary": "b"}, b"{}"
    )
    assert [d.path for d in cmp.compare(Request("GET", "/a"), a, b).differences] == ["headers.vary"]


def test_endpoint_rules_apply_only_to_their_endpoint():
    rs = RuleSet.from_dict(
        {"endpoints": [{"endpoint": "GET /products/<int:id>", "ignore": ["$.v"]}]}
    )
    cmp = Comparator(rs)
    a = Response(200, {"Content-Type": "application/json"}, b'{"v": 1}')
    b = Response(200, {"Content-Type": "application/json"}, b'{"v": 2}')
    assert cmp.compare(Request("GET", "/products/3"), a, b).outcome is Outcome.MATCH
    assert cmp.compare(Request("GET", "/orders/3"), a, b).outcome is Outcome.MISMATCH


def test_declared_noise_paths_are_reported_as_noise_not_regressions():
    rs = RuleSet.from_dict({"endpoints": [{"endpoint": "GET /x", "noise": ["$.meta", "status"]}]})
    a = Response(200, {"Content-Type": "application/json"}, b'{"meta": {"rid": 1}}')
    b = Response(201, {"Content-Type": "application/json"}, b'{"meta": {"rid": 2}}')
    r = Comparator(rs).compare(Request("GET", "/x"), a, b)
    assert r.outcome is Outcome.NOISE_ONLY and len(r.noise) == 2


TOML = """
[defaults]
ignore = ["$..request_id"]
headers_allow = ["cache-control"]

[[endpoints]]
endpoint = "GET /products"
ignore = ["$.items[*].updated_at"]
tolerance = [{ path = "$.items[*].score", abs = 0.5 }]
unordered = [{ path = "$.items[*].tags" }]
normalize = [{ path = "$..created_at", kind = "timestamp", mode = "round", unit = "s" }]
"""


def test_rules_load_from_toml_and_round_trip_through_toml_and_json(tmp_path):
    rs = RuleSet.from_toml(TOML)
    assert rs.rules_for("GET /products").ignore == ["$..request_id", "$.items[*].updated_at"]
    again = RuleSet.from_toml(rs.to_toml())
    assert again.to_dict() == rs.to_dict()
    rs.save(tmp_path / "r.json")
    assert RuleSet.load(tmp_path / "r.json").to_dict() == rs.to_dict()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"endpoints": [{"ignore": ["$.a"]}]}, "endpoints[0].endpoint: required"),
        ({"endpoints": [{"endpoint": "GET /a", "ignroe": []}]}, "unknown key(s) ['ignroe']"),
        ({"defaults": {"ignore": ["items.x"]}}, "must start with '$'"),
        ({"defaults": {"ignore": ["$.a[x]"]}}, "bad selector"),
        (
            {"endpoints": [{"endpoint": "GET /a", "tolerance": [{"path": "$.a", "abs": -1}]}]},
            "endpoints[0].tolerance[0].abs",
        ),
        (
            {
                "endpoints": [
                    {"endpoint": "GET /a", "normalize": [{"path": "$.a", "kind": "upper"}]}
                ]
            },
            "endpoints[0].normalize[0].kind",
        ),
        ({"endpoints": [{"endpoint": "FETCH /a"}]}, "unknown method"),
        ({"endpoints": [{"endpoint": "GET /a/<bad:x>"}]}, "unknown converter"),
        ({"defaults": {"ignore": "$.a"}}, "defaults.ignore: must be a list"),
        ({"extra": 1}, "rules: unknown key(s) ['extra']"),
    ],
)
def test_invalid_rules_raise_errors_naming_the_field(data, message):
    with pytest.raises(RulesError) as exc:
        RuleSet.from_dict(data)
    assert message in str(exc.value)


def test_invalid_toml_and_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(RulesError, match="invalid TOML"):
        RuleSet.from_toml("[defaults\n")
    with pytest.raises(RulesError, match="rules file"):
        RuleSet.load(tmp_path / "nope.toml")


def test_path_rendering_and_parsing_agree():
    segs = ("items", 3, "a b", "it's")
    rendered = render_path(segs)
    assert rendered == "$.items[3]['a b']['it\\'s']"
    m = PathMatcher.compile([rendered])
    assert m.matching(segs) == {0}
    with pytest.raises(PathSyntaxError):
        parse_pattern("$..")
