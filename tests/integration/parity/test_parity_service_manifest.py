"""`kit parity ... --service catalog` takes the monolith and service URLs, the service's read
endpoints and the parity rules from the manifest, and finds ids that exist in the seed data
by itself; it never sends a write to live backends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from kit.commands.parity import cli
from kitcore.db import make_engine
from tests.contract.harness import load_through_mapping, mapping_for, migrate
from tests.playbook_shop import Shop, make_shop

pytestmark = pytest.mark.integration


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Shop]:
    """A seeded monolith and a catalog service loaded from it, both live on their URLs."""
    s = make_shop(tmp_path, serve=False)
    try:
        catalog_url = s.manifest.services["catalog"].database_url
        migrate("catalog", catalog_url)
        source, target = make_engine(s.manifest.monolith.database_url), make_engine(catalog_url)
        try:
            load_through_mapping(source, target, mapping_for("catalog"))
        finally:
            source.dispose()
            target.dispose()
        s.serve("monolith")
        s.serve("catalog")
        monkeypatch.setenv("KIT_MANIFEST", str(s.manifest_path))
        yield s
    finally:
        s.close()


def _report(path: Path) -> dict:
    return json.loads(path.read_text())


def test_run_for_a_service_compares_its_read_endpoints_on_ids_that_exist(shop, tmp_path):
    out = tmp_path / "report.json"
    result = CliRunner().invoke(cli, ["run", "--service", "catalog", "--json", str(out)])
    assert result.exit_code == 0, result.output
    endpoints = {e["endpoint"]: e for e in _report(out)["endpoints"]}
    assert {"GET /products/<int:id>", "GET /categories/<int:id>", "GET /products"} <= set(endpoints)
    assert not any("/customers" in e or "/orders" in e for e in endpoints)
    by_id = endpoints["GET /products/<int:id>"]
    # five listed ids plus one past the largest: the 404 answer is compared too
    assert by_id["requests"] == 6 and by_id["matches"] == 6


def test_run_for_a_service_catches_a_difference_in_the_service_database(shop, tmp_path):
    catalog = make_engine(shop.manifest.services["catalog"].database_url)
    try:
        with catalog.begin() as connection:
            connection.execute(
                text("UPDATE catalog_product SET price_amount = price_amount + 0.01")
            )
    finally:
        catalog.dispose()
    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        cli,
        ["run", "--service", "catalog", "--endpoint", "GET /products/<int:id>", "--json", str(out)],
    )
    assert result.exit_code == 1, result.output
    paths = {d["path"] for r in _report(out)["results"] for d in r["differences"]}
    assert "$.price.cents" in paths or "$.price.amount" in paths, paths


def test_learn_noise_for_a_service_counts_steady_answers(shop, tmp_path):
    rules = tmp_path / "noise.toml"
    result = CliRunner().invoke(cli, ["learn-noise", "--service", "catalog", "--out", str(rules)])
    assert result.exit_code == 0, result.output
    assert rules.exists()
    last = [line for line in result.stderr.splitlines() if line.startswith("learn-noise:")][-1]
    done = int(last.split(":")[1].split("/")[0])
    assert done > 0 and f"— {done} match, 0 mismatch, 0 noise, 0 errors" in last


def test_record_for_a_service_sends_through_the_manifest_proxy(shop, tmp_path):
    """No proxy runs in this shop: the error names the proxy address the manifest gives."""
    out = tmp_path / "rec.jsonl"
    result = CliRunner().invoke(cli, ["record", "--service", "catalog", "--out", str(out)])
    assert result.exit_code == 1
    assert f"http://{shop.manifest.proxy.listen}/openapi.json" in result.output
    assert not out.exists()


def test_a_request_list_that_would_write_is_refused_before_anything_is_sent(shop, tmp_path):
    requests = tmp_path / "reqs.txt"
    requests.write_text("GET /products/1\nPOST /products\n")
    result = CliRunner().invoke(cli, ["run", "--service", "catalog", "--requests", str(requests)])
    assert result.exit_code == 1
    assert "would write, first: POST /products" in result.output


def test_an_unknown_service_is_named_with_the_known_ones(shop):
    result = CliRunner().invoke(cli, ["run", "--service", "billing"])
    assert result.exit_code == 1
    assert "unknown service 'billing'" in result.output and "catalog" in result.output
