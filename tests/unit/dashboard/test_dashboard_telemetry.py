"""Rates from cumulative counters, lag history, and side-by-side body diffs."""

from __future__ import annotations

import pytest

from strangler_proxy.dashboard.diffview import pair_view, side_by_side
from strangler_proxy.dashboard.ports import TableLag
from strangler_proxy.dashboard.telemetry import LagHistory, RateTracker


def _series(route: str, target: str, requests: int, errors: int) -> dict[str, object]:
    return {"route": route, "target": target, "requests": requests, "errors": errors}


def test_rates_are_unknown_until_two_samples_then_sum_the_targets_of_a_path() -> None:
    tracker = RateTracker(window=10)
    tracker.sample([_series("/p", "monolith", 10, 0)], now=100.0)
    assert tracker.rates()["/p"]["req_s"] is None
    tracker.sample([_series("/p", "monolith", 30, 2), _series("/p", "catalog", 10, 1)], now=102.0)
    rates = tracker.rates()["/p"]
    assert rates["req_s"] == pytest.approx(15.0)  # (20 + 10) / 2 s
    assert rates["err_s"] == pytest.approx(1.5)
    assert rates["requests"] == 40 and rates["errors"] == 3
    assert rates["targets"] == {"monolith": 10.0, "catalog": 5.0}


def test_rates_cover_only_the_sliding_window() -> None:
    tracker = RateTracker(window=5)
    tracker.sample([_series("/p", "m", 0, 0)], now=0.0)
    tracker.sample([_series("/p", "m", 1000, 0)], now=1.0)  # a burst long ago
    for t in range(2, 20):
        tracker.sample([_series("/p", "m", 1000 + (t - 1) * 2, 0)], now=float(t))
    assert tracker.rates()["/p"]["req_s"] == pytest.approx(2.0)


def test_lag_history_is_bounded_and_keeps_the_latest_reading() -> None:
    history = LagHistory(max_points=3)
    for t in range(5):
        history.sample([TableLag("orders", t * 10, t / 2, "topic")], now=float(t))
    (orders,) = history.snapshot()
    assert orders["table"] == "orders" and orders["lag_events"] == 40
    assert orders["history"] == [[2.0, 1.0, 20], [3.0, 1.5, 30], [4.0, 2.0, 40]]


def test_side_by_side_pretty_prints_json_and_marks_changed_lines() -> None:
    rows = side_by_side('{"b": 2, "a": 1}', '{"a": 1, "b": 3, "c": 4}')
    assert [r["tag"] for r in rows] == ["equal", "equal", "changed", "added", "equal"]
    changed = rows[2]
    assert changed["left"].strip() == '"b": 2' and changed["right"].strip() == '"b": 3,'
    assert rows[3]["left"] == "" and rows[3]["right"].strip() == '"c": 4'


def test_side_by_side_handles_plain_text_and_a_missing_side() -> None:
    rows = side_by_side("one\ntwo", None)
    assert [r["tag"] for r in rows] == ["removed", "removed"]
    assert side_by_side(None, None) == []


def test_a_pair_view_says_whether_both_sides_agree() -> None:
    pair = {
        "request_id": "r1",
        "route": "GET /p",
        "service": "catalog",
        "at": 1.0,
        "request": {"method": "GET", "path": "/p?x=1"},
        "monolith": {"status": 200, "body": '{"a": 1}'},
        "service_response": {"status": 200, "body": '{ "a" : 1 }'},
        "service_error": None,
    }
    view = pair_view(pair)
    assert view["same_status"] and view["same_body"] and view["request"] == "GET /p?x=1"
    failed = pair_view({**pair, "service_response": None, "service_error": "timeout"})
    assert not failed["same_body"] and failed["service_error"] == "timeout"
