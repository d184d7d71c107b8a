"""The manifest names every problem precisely, and derives proxy, CDC and parity config."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from kit.manifest import (
    ManifestError,
    check_manifest,
    load_manifest,
    parity_rules,
    proxy_config,
)
from kit.playbook.pipelines import forward_pipeline, invert_mapping, reverse_pipeline
from tests.playbook_shop import write_manifest

ROOT = Path(__file__).resolve().parents[3]


def _manifest(tmp_path: Path, edit=None) -> Path:  # type: ignore[no-untyped-def]
    path = write_manifest(tmp_path)
    if edit:
        path.write_text(edit(path.read_text()))
    return path


def _problems(tmp_path: Path, edit) -> list[str]:  # type: ignore[no-untyped-def]
    path = _manifest(tmp_path, edit)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    return [str(p) for p in info.value.problems]


def test_the_repository_manifest_is_valid_against_the_real_code() -> None:
    m = load_manifest(ROOT / "kit.toml", env={})
    assert check_manifest(m) == []
    assert {s for s in m.services} == {"catalog", "customers"}
    assert all(e.method == "GET" for e in m.services["catalog"].read_endpoints)
    assert {e.method for e in m.services["catalog"].write_endpoints} == {"POST", "PATCH", "DELETE"}


def test_environment_variables_fill_in_urls(tmp_path: Path) -> None:
    path = _manifest(
        tmp_path,
        lambda t: t.replace(
            'database_url = "sqlite:///var/catalog.db"',
            'database_url = "${CAT_URL:-sqlite:///var/catalog.db}"',
        ),
    )
    m = load_manifest(path, env={"CAT_URL": "postgresql://u@127.0.0.1/cat"})
    assert m.services["catalog"].database_url == "postgresql://u@127.0.0.1/cat"
    assert load_manifest(path, env={}).services["catalog"].database_url.endswith("var/catalog.db")


def test_unknown_transport_is_named(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path, lambda t: t.replace('kind = "embedded"', 'kind = "carrier-pigeon"')
    )
    assert problems == [
        "transport.kind: unknown transport 'carrier-pigeon'; known: embedded, kafka"
    ]


def test_kafka_without_bootstrap_servers_is_named(tmp_path: Path) -> None:
    problems = _problems(tmp_path, lambda t: t.replace('kind = "embedded"', 'kind = "kafka"'))
    assert any(p.startswith("transport.bootstrap_servers: is required") for p in problems)


def test_bad_urls_are_named_with_their_field(tmp_path: Path) -> None:
    def edit(t: str) -> str:
        t = t.replace('url = "http://127.0.0.1:', 'url = "ftp://127.0.0.1:', 1)
        return t.replace(
            'database_url = "sqlite:///var/customers.db"', 'database_url = "not a url"'
        )

    problems = _problems(tmp_path, edit)
    assert any(p.startswith("monolith.url: must be an http(s) URL") for p in problems)
    assert any(
        p.startswith("services.customers.database_url: is not a database URL") for p in problems
    )


def test_duplicate_ownership_of_endpoints_and_tables_is_named(tmp_path: Path) -> None:
    def edit(t: str) -> str:
        t = t.replace('tables = ["customers"]', 'tables = ["customers", "products"]')
        return t.replace(
            '{ methods = ["GET"], path = "/customers", kind = "read" },',
            '{ methods = ["GET"], path = "/customers", kind = "read" },\n'
            '  { methods = ["GET"], path = "/products/<int:pid>", kind = "read" },',
        )

    problems = _problems(tmp_path, edit)
    assert (
        "services.customers.endpoints: GET /products/<int:pid> is already owned by service "
        "'catalog' (duplicate ownership)" in problems
    )
    assert (
        "services.customers.tables: table 'products' is already owned by service 'catalog' "
        "(duplicate ownership)" in problems
    )


def test_a_read_endpoint_that_writes_and_unknown_keys_are_named(tmp_path: Path) -> None:
    def edit(t: str) -> str:
        t = t.replace(
            '{ methods = ["POST"], path = "/customers", kind = "write" }',
            '{ methods = ["POST"], path = "/customers", kind = "read" }',
        )
        return t.replace("[guards]", "[guards]\nparity_min_sample = 3")

    problems = _problems(tmp_path, edit)
    assert (
        "services.customers.endpoints[2]: POST /customers changes data: declare it with kind = 'write'"
        in problems
    )
    assert "guards.parity_min_sample: unknown key" in problems


def test_check_names_unknown_endpoints_missing_tables_and_missing_columns(tmp_path: Path) -> None:
    mapping = (ROOT / "extracted/catalog/mapping.toml").read_text()
    bad_mapping = tmp_path / "catalog-mapping.toml"
    bad_mapping.write_text(
        mapping.replace('sku = "sku"', 'sku = "sku"\nbarcode = "sku"').replace(
            'currency = "currency"', 'currency = "currency_code"'
        )
    )

    def edit(t: str) -> str:
        t = t.replace(str(ROOT / "extracted/catalog/mapping.toml"), str(bad_mapping))
        t = t.replace('tables = ["customers"]', 'tables = ["customers", "loyalty_points"]')
        return t.replace(
            '{ methods = ["GET"], path = "/customers", kind = "read" },',
            '{ methods = ["GET"], path = "/customers", kind = "read" },\n'
            '  { methods = ["GET"], path = "/customers/<int:id>/points", kind = "read" },',
        )

    m = load_manifest(_manifest(tmp_path, edit))
    problems = [str(p) for p in check_manifest(m)]
    assert any(
        "unknown endpoint GET /customers/<int:id>/points" in p and "does not serve it" in p
        for p in problems
    )
    assert any("table 'loyalty_points' is not in the monolith schema" in p for p in problems)
    assert any("mapping to a missing column catalog_product.barcode" in p for p in problems)
    assert any("reads missing monolith column products.currency_code" in p for p in problems)
    assert any("table 'loyalty_points' has no [[tables]] entry" in p for p in problems)


def test_kit_manifest_check_exits_non_zero_and_lists_problems(tmp_path: Path) -> None:
    from kit.cli import main

    bad = _manifest(tmp_path, lambda t: t.replace('kind = "embedded"', 'kind = "rabbit"'))
    result = CliRunner().invoke(main, ["manifest", "check"], env={"KIT_MANIFEST": str(bad)})
    assert result.exit_code == 1
    assert "transport.kind: unknown transport 'rabbit'" in result.output
    (tmp_path / "ok").mkdir()
    good = _manifest(tmp_path / "ok")
    ok = CliRunner().invoke(main, ["manifest", "check"], env={"KIT_MANIFEST": str(good)})
    assert ok.exit_code == 0, ok.output
    assert "ok (2 service(s), 13 endpoint(s), 3 table(s)" in ok.output


def test_proxy_cdc_and_parity_configuration_are_derived_from_the_manifest(tmp_path: Path) -> None:
    m = load_manifest(_manifest(tmp_path))
    cfg = proxy_config(m)
    assert set(cfg.upstreams) == {"monolith", "catalog", "customers"}
    assert {(r.method, r.path, r.service) for r in cfg.routes} >= {
        ("GET", "/products/<int:id>", "catalog"),
        ("DELETE", "/customers/<int:id>", "customers"),
    }
    assert all(str(r.mode) == "monolith" for r in cfg.routes)
    fwd, rev = forward_pipeline(m, "catalog"), reverse_pipeline(m, "catalog")
    assert fwd.topics == {"categories": "shop.main.categories", "products": "shop.main.products"}
    assert rev.topics["catalog_product"] == "shop-catalog.main.catalog_product"
    inverted = invert_mapping(m.services["catalog"].mapping()).for_source("catalog_product")
    row = inverted.forward(
        {"id": 1, "sku": "A", "slug": "x-1", "name": "X", "description": "", "category_id": 2,
         "price_amount": "12.34", "currency": "EUR", "is_listed": True,
         "created_at": "t", "updated_at": "t"}
    )  # fmt: skip
    assert row["price_cents"] == 1234 and row["active"] is True and "slug" not in row
    rules = parity_rules(m)
    assert "GET /products/<int:id>" in rules.endpoint_patterns()


def test_topics_are_named_after_the_project_folder_when_the_manifest_does_not_say(
    tmp_path: Path,
) -> None:
    project = tmp_path / "Notes App"
    project.mkdir()
    path = write_manifest(project)
    path.write_text("\n".join(line for line in path.read_text().splitlines()
                              if not line.startswith("topic_prefix")))  # fmt: skip
    assert load_manifest(path).transport.topic_prefix == "Notes-App"


def test_the_shadow_recheck_delay_comes_from_the_manifest(tmp_path: Path) -> None:
    assert proxy_config(load_manifest(_manifest(tmp_path))).shadow.recheck_after_s == 1.0
    m = load_manifest(
        _manifest(tmp_path, lambda t: t.replace("[proxy]\n", "[proxy]\nrecheck_after_s = 0.4\n"))
    )
    assert proxy_config(m).shadow.recheck_after_s == 0.4
    problems = _problems(
        tmp_path, lambda t: t.replace("[proxy]\n", "[proxy]\nrecheck_after_s = -1\n")
    )
    assert any("recheck_after_s" in p for p in problems), problems


def test_a_service_names_the_path_that_says_it_may_take_traffic(tmp_path: Path) -> None:
    path = _manifest(
        tmp_path,
        lambda t: t.replace(
            "[services.catalog]\n", '[services.catalog]\ntraffic_ready = "/api/health"\n', 1
        ),
    )
    m = load_manifest(path)
    assert m.services["catalog"].traffic_ready == "/api/health"
    assert m.services["customers"].traffic_ready == "/readyz"  # the default
    problems = _problems(
        tmp_path,
        lambda t: t.replace(
            "[services.catalog]\n", '[services.catalog]\ntraffic_ready = "health"\n', 1
        ),
    )
    assert problems == [
        "services.catalog.traffic_ready: must be a path starting with '/', got 'health'"
    ]
