"""Parity on an application that needs a login: a pair of real HTTP apps that refuse every
request without a bearer token (tokens expire after a few uses), compared through `kit parity`
with generated, recorded and hand-written requests. No pass may be hollow, and no file written
holds a credential or an e-mail address."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kit.commands.parity import cli

pytestmark = pytest.mark.integration

HOOK = """
import json, sys, urllib.request
req = urllib.request.Request(sys.argv[1] + "/login", data=b"{}", method="POST")
print("Authorization: Bearer " + json.load(urllib.request.urlopen(req))["token"])
"""

HAND_WRITTEN = ["GET /things", "GET /things/2", "GET /profile", "GET /things/99"]


@pytest.fixture
def pair(serve, testapps, tmp_path):
    """serve_pair(variant=None, uses=...) -> (book, control URL, candidate URL, hook command)."""

    def start(variant=None, uses=10**9, noisy=False):
        book = testapps.TokenBook(uses)
        control = serve(testapps.create_token_app(book, noisy=noisy))
        candidate = serve(testapps.create_token_app(book, variant, noisy=noisy))
        hook = tmp_path / "login_hook.py"
        hook.write_text(HOOK)
        return book, control, candidate, f"{sys.executable} {hook} {control}"

    return start


def _manifest(tmp_path: Path, control: str, candidate: str, hook: str) -> Path:
    path = tmp_path / "kit.toml"
    (tmp_path / "mapping.toml").write_text("")
    endpoints = ", ".join(
        f'{{ methods = ["GET"], path = "{p}", kind = "read" }}'
        for p in ("/things", "/things/<int:thing_id>", "/boxes", "/boxes/<int:box_id>", "/profile")
    )
    path.write_text(
        f"""
[kit]
var_dir = "var"
state_url = "sqlite:///{tmp_path}/kit.db"

[monolith]
url = "{control}"
database_url = "sqlite:///{tmp_path}/monolith.db"
openapi = "/api/spec.json"
external = true  # scripted servers the test runs itself

[proxy]
store_url = "sqlite:///{tmp_path}/routes.db"

[parity]
stats_url = "sqlite:///{tmp_path}/stats.db"
auth = "{hook}"
rules_file = "parity-rules.toml"
ids = {{ "GET /boxes/<int:box_id>" = "$.page.entries[*].box_no" }}

[services.things]
url = "{candidate}"
external = true
database_url = "sqlite:///{tmp_path}/things.db"
mapping = "mapping.toml"
tables = ["things"]
endpoints = [{endpoints}]
"""
    )
    return path


def _requests_file(tmp_path: Path) -> str:
    path = tmp_path / "requests.txt"
    path.write_text("\n".join(HAND_WRITTEN) + "\n")
    return str(path)


def _invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _totals(path: Path) -> dict:
    return json.loads(path.read_text())["totals"]


def _written_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.suffix not in (".py", ".db")]


def test_generated_requests_use_the_manifest_openapi_path_ids_and_auth_hook_across_token_expiry(
    pair, tmp_path, monkeypatch
):
    book, control, candidate, hook = pair(uses=5)
    monkeypatch.setenv("KIT_MANIFEST", str(_manifest(tmp_path, control, candidate, hook)))
    out = tmp_path / "report.json"
    result = _invoke("run", "--service", "things", "--concurrency", "2", "--json", out)
    assert result.exit_code == 0, result.output
    endpoints = {e["endpoint"]: e for e in json.loads(out.read_text())["endpoints"]}
    # ids under `data` found by the default envelopes, under `page.entries` by the JSONPath
    assert endpoints["GET /things/<int:thing_id>"]["matches"] == 6
    assert endpoints["GET /boxes/<int:box_id>"]["matches"] == 4
    assert _totals(out)["denied"] == 0 and _totals(out)["mismatches"] == 0
    assert book.issued >= 3  # tokens expired during the run: the hook ran again on 401


def test_without_credentials_both_sides_refuse_and_the_run_is_no_pass(pair, tmp_path):
    _, control, candidate, _ = pair()
    out = tmp_path / "report.json"
    args = ["run", "--control", control, "--candidate", candidate]
    args += ["--requests", _requests_file(tmp_path), "--json", out]
    result = _invoke(*args)
    assert result.exit_code == 1, result.output
    assert "refused (401/403) by both sides" in result.output
    totals = _totals(out)
    assert (totals["matches"], totals["denied"]) == (0, len(HAND_WRITTEN))
    accepted = _invoke(*args, "--accept-denied")
    assert accepted.exit_code == 0 and _totals(out)["matches"] == 0


def test_hand_written_requests_send_the_header_to_both_sides(pair, tmp_path):
    book, control, candidate, _ = pair()
    token = book.issue()
    out = tmp_path / "report.json"
    result = _invoke(
        "run", "--control", control, "--candidate", candidate,
        "--requests", _requests_file(tmp_path), "--header", f"Authorization: Bearer {token}",
        "--json", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _totals(out)["matches"] == len(HAND_WRITTEN) and _totals(out)["denied"] == 0
    assert token not in out.read_text()


def test_a_recording_holds_no_credential_or_personal_data_and_is_replayed_only_with_credentials(
    pair, tmp_path
):
    book, control, candidate, hook = pair(variant="renamed_thing")
    recording = tmp_path / "rec" / "traffic.jsonl"
    recorded = _invoke(
        "record", "--target", control, "--requests", _requests_file(tmp_path),
        "--auth", hook, "--out", recording,
    )  # fmt: skip
    assert recorded.exit_code == 0, recorded.output
    assert '"authorization": "[REDACTED]"' in recording.read_text()

    refused = _invoke("run", "--control", control, "--candidate", candidate, "--from", recording)
    assert refused.exit_code != 0
    assert "redacted when recorded" in refused.output and "auth" in refused.output

    report, page = tmp_path / "out" / "report.json", tmp_path / "out" / "report.html"
    replayed = _invoke(
        "run", "--control", control, "--candidate", candidate, "--from", recording,
        "--auth", hook, "--json", report, "--html", page,
    )  # fmt: skip
    assert replayed.exit_code == 1, replayed.output  # the renamed thing, nothing else
    totals = _totals(report)
    assert (totals["matches"], totals["mismatches"], totals["denied"]) == (2, 2, 0)
    written = _written_files(tmp_path)
    assert {recording, report, page} <= set(written)
    for path in written:
        text = path.read_text()
        assert "@example.org" not in text, path
        assert "tok-" not in text and "7946" not in text, path


def test_learn_noise_save_writes_the_rules_file_the_manifest_references(
    pair, tmp_path, monkeypatch
):
    _, control, candidate, hook = pair(noisy=True)
    monkeypatch.setenv("KIT_MANIFEST", str(_manifest(tmp_path, control, candidate, hook)))
    requests = _requests_file(tmp_path)
    before = _invoke("run", "--service", "things", "--requests", requests)
    assert before.exit_code == 1  # served_at differs between any two answers
    learned = _invoke("learn-noise", "--service", "things", "--requests", requests, "--save")
    assert learned.exit_code == 0, learned.output
    assert "served_at" in (tmp_path / "parity-rules.toml").read_text()
    after = _invoke("run", "--service", "things", "--requests", requests)
    assert after.exit_code == 0, after.output
