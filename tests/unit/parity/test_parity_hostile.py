"""Hostile inputs get an answer, never a crash: nesting deeper than any recursion, big text
bodies with repeated lines, NaN, type changes under a tolerance. (Speed on big inputs is
measured in bench/parity_bench.py, not here.)"""

from __future__ import annotations

import json
import random

from flask import Flask
from flask import Response as FlaskResponse
from hypothesis import given, settings
from hypothesis import strategies as st

from parity.compare import Comparator, diff_text
from parity.model import DiffKind, Outcome, Request, Response
from parity.recording import Redactor
from parity.report import RunReport, render_html, render_table
from parity.runner import FlaskBackend, Runner
from parity.sources import from_list
from parity.textdiff import line_opcodes


def nested(depth: int, leaf: str) -> bytes:
    """`{"a":[{"a":[ ... leaf ... ]}]}`: two JSON levels per step."""
    return b'{"a":[' * depth + leaf.encode() + b"]}" * depth


def json_response(body: bytes, status: int = 200) -> Response:
    return Response(status, {"Content-Type": "application/json"}, body)


def compare(a: bytes, b: bytes):
    return Comparator().compare(Request("GET", "/deep"), json_response(a), json_response(b))


def test_json_nested_500_levels_is_compared_down_to_the_differing_leaf():
    result = compare(nested(250, "1"), nested(250, "2"))
    [d] = result.differences
    assert (d.kind, d.control, d.candidate) == (DiffKind.VALUE, 1, 2)
    assert d.path == "$" + ".a[0]" * 250
    json.dumps(result.to_dict(include_bodies=True))  # the report can be written


def test_json_too_deep_to_parse_is_a_difference_at_the_deepest_path_reached():
    for depth in (1_000, 100_000):
        [d] = compare(nested(depth, '"x"'), nested(depth, '"y"')).differences
        assert d.kind is DiffKind.BODY
        assert d.path == "$" + ".a[0]" * depth
        assert "too deep" in d.control and '"x"' in d.control and '"y"' in d.candidate


def test_equal_deep_bodies_match_and_a_deep_subtree_kept_in_a_difference_is_clipped():
    assert compare(nested(3_000, "1"), nested(3_000, "1")).outcome is Outcome.MATCH
    a = b'{"x": ' + nested(200, "1") + b"}"
    [d] = compare(a, b'{"x": "flat"}').differences
    assert d.kind is DiffKind.TYPE and "clipped" in json.dumps(d.control)


def test_a_run_over_deep_bodies_finishes_with_a_report_table_and_html():
    def app(leaf: str) -> Flask:
        a = Flask("deep")

        @a.get("/d/<int:n>")
        def deep(n: int) -> FlaskResponse:
            return FlaskResponse(nested(n, leaf), content_type="application/json")

        return a

    control = FlaskBackend(app("1"))
    candidate = FlaskBackend(app("2"))
    requests = from_list([f"GET /d/{n}" for n in (5, 300, 600, 2_000, 50_000)] * 5)
    report = Runner(control, candidate, concurrency=2).run(requests)
    assert (report.totals.requests, report.totals.mismatches) == (25, 25)
    assert "TOTAL" in render_table(report)
    page = render_html(report)
    assert page.count("class='case'") == 25 and len(page) < 5_000_000
    RunReport.from_dict(json.loads(json.dumps(report.to_dict())))


def test_redaction_of_deep_bodies_still_removes_personal_data():
    redactor = Redactor()
    for depth in (300, 5_000):
        body = nested(depth, '{"email": "ada@example.org", "n": 1}')
        out = redactor.body(body, "application/json")
        assert b"example.org" not in out and out.count(b"[REDACTED]") == 1


def test_nan_equals_nan_and_a_tolerance_keeps_type_differences():
    assert compare(b'{"x": NaN}', b'{"x": NaN}').outcome is Outcome.MATCH
    assert compare(b'{"x": [NaN, 1]}', b'{"x": [NaN, 1.0]}').differences[0].kind is DiffKind.TYPE


def test_a_long_text_body_of_repeated_lines_gives_the_one_changed_line():
    rng = random.Random(3)
    lines = [f"<td>{rng.randint(0, 5)}</td>" for _ in range(30_000)]
    changed = [*lines[:17_000], "<td>changed</td>", *lines[17_001:]]
    [d] = diff_text("\n".join(lines), "\n".join(changed))
    assert (d.kind, d.path, d.candidate) == (DiffKind.VALUE, "line:17001", "<td>changed</td>")


def test_the_side_by_side_of_a_big_body_with_one_difference_folds_the_equal_lines():
    rows = [{"id": i, "name": f"n{i}"} for i in range(20_000)]
    a = json.dumps(rows).encode()
    rows[12_345]["name"] = "other"
    b = json.dumps(rows).encode()
    result = compare(a, b)
    report = RunReport("c", "d", results=[result])
    page = render_html(report)
    assert "other" in page and "equal lines" in page and len(page) < 100_000


lines_strategy = st.lists(st.sampled_from(["a", "b", "c", "<td>", "</td>", "x"]), max_size=400)


@settings(max_examples=60, deadline=None)
@given(lines_strategy, lines_strategy)
def test_line_alignment_rebuilds_the_candidate_from_the_control(a, b):
    out: list[str] = []
    pos_a = pos_b = 0
    for tag, i1, i2, j1, j2 in line_opcodes(a, b):
        assert (i1, j1) == (pos_a, pos_b)  # contiguous, in order
        if tag == "equal":
            assert a[i1:i2] == b[j1:j2]
        out.extend(b[j1:j2])
        pos_a, pos_b = i2, j2
    assert (pos_a, pos_b) == (len(a), len(b)) and out == b
