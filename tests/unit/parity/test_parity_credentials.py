"""Credentials for parity: fixed headers, the auth hook (a real subprocess), refresh on 401,
the redacted-replay refusal, and pairs both sides refused counted apart from matches."""

from __future__ import annotations

import json
import sqlite3
import sys
import threading
from pathlib import Path

import pytest

from kit.playbook.guards import parity_rate
from parity.auth import (
    AuthenticatedBackend,
    AuthError,
    Credentials,
    check_replayable,
    parse_hook_output,
    replayable,
)
from parity.model import Outcome, Request, Response
from parity.recording import REDACTED, MemoryStatsStore, PairSink, Redactor, SqlStatsStore
from parity.report import EndpointSummary, RunReport, render_table
from parity.runner import Backend


def counting_hook(tmp_path: Path, *, fail: bool = False) -> list[str]:
    """A hook printing `Authorization: Bearer t<N>`, N counting its runs (in a file)."""
    script = tmp_path / "hook.py"
    count = tmp_path / "count"
    script.write_text(
        "import pathlib, sys\n"
        f"p = pathlib.Path({str(count)!r})\n"
        "n = int(p.read_text()) + 1 if p.exists() else 1\n"
        "p.write_text(str(n))\n"
        "print('Authorization: Bearer hook-S3CRET-' + str(n))\n" + ("sys.exit(3)\n" if fail else "")
    )
    return [sys.executable, str(script)]


class TokenServer(Backend):
    """A fake answering 200 only to the newest token the hook printed (a subclass of the
    real port)."""

    name = "fake"

    def __init__(self, tmp_path: Path) -> None:
        self.count = tmp_path / "count"
        self.seen: list[str] = []

    def send(self, request: Request) -> Response:
        self.seen.append(request.headers.get("authorization", ""))
        newest = f"Bearer hook-S3CRET-{self.count.read_text()}"
        return Response(200 if request.headers.get("authorization") == newest else 401)


def test_hook_output_is_read_as_header_lines_or_a_json_object():
    assert parse_hook_output("Authorization: Bearer x\n# c\nX-Tenant: 7\n") == {
        "Authorization": "Bearer x",
        "X-Tenant": "7",
    }
    assert parse_hook_output('{"Authorization": "Bearer y"}') == {"Authorization": "Bearer y"}
    with pytest.raises(AuthError, match="line 1") as err:
        parse_hook_output("just-a-S3CRET-token")
    assert "S3CRET" not in str(err.value)


def test_a_failing_hook_is_named_without_its_output(tmp_path):
    creds = Credentials(hook=counting_hook(tmp_path, fail=True))
    with pytest.raises(AuthError, match="exited with status 3") as err:
        creds.current()
    assert "S3CRET" not in str(err.value)
    assert "S3CRET" not in repr(Credentials({"Authorization": "Bearer S3CRET"}))


def test_a_401_refreshes_the_credentials_once_and_the_request_is_sent_again(tmp_path):
    creds = Credentials(hook=counting_hook(tmp_path))
    server = TokenServer(tmp_path)
    backend = AuthenticatedBackend(server, creds)
    assert backend.send(Request("GET", "/a")).status == 200
    (tmp_path / "count").write_text("41")  # the server moved on: the token expired
    assert backend.send(Request("GET", "/a")).status == 200
    assert server.seen[-2:] == ["Bearer hook-S3CRET-1", "Bearer hook-S3CRET-42"]


def test_concurrent_401s_run_the_hook_once(tmp_path):
    creds = Credentials(hook=counting_hook(tmp_path))
    version, _ = creds.current()
    threads = [threading.Thread(target=creds.refresh, args=(version,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (tmp_path / "count").read_text() == "2" and creds.refreshes == 1


def test_credentials_replace_redacted_placeholders_and_win_over_recorded_headers():
    creds = Credentials({"Authorization": "Bearer fresh"})
    recorded = Request("GET", "/a", headers={"authorization": REDACTED, "cookie": REDACTED})
    sent = creds.apply(recorded, creds.current()[1])
    assert sent.headers == {"authorization": "Bearer fresh"}


def test_replaying_redacted_credentials_without_credentials_is_refused():
    recorded = [Request("GET", "/a", headers={"authorization": REDACTED}), Request("GET", "/b")]
    with pytest.raises(AuthError, match=r"1 request\(s\) carried credentials \(authorization\)"):
        check_replayable(recorded, Credentials())
    check_replayable(recorded, Credentials({"Authorization": "Bearer x"}))
    check_replayable([Request("GET", "/b")], None)


def test_recorded_requests_whose_target_held_personal_data_are_left_out_of_a_replay():
    redactor = Redactor()
    recorded = [
        redactor.request(Request("GET", "/users/by-email/ann@example.com")),
        redactor.request(Request("GET", "/users", query=(("email", "bob@example.com"),))),
        redactor.request(Request("GET", "/users/7")),
    ]
    assert "ann@example.com" not in recorded[0].path  # the recording holds no address...
    kept, left_out = replayable(recorded)
    assert [r.path for r in kept] == ["/users", "/users/7"]  # ...and no hollow 404 pair
    assert left_out == 1


def refused_pair(path: str = "/things/1") -> dict:
    body = json.dumps({"problem": "unauthorized"}).encode()
    side = {"status": 401, "headers": {"Content-Type": "application/json"}, "body": body}
    return {"method": "GET", "path": path, "control": side, "candidate": dict(side)}


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_pairs_both_sides_refused_are_no_samples_for_the_playbook_gate(kind, tmp_path):
    stats = MemoryStatsStore() if kind == "memory" else SqlStatsStore(f"sqlite:///{tmp_path}/s.db")
    sink = PairSink(stats)
    for _ in range(30):
        assert sink.record(refused_pair()).outcome is Outcome.DENIED
    s = stats.stats_for("GET /things/<int:id>")
    assert (s.requests, s.matches, s.denied) == (30, 0, 30)
    assert parity_rate(s) == (0, 0.0)  # the gate still lacks every sample


def test_a_statistics_database_from_before_gets_the_denied_counter(tmp_path):
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE parity_endpoint_stats (endpoint VARCHAR(400) PRIMARY KEY, requests "
            "INTEGER NOT NULL, matches INTEGER NOT NULL, mismatches INTEGER NOT NULL, noise "
            "INTEGER NOT NULL, errors INTEGER NOT NULL, updated_at FLOAT)"
        )
        conn.execute("INSERT INTO parity_endpoint_stats VALUES ('GET /a', 3, 3, 0, 0, 0, 1.0)")
    store = SqlStatsStore(f"sqlite:///{db}")
    PairSink(store).record(refused_pair("/a"))
    s = store.stats_for("GET /a")
    assert (s.requests, s.matches, s.denied) == (4, 3, 1)
    store.close()


def test_the_report_counts_refused_pairs_apart_and_fails_on_them():
    report = RunReport("c", "d", endpoints=[EndpointSummary("GET /a", 5, 2, 0, 0, 0, 3)])
    assert report.exit_code() == 1 and report.exit_code(denied_count=False) == 0
    table = render_table(report)
    assert "denied" in table and "3 request(s) refused (401/403) by both sides" in table
    assert report.to_dict()["totals"]["denied"] == 3
