"""The `lagged` outcome: a shadow pair that differed but agreed on a re-check (CDC lag) is
counted apart, never as a match nor a mismatch, and is no sample for the playbook gate."""

from __future__ import annotations

import json
import sqlite3

import pytest

from kit.playbook.guards import parity_rate
from kit.playbook.proxy import ParityJudge, record_pair
from parity.model import Outcome
from parity.recording import MemoryStatsStore, PairSink, SqlStatsStore
from parity.report import EndpointSummary, RunReport, render_table
from strangler_proxy.shadow import (
    RECHECK_DROPPED,
    RECHECK_LAGGED,
    RECHECK_MISMATCH,
    RecordedRequest,
    RecordedResponse,
)
from strangler_proxy.shadow import ShadowPair as ProxyPair

JSON = [("Content-Type", "application/json")]


def proxy_pair(control: dict, candidate: dict, **extra: object) -> ProxyPair:
    return ProxyPair(
        request_id="r",
        route="GET /things/<int:id>",
        service="things",
        at=0.0,
        request=RecordedRequest("GET", "/things/1", [], b""),
        monolith=RecordedResponse(200, JSON, json.dumps(control).encode(), 1.0),
        service_response=RecordedResponse(200, JSON, json.dumps(candidate).encode(), 1.0),
        extra=extra,
    )


@pytest.fixture(params=["memory", "sqlite"])
def stats(request, tmp_path):
    if request.param == "memory":
        yield MemoryStatsStore()
    else:
        store = SqlStatsStore(f"sqlite:///{tmp_path / 'stats.db'}")
        yield store
        store.close()


def test_lagged_pairs_are_counted_apart_and_are_no_gate_samples(stats):
    sink = PairSink(stats)
    stale = proxy_pair({"stock": 5}, {"stock": 4})
    for _ in range(3):
        lagged = proxy_pair({"stock": 5}, {"stock": 4}, recheck=RECHECK_LAGGED, recheck_pair=stale)
        record_pair(sink, lagged)
    for _ in range(7):
        record_pair(sink, proxy_pair({"stock": 5}, {"stock": 5}))
    s = stats.stats_for("GET /things/<int:id>")
    assert (s.requests, s.matches, s.mismatches, s.lagged) == (10, 7, 0, 3)
    assert s.last_mismatches == []
    assert parity_rate(s) == (7, 0.0)  # the gate: 7 clean samples, no mismatch
    assert s.agreement == 1.0
    assert s.to_dict()["lagged"] == 3


def test_a_confirmed_mismatch_records_the_recheck_pair_as_evidence(stats):
    sink = PairSink(stats)
    second = proxy_pair({"stock": 5}, {"stock": 99})
    record_pair(
        sink, proxy_pair({"stock": 5}, {"stock": 4}, recheck=RECHECK_MISMATCH, recheck_pair=second)
    )
    s = stats.stats_for("GET /things/<int:id>")
    assert (s.requests, s.mismatches, s.lagged) == (1, 1, 0)
    (diff,) = s.last_mismatches[0]["differences"]
    assert (diff["control"], diff["candidate"]) == (5, 99)
    assert parity_rate(s) == (1, 1.0)


def test_parity_judge_calls_only_regressions_a_difference():
    rules = {"endpoints": [{"endpoint": "GET /things/<int:id>", "noise": ["$.at"]}]}
    from parity.compare import Comparator
    from parity.rules import RuleSet

    judge = ParityJudge(PairSink(MemoryStatsStore(), Comparator(RuleSet.from_dict(rules))))
    assert judge.differs(proxy_pair({"v": 1}, {"v": 2}))
    assert not judge.differs(proxy_pair({"v": 1, "at": 1}, {"v": 1, "at": 2}))  # noise
    assert not judge.differs(proxy_pair({"v": 1}, {"v": 1}))


def test_pair_sink_record_lagged_sets_the_outcome():
    stats = MemoryStatsStore()
    result = PairSink(stats).record(
        {
            "method": "GET",
            "path": "/x",
            "control_status": 200,
            "control_body": b"1",
            "candidate_status": 200,
            "candidate_body": b"2",
        },
        lagged=True,
    )
    assert result is not None and result.outcome is Outcome.LAGGED
    assert result.to_dict()["outcome"] == "lagged"


def test_a_statistics_database_from_before_gets_the_lagged_counter(tmp_path):
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE parity_endpoint_stats (endpoint VARCHAR(400) PRIMARY KEY, requests "
            "INTEGER NOT NULL, matches INTEGER NOT NULL, mismatches INTEGER NOT NULL, noise "
            "INTEGER NOT NULL, errors INTEGER NOT NULL, denied INTEGER NOT NULL DEFAULT 0, "
            "updated_at FLOAT)"
        )
        conn.execute("INSERT INTO parity_endpoint_stats VALUES ('GET /a', 3, 3, 0, 0, 0, 0, 1.0)")
    store = SqlStatsStore(f"sqlite:///{db}")
    pair = {
        "method": "GET",
        "path": "/a",
        "control_status": 200,
        "control_body": b"1",
        "candidate_status": 200,
        "candidate_body": b"2",
    }
    PairSink(store).record(pair, lagged=True)
    s = store.stats_for("GET /a")
    assert (s.requests, s.matches, s.lagged) == (4, 3, 1)
    store.close()


def test_the_report_table_shows_lagged_apart_and_does_not_fail_on_it():
    report = RunReport("c", "d", endpoints=[EndpointSummary("GET /a", 5, 3, 0, 0, 0, 0, 2)])
    assert report.exit_code() == 0
    table = render_table(report)
    assert "lagged" in table.splitlines()[1]
    assert "2 request(s) differed and then agreed on a re-check" in table
    assert report.to_dict()["totals"]["lagged"] == 2


def test_a_pair_whose_recheck_was_dropped_is_left_out_of_parity(stats):
    sink = PairSink(stats)
    assert not record_pair(sink, proxy_pair({"v": 1}, {"v": 2}, recheck=RECHECK_DROPPED))
    assert stats.stats_for("GET /things/<int:id>").requests == 0
