"""Recording store, redaction, shadow-pair sink and statistics stores."""

from __future__ import annotations

import json
import random

import pytest

from parity.compare import Comparator
from parity.model import Outcome, Request, Response
from parity.recording import (
    MemoryStatsStore,
    PairSink,
    RecordingStore,
    Redactor,
    ShadowPair,
    SqlStatsStore,
    read_recording,
)
from parity.rules import RuleSet
from parity.sources import from_recording

SECRETS = [
    "Bearer s3cr3t-T0KEN",
    "session=c00kie-VALUE",
    "hunter2-PASSWORD",
    "4111111111111111",
    "qs-T0KEN-9",
]
# personal data found by pattern, wherever it is: JSON values, text bodies, paths, queries
PERSONAL = [
    "ada.lovelace@example.org",
    "+44 20 7946 0958",
    "(555) 123-4567",
    "4111 1111 1111 1111",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
]


def secret_request() -> Request:
    return Request.build(
        "POST",
        "/login",
        query={"token": SECRETS[4], "page": "1"},
        headers={"Authorization": SECRETS[0], "Cookie": SECRETS[1], "X-Api-Key": "k3y-SECRET"},
        json_body={
            "user": "ada",
            "password": SECRETS[2],
            "card": {"number": SECRETS[3], "exp": "12/30"},
            "contact": {"e_mail": PERSONAL[0], "resetToken": "rt-T0KEN-7"},
            "note": f"call {PERSONAL[1]} or {PERSONAL[2]}, card {PERSONAL[3]}, jwt {PERSONAL[4]}",
            "order_id": "2026-01-02",
        },
    )


def json_response(body, status=200, **headers):
    return Response(
        status, {"Content-Type": "application/json", **headers}, json.dumps(body).encode()
    )


def test_recording_redacts_secrets_before_writing(tmp_path):
    store = RecordingStore(
        tmp_path / "rec.jsonl",
        redactor=Redactor(headers=["x-api-key"], fields=["password", "token", "$.card.number"]),
    )
    store.record_exchange(
        secret_request(),
        json_response({"token": "resp-T0KEN-1", "ok": True}, **{"Set-Cookie": "sid=SETC00KIE"}),
    )
    store.record_exchange(
        Request("GET", f"/users/{PERSONAL[0]}", {"q": PERSONAL[1]}),
        Response(200, {"Content-Type": "text/html"}, f"<p>{PERSONAL[0]} {PERSONAL[3]}</p>"),
    )
    text = (tmp_path / "rec.jsonl").read_text()
    for secret in [*SECRETS, *PERSONAL, "k3y-SECRET", "resp-T0KEN-1", "SETC00KIE", "rt-T0KEN-7"]:
        assert secret not in text
    assert "example.org" not in text and "2026-01-02" in text  # dates are no phone numbers
    text = text.splitlines()[0]
    line = json.loads(text)
    assert line["request"]["headers"]["authorization"] == "[REDACTED]"
    assert json.loads(line["request"]["body"])["card"] == {"number": "[REDACTED]", "exp": "12/30"}
    assert ["page", "1"] in line["request"]["query"]


def test_sampling_writes_about_the_configured_share(tmp_path):
    store = RecordingStore(tmp_path / "r.jsonl", sample_rate=0.25, rng=random.Random(7))
    for i in range(400):
        store.record_exchange(Request("GET", f"/p/{i}"), json_response({}))
    assert 60 < store.written < 140 and store.written + store.skipped == 400


def test_recordings_rotate_by_size_and_read_back_oldest_first(tmp_path):
    path = tmp_path / "r.jsonl"
    store = RecordingStore(path, max_bytes=2_000, backups=3)
    for i in range(40):
        store.record_exchange(Request("GET", f"/products/{i}"), json_response({"id": i}))
    files = store.files()
    assert len(files) == 4 and files[-1] == path
    assert all(f.stat().st_size <= 2_000 for f in files)
    got = [r.path for r in from_recording(path)]
    assert got == sorted(got, key=lambda p: int(p.rsplit("/", 1)[1]))  # order kept
    assert got[-1] == "/products/39"


def test_malformed_recording_lines_name_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"request": {"method": "GET", "path": "/a"}}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        list(read_recording(p))


@pytest.fixture(params=["memory", "sqlite"])
def stats(request, tmp_path):
    if request.param == "memory":
        yield MemoryStatsStore(keep_last=3)
    else:
        store = SqlStatsStore(f"sqlite:///{tmp_path / 'stats.db'}", keep_last=3)
        yield store
        store.close()


def pair(body_control, body_candidate, path="/products/1", **extra):
    return {
        "method": "GET",
        "path": path,
        "request_headers": {"Authorization": "Bearer LIVE-S3CRET"},
        "control": {
            "status": 200,
            "headers": {"Content-Type": "application/json"},
            "body": json.dumps(body_control).encode(),
        },
        "candidate": {
            "status": 200,
            "headers": {"Content-Type": "application/json"},
            "body": json.dumps(body_candidate).encode(),
        },
        "control_latency": 0.01,
        "candidate_latency": 0.02,
        **extra,
    }


def test_pair_sink_feeds_per_endpoint_statistics(stats, tmp_path):
    rules = RuleSet.from_dict(
        {"endpoints": [{"endpoint": "GET /products/<int:id>", "noise": ["$.rid"]}]}
    )
    rec = RecordingStore(tmp_path / "shadow.jsonl")
    sink = PairSink(stats, Comparator(rules), recorder=rec)
    assert sink.record(pair({"id": 1}, {"id": 1})).outcome is Outcome.MATCH
    assert sink.record(pair({"id": 1, "rid": 1}, {"id": 1, "rid": 2})).outcome is Outcome.NOISE_ONLY
    for i in range(5):
        sink.record(
            pair(
                {"id": 1, "password": "pw-LEAK"},
                {"id": 2, "password": "pw-LEAK2"},
                path=f"/products/{i}",
            )
        )
    sink.record(ShadowPair("GET", "/products/9", control_status=200, candidate_error="timeout"))
    s = stats.stats_for("GET /products/<int:id>")
    assert (s.requests, s.matches, s.noise, s.mismatches, s.errors) == (8, 1, 1, 5, 1)
    assert len(s.last_mismatches) == 3
    assert s.last_mismatches[0]["outcome"] == "error"
    assert s.last_mismatches[1]["differences"][0]["path"] == "$.id"
    assert stats.stats_for("GET /nothing").requests == 0
    assert stats.endpoints() == ["GET /products/<int:id>"]
    dumped = (
        json.dumps([x.to_dict() for x in stats.all_stats()])
        + (tmp_path / "shadow.jsonl").read_text()
    )
    assert "LIVE-S3CRET" not in dumped and "pw-LEAK" not in dumped


def test_pair_sink_never_raises_on_bad_input(stats):
    sink = PairSink(stats)
    assert sink.record({"nonsense": True}) is None
    assert sink.record({"method": "GET", "path": "/x", "control_status": "abc"}) is None


def test_sql_statistics_are_shared_between_store_instances(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    a, b = SqlStatsStore(url), SqlStatsStore(url)
    PairSink(a).record(pair({"x": 1}, {"x": 1}))
    PairSink(b).record(pair({"x": 1}, {"x": 2}))
    s = a.stats_for("GET /products/<int:id>")
    assert (s.requests, s.matches, s.mismatches) == (2, 1, 1)
    a.reset()
    assert b.stats_for("GET /products/<int:id>").requests == 0
    a.close()
    b.close()
