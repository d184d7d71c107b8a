"""Parity over real HTTP: runner, CLI (run, learn-noise, record, report), plugin checker."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from kit.commands.parity import cli
from parity.compare import Comparator
from parity.model import DiffKind, Outcome
from parity.pytest_plugin import ParityChecker
from parity.runner import HttpBackend, Runner
from parity.sources import from_list

pytestmark = pytest.mark.integration

REQS = [
    "GET /products?per_page=100&sort=price",
    "GET /products/3",
    "GET /products/10",
    "GET /products?page=0",
]


@pytest.mark.parametrize(
    ("variant", "kind", "path"),
    [
        (None, None, None),
        ("tie_order", DiffKind.ORDER, "$.items"),
        ("null_vs_absent", DiffKind.MISSING, "$.description"),
        ("wrong_content_type", DiffKind.HEADER, "headers.content-type"),
        ("status_404_for_400", DiffKind.STATUS, "status"),
    ],
)
def test_http_replay_finds_the_seeded_divergence(serve, testapps, variant, kind, path):
    control = HttpBackend(serve(testapps.create_shop_app()))
    candidate = HttpBackend(serve(testapps.create_shop_app(variant)))
    with control, candidate:
        report = Runner(control, candidate, concurrency=4).run(from_list(REQS * 5))
    assert report.totals.requests == 20
    if variant is None:
        assert report.totals.matches == 20
    else:
        assert (kind, path) in {(d.kind, d.path) for r in report.results for d in r.regressions}


def test_unreachable_candidate_is_counted_as_errors(serve, testapps):
    control = HttpBackend(serve(testapps.create_shop_app()))
    candidate = HttpBackend("http://127.0.0.1:9", timeout=2)  # discard port: nothing listens
    report = Runner(control, candidate, concurrency=2).run(from_list(REQS))
    assert report.totals.errors == len(REQS)
    assert all(r.outcome is Outcome.ERROR for r in report.results)


def test_cli_run_from_openapi_writes_reports_and_exits_by_threshold(serve, testapps, tmp_path):
    ctl = serve(testapps.create_shop_app())
    same = serve(testapps.create_shop_app())
    bad = serve(testapps.create_shop_app("money_rounding"))
    runner = CliRunner()
    ok = runner.invoke(
        cli,
        ["run", "--control", ctl, "--candidate", same, "--ids", "id=1,2,3", "--concurrency", "3"],
    )
    assert ok.exit_code == 0, ok.output
    assert "GET /products/<int:id>" in ok.output and "TOTAL" in ok.output
    out_json, out_html = tmp_path / "r.json", tmp_path / "r.html"
    res = runner.invoke(
        cli,
        [
            "run",
            "--control",
            ctl,
            "--candidate",
            bad,
            "--ids",
            "id=1,2,3",
            "--json",
            str(out_json),
            "--html",
            str(out_html),
        ],
    )
    assert res.exit_code == 1, res.output
    assert "$.price.cents" in res.output
    data = json.loads(out_json.read_text())
    assert data["totals"]["mismatches"] > 0
    html = out_html.read_text()
    assert "<style>" in html and "<link" not in html and "<script" not in html
    lenient = runner.invoke(cli, ["report", str(out_json), "--threshold", "1000"])
    assert lenient.exit_code == 0 and "TOTAL" in lenient.output
    strict = runner.invoke(cli, ["report", str(out_json), "--html", str(tmp_path / "again.html")])
    assert strict.exit_code == 1 and (tmp_path / "again.html").exists()


def test_cli_learn_noise_then_run_with_learned_rules_has_no_regressions(serve, testapps, tmp_path):
    ctl = serve(testapps.create_shop_app(noisy=True))
    cand = serve(testapps.create_shop_app(noisy=True))
    runner = CliRunner()
    before = runner.invoke(
        cli, ["run", "--control", ctl, "--candidate", cand, "--ids", "id=1,2,3,4,5"]
    )
    assert before.exit_code == 1
    rules = tmp_path / "noise.toml"
    learned = runner.invoke(
        cli,
        [
            "learn-noise",
            "--control",
            ctl,
            "--ids",
            "id=1,2,3,4,5",
            "--repeat",
            "3",
            "--out",
            str(rules),
        ],
    )
    assert learned.exit_code == 0, learned.output
    assert "$.meta.request_id" in rules.read_text()
    # every answer carries a fresh request id: progress counts each request as noise
    last = [line for line in learned.stderr.splitlines() if line.startswith("learn-noise:")][-1]
    done = int(last.split(":")[1].split("/")[0])
    assert done > 0 and f"— 0 match, 0 mismatch, {done} noise, 0 errors" in last
    after = runner.invoke(
        cli,
        [
            "run",
            "--control",
            ctl,
            "--candidate",
            cand,
            "--ids",
            "id=1,2,3,4,5",
            "--rules",
            str(rules),
        ],
    )
    assert after.exit_code == 0, after.output


def test_cli_record_then_replay_from_the_recording_without_leaking_secrets(
    serve, testapps, tmp_path
):
    ctl = serve(testapps.create_shop_app())
    cand = serve(testapps.create_shop_app("extra_field"))
    reqs = tmp_path / "reqs.json"
    reqs.write_text(
        json.dumps(
            [
                {
                    "method": "GET",
                    "path": "/products/3",
                    "query": {"token": "QS-S3CRET"},
                    "headers": {"Authorization": "Bearer HDR-S3CRET", "Cookie": "sid=CK-S3CRET"},
                },
                {"method": "GET", "path": "/products", "query": {"page": "1"}},
            ]
        )
    )
    rec = tmp_path / "rec.jsonl"
    runner = CliRunner()
    res = runner.invoke(
        cli, ["record", "--target", ctl, "--requests", str(reqs), "--out", str(rec)]
    )
    assert res.exit_code == 0, res.output
    replay = runner.invoke(
        cli,
        [
            "run",
            "--control",
            ctl,
            "--candidate",
            cand,
            "--from",
            str(rec),
            "--header",  # its own were redacted: a replay without credentials is refused
            "Authorization: Bearer REPLAY-T0KEN",
            "--json",
            str(tmp_path / "r.json"),
            "--html",
            str(tmp_path / "r.html"),
        ],
    )
    assert replay.exit_code == 1 and "$.slug" in replay.output
    for f in (rec, tmp_path / "r.json", tmp_path / "r.html"):
        text = f.read_text()
        for secret in ("QS-S3CRET", "HDR-S3CRET", "CK-S3CRET", "REPLAY-T0KEN"):
            assert secret not in text


def test_cli_rejects_bad_input_with_clear_messages(tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli, ["run"])
    assert res.exit_code == 2 and "give --service, or --control and --candidate" in res.output
    bad = tmp_path / "bad.toml"
    bad.write_text('[[endpoints]]\nendpoint = "GET /a"\nignore = ["nope"]\n')
    res = runner.invoke(
        cli,
        [
            "run",
            "--control",
            "http://127.0.0.1:9",
            "--candidate",
            "http://127.0.0.1:9",
            "--rules",
            str(bad),
        ],
    )
    assert res.exit_code == 2 and "endpoints[0].ignore[0]" in res.output
    res = runner.invoke(
        cli,
        [
            "run",
            "--control",
            "http://127.0.0.1:9",
            "--candidate",
            "http://127.0.0.1:9",
            "--ids",
            "id",
        ],
    )
    assert res.exit_code == 2 and "NAME=V1,V2" in res.output


def test_cli_runs_as_a_real_process_with_a_non_zero_exit_on_mismatch(serve, testapps, tmp_path):
    ctl = serve(testapps.create_shop_app())
    cand = serve(testapps.create_shop_app("int_to_string"))
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from kit.commands.parity import cli; cli()",
            "run",
            "--control",
            ctl,
            "--candidate",
            cand,
            "--ids",
            "id=1,2",
            "--endpoint",
            "GET /products/<int:id>",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert "type at $.id" in proc.stdout and "GET /products/<int:id>" in proc.stdout


def test_plugin_checker_works_over_http(serve, testapps):
    checker = ParityChecker(
        HttpBackend(serve(testapps.create_shop_app())),
        HttpBackend(serve(testapps.create_shop_app("renamed_key"))),
        Comparator(),
    )
    result = checker.compare("GET", "/products/3")
    assert {d.path for d in result.regressions} == {"$.category_id", "$.categoryId"}
    with pytest.raises(pytest.fail.Exception, match="missing at \\$.category_id"):
        checker.check("GET", "/products/3")
