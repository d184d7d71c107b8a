"""Mutants: every seeded divergence is detected at the right path; a noisy-but-equivalent
candidate produces zero regressions once noise is learned; reports never leak secrets."""

from __future__ import annotations

import json

import pytest
from parity_testapps import VARIANTS, create_shop_app

from parity.compare import Comparator
from parity.model import DiffKind, Outcome, Request
from parity.noise import NoiseLearner
from parity.recording import RecordingStore, Redactor
from parity.report import RunReport, render_html, render_table
from parity.rules import RuleSet
from parity.runner import FlaskBackend, Runner
from parity.sources import from_list

REQUESTS = [
    "GET /products",
    "GET /products?page=2&per_page=5",
    "GET /products?sort=price&per_page=100",
    "GET /products?page=0",
    "GET /products/3",
    "GET /products/10",
    "GET /products/999",
    "GET /about",
]

# variant -> (request, kind, path) that must be reported as a regression
EXPECTED = {
    "missing_field": ("GET /products/3", DiffKind.MISSING, "$.sku"),
    "renamed_key": ("GET /products/3", DiffKind.EXTRA, "$.categoryId"),
    "int_to_string": ("GET /products/3", DiffKind.TYPE, "$.id"),
    "money_rounding": ("GET /products/3", DiffKind.VALUE, "$.price.cents"),
    "tie_order": ("GET /products?sort=price&per_page=100", DiffKind.ORDER, "$.items"),
    "pagination_off_by_one": ("GET /products?page=2&per_page=5", DiffKind.VALUE, "$.items[0].id"),
    "status_404_for_400": ("GET /products?page=0", DiffKind.STATUS, "status"),
    "extra_field": ("GET /products/3", DiffKind.EXTRA, "$.slug"),
    "null_vs_absent": ("GET /products/10", DiffKind.MISSING, "$.description"),
    "wrong_content_type": ("GET /products/3", DiffKind.HEADER, "headers.content-type"),
    "float_money": ("GET /products/3", DiffKind.TYPE, "$.price.cents"),
    "total_off": ("GET /products", DiffKind.VALUE, "$.total"),
    "error_shape": ("GET /products/999", DiffKind.TYPE, "$.error"),
    "about_text": ("GET /about", DiffKind.VALUE, "line:4"),
}


def run(control, candidate, **kwargs):
    rules = RuleSet.from_dict({"endpoints": [{"endpoint": "GET /products/<int:id>"}]})
    return Runner(
        FlaskBackend(control), FlaskBackend(candidate), Comparator(rules), concurrency=2, **kwargs
    ).run(from_list(REQUESTS))


def test_every_variant_has_an_expectation():
    assert set(EXPECTED) == set(VARIANTS) and len(EXPECTED) >= 10


def test_the_control_matches_an_identical_candidate_everywhere():
    report = run(create_shop_app(), create_shop_app())
    assert report.totals.matches == len(REQUESTS) and report.exit_code() == 0


@pytest.mark.parametrize("variant", sorted(EXPECTED))
def test_seeded_divergence_is_reported_at_the_right_path(variant):
    target, kind, path = EXPECTED[variant]
    report = run(create_shop_app(), create_shop_app(variant))
    found = {
        (d.kind, d.path) for r in report.results if str(r.request) == target for d in r.regressions
    }
    assert (kind, path) in found, f"{variant}: got {sorted(found)}"
    assert report.exit_code() == 1


def test_secondary_status_difference_also_reports_the_error_code():
    report = run(create_shop_app(), create_shop_app("status_404_for_400"))
    (r,) = [r for r in report.results if str(r.request) == "GET /products?page=0"]
    assert {(d.path, d.control, d.candidate) for d in r.regressions} >= {
        ("status", 400, 404),
        ("$.error.code", "invalid_query", "not_found"),
    }


def test_noisy_but_equivalent_candidate_has_no_regressions_once_noise_is_learned(tmp_path):
    without = run(create_shop_app(noisy=True), create_shop_app(noisy=True))
    assert without.totals.mismatches > 0  # the noise is real
    report = run(create_shop_app(noisy=True), create_shop_app(noisy=True), learn_noise=True)
    t = report.totals
    assert (t.mismatches, t.errors) == (0, 0) and t.noise > 0
    assert {"$.meta.request_id", "$.meta.generated_at"} <= set(report.noise["GET /products"])
    # learned noise saved as rules and loaded back classifies the same way without learning
    learner = NoiseLearner()
    for endpoint, paths in report.noise.items():
        learner.add(endpoint, paths)
    learner.save(tmp_path / "noise.toml")
    loaded = RuleSet.load(tmp_path / "noise.toml")
    again = Runner(
        FlaskBackend(create_shop_app(noisy=True)),
        FlaskBackend(create_shop_app(noisy=True)),
        Comparator(loaded),
    ).run(from_list(REQUESTS))
    assert again.totals.mismatches == 0
    assert NoiseLearner.load(tmp_path / "noise.toml").as_mapping() == learner.as_mapping()


def test_learned_noise_does_not_hide_a_real_regression_in_a_noisy_candidate():
    report = run(
        create_shop_app(noisy=True), create_shop_app("missing_field", noisy=True), learn_noise=True
    )
    paths = {d.path for r in report.results for d in r.regressions}
    assert "$.sku" in paths and "$.meta.request_id" not in paths


def test_reports_render_as_table_json_and_escaped_self_contained_html(tmp_path):
    report = run(create_shop_app(), create_shop_app("about_text"))
    table = render_table(report)
    assert "GET /about" in table and "TOTAL" in table and "line:4" in table
    report.save_json(tmp_path / "r.json")
    loaded = RunReport.load_json(tmp_path / "r.json")
    assert loaded.totals == report.totals
    assert [d.path for d in loaded.results[0].differences] == ["line:4"]
    page = render_html(loaded)
    assert "<html>" not in page.split("<body>", 1)[1].split("</body>")[0].replace(
        "&lt;html&gt;", ""
    )
    assert "&lt;p&gt;Open daily 9-18&lt;/p&gt;" in page
    assert (
        "http://" not in page
        and "https://" not in page
        and "<link" not in page
        and "<script" not in page
    )


def test_no_secret_from_a_request_reaches_recordings_or_reports(tmp_path):
    secrets = {
        "auth": "Bearer TOP-S3CRET-1",
        "cookie": "sid=TOP-S3CRET-2",
        "token": "TOP-S3CRET-3",
        "pw": "TOP-S3CRET-4",
    }

    from flask import Flask, jsonify, request

    def echo(extra: int):
        """An app that echoes request secrets back (worst case for leaks)."""
        app = Flask(f"echo{extra}")

        @app.post("/login")
        def login():
            body = request.get_json()
            return jsonify(
                {
                    "auth": request.headers.get("Authorization"),
                    "token": request.args.get("token"),
                    "password": body["password"],
                    "n": extra,
                }
            )

        return app

    redactor = Redactor(fields=["password", "token", "auth"])
    req = Request.build(
        "POST",
        "/login",
        query={"token": secrets["token"]},
        headers={"Authorization": secrets["auth"], "Cookie": secrets["cookie"]},
        json_body={"user": "ada", "password": secrets["pw"]},
    )
    report = Runner(FlaskBackend(echo(1)), FlaskBackend(echo(2)), redactor=redactor).run([req])
    assert report.totals.mismatches == 1
    store = RecordingStore(tmp_path / "rec.jsonl", redactor=redactor)
    ctl = FlaskBackend(echo(1))
    store.record_exchange(req, ctl.send(req))
    report.save_json(tmp_path / "report.json")
    (tmp_path / "report.html").write_text(render_html(report))
    (tmp_path / "table.txt").write_text(render_table(report))
    for f in tmp_path.iterdir():
        text = f.read_text()
        for s in secrets.values():
            assert s not in text, f"{s} leaked into {f.name}"
    assert (
        json.loads((tmp_path / "rec.jsonl").read_text())["request"]["headers"]["cookie"]
        == "[REDACTED]"
    )


def test_candidate_failures_are_recorded_as_errors_not_raised():
    from flask import Flask

    broken = Flask("broken")

    @broken.get("/products/<int:pid>")
    def boom(pid):
        raise RuntimeError("kaboom")

    broken.config["PROPAGATE_EXCEPTIONS"] = True
    report = run(create_shop_app(), broken)
    assert report.totals.errors >= 1
    assert any(r.outcome is Outcome.ERROR and "kaboom" in (r.error or "") for r in report.results)
