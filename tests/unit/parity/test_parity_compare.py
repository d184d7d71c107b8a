"""Comparator: exact paths, null vs absent, types, renames, text, headers, status."""

from __future__ import annotations

import json

from parity.compare import Comparator, diff_json, diff_text
from parity.model import ABSENT, DiffKind, Outcome, Request, Response


def kinds(diffs):
    return {(d.kind, d.path) for d in diffs}


def test_identical_documents_have_no_differences():
    doc = {"items": [{"id": 1, "price": {"cents": 5, "currency": "EUR"}}], "next": None}
    assert diff_json(doc, json.loads(json.dumps(doc))) == []


def test_null_and_absent_are_different_things():
    assert kinds(diff_json({"d": None}, {})) == {(DiffKind.MISSING, "$.d")}
    assert kinds(diff_json({}, {"d": None})) == {(DiffKind.EXTRA, "$.d")}
    missing = diff_json({"d": None}, {})[0]
    assert missing.control is None and missing.candidate is ABSENT


def test_integer_string_float_and_boolean_are_distinct_types():
    diffs = diff_json({"a": 1, "b": 1, "c": 1, "d": 0}, {"a": "1", "b": 1.0, "c": True, "d": False})
    assert kinds(diffs) == {
        (DiffKind.TYPE, "$.a"),
        (DiffKind.TYPE, "$.b"),
        (DiffKind.TYPE, "$.c"),
        (DiffKind.TYPE, "$.d"),
    }


def test_type_differences_deep_inside_equal_looking_containers_are_found():
    control = {"items": [{"id": 1, "tags": [1, 2]}], "big": [2**70]}
    candidate = {"items": [{"id": 1, "tags": [1, 2.0]}], "big": [2**70]}
    assert kinds(diff_json(control, candidate)) == {(DiffKind.TYPE, "$.items[0].tags[1]")}


def test_json_bodies_beyond_what_fast_parsers_take_are_still_compared():
    """NaN literals and integers past 64 bits parse as the standard library parses them."""
    request, headers = Request("GET", "/x"), {"Content-Type": "application/json"}
    control = Response(200, headers, b'{"n": 123456789012345678901234567890, "f": NaN}')
    same = Response(200, headers, b'{"n": 123456789012345678901234567890, "f": NaN}')
    other = Response(200, headers, b'{"n": 123456789012345678901234567891, "f": NaN}')
    comparator = Comparator()
    assert kinds(comparator.compare(request, control, other).differences) >= {
        (DiffKind.VALUE, "$.n")
    }
    assert (DiffKind.VALUE, "$.n") not in kinds(
        comparator.compare(request, control, same).differences
    )


def test_integers_past_64_bits_are_compared_exactly_in_otherwise_plain_json():
    """No NaN to send the body to the standard library: a fast parser reading such an
    integer as a float would make the last digit, and int versus float, invisible."""
    request, headers = Request("GET", "/x"), {"Content-Type": "application/json"}
    control = Response(200, headers, b'{"n": 123456789012345678901234567890, "m": -1}')
    other = Response(200, headers, b'{"n": 123456789012345678901234567891, "m": -1}')
    as_float = Response(200, headers, b'{"n": 1.2345678901234568e+29, "m": -1}')
    comparator = Comparator()
    assert kinds(comparator.compare(request, control, other).differences) == {
        (DiffKind.VALUE, "$.n")
    }
    assert kinds(comparator.compare(request, control, as_float).differences) == {
        (DiffKind.TYPE, "$.n")
    }
    assert comparator.compare(request, control, control).outcome is Outcome.MATCH


def test_a_renamed_key_shows_as_missing_plus_extra():
    diffs = diff_json({"category_id": 3}, {"categoryId": 3})
    assert kinds(diffs) == {(DiffKind.MISSING, "$.category_id"), (DiffKind.EXTRA, "$.categoryId")}


def test_nested_value_difference_is_reported_at_its_exact_path():
    a = {"items": [{"price": {"cents": 1}}] * 4}
    b = {"items": [{"price": {"cents": 1}}] * 3 + [{"price": {"cents": 2}}]}
    assert kinds(diff_json(a, b)) == {(DiffKind.VALUE, "$.items[3].price.cents")}


def test_odd_keys_are_quoted_in_paths():
    assert diff_json({"a b": 1}, {"a b": 2})[0].path == "$['a b']"


def test_same_elements_in_another_order_is_one_order_difference():
    diffs = diff_json({"items": [{"id": 1}, {"id": 2}]}, {"items": [{"id": 2}, {"id": 1}]})
    assert [(d.kind, d.path, d.control, d.candidate) for d in diffs] == [
        (DiffKind.ORDER, "$.items", [1, 2], [2, 1])
    ]


def test_reordered_and_changed_records_report_order_and_each_change():
    a = [{"id": 1, "v": 1}, {"id": 2, "v": 2}]
    b = [{"id": 2, "v": 2}, {"id": 1, "v": 9}]
    assert kinds(diff_json(a, b)) == {(DiffKind.ORDER, "$"), (DiffKind.VALUE, "$[0].v")}


def test_shorter_and_longer_arrays_report_missing_and_extra_elements():
    assert kinds(diff_json([1, 2, 3], [1, 2])) == {(DiffKind.MISSING, "$[2]")}
    assert kinds(diff_json([1], [1, 5])) == {(DiffKind.EXTRA, "$[1]")}


def test_text_bodies_ignore_whitespace_and_line_endings_but_not_words():
    assert diff_text("a  b\r\nc\r\n", "a b\nc") == []
    diffs = diff_text("one\ntwo\nthree", "one\nTWO\nthree\nfour")
    assert kinds(diffs) == {(DiffKind.VALUE, "line:2"), (DiffKind.EXTRA, "line:4")}


def _resp(status=200, body=b"{}", ctype="application/json", **headers):
    return Response(status, {"Content-Type": ctype, **headers}, body)


def test_status_content_type_and_configured_headers_are_compared():
    cmp = Comparator()
    req = Request("GET", "/x")
    r = cmp.compare(req, _resp(400, Cache_Control="no"), _resp(404, ctype="text/html"))
    assert kinds(r.differences) == {
        (DiffKind.STATUS, "status"),
        (DiffKind.HEADER, "headers.content-type"),
    }
    assert r.outcome is Outcome.MISMATCH


def test_content_type_spacing_and_case_are_normalised():
    cmp = Comparator()
    a = _resp(ctype="application/json; charset=utf-8")
    b = _resp(ctype="Application/JSON;charset=UTF-8")
    assert cmp.compare(Request("GET", "/x"), a, b).outcome is Outcome.MATCH


def test_non_json_candidate_body_for_a_json_control_is_a_body_difference():
    r = Comparator().compare(Request("GET", "/x"), _resp(body=b'{"a":1}'), _resp(body=b"<html>"))
    assert (DiffKind.BODY, "$") in kinds(r.differences)


def test_a_failed_candidate_is_an_error_result_not_an_exception():
    r = Comparator().compare(Request("GET", "/x"), _resp(), None, candidate_error="boom")
    assert r.outcome is Outcome.ERROR and r.error == "boom"


def test_secondary_control_answer_turns_its_own_differences_into_noise():
    cmp = Comparator()
    primary = _resp(body=b'{"rid": "a", "v": 1}')
    secondary = _resp(body=b'{"rid": "b", "v": 1}')
    candidate = _resp(body=b'{"rid": "c", "v": 2}')
    r = cmp.compare(Request("GET", "/x"), primary, candidate, secondary=secondary)
    assert [d.path for d in r.noise] == ["$.rid"]
    assert [d.path for d in r.regressions] == ["$.v"]


def test_comparator_finds_the_one_difference_in_a_10kb_body():
    """Speed is measured in bench/parity_bench.py; here only the finding on a 10 KB body."""
    items = [
        {
            "id": i,
            "name": f"Product {i}",
            "price": {"cents": 1000 + i, "currency": "EUR"},
            "active": True,
            "tags": ["a", "b"],
            "description": None,
        }
        for i in range(80)
    ]
    a = json.dumps({"items": items, "page": 1, "total": 80}).encode()
    items[40]["price"]["cents"] = 1
    b = json.dumps({"items": items, "page": 1, "total": 80}).encode()
    assert 8_000 < len(a) < 14_000
    r = Comparator().compare(Request("GET", "/products"), _resp(body=a), _resp(body=b))
    assert [d.path for d in r.differences] == ["$.items[40].price.cents"]
