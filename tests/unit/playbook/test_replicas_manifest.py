"""Replicas in the manifest and the ownership model: a replica is read-only reference data,
mapped like an owned table, never owned, never moved at `writes`; and `kit manifest check`
compares declared keys with the real database."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from kit.manifest import ManifestError, check_manifest, load_manifest
from kit.playbook import pipelines as pl
from kit.playbook.ownership import (
    MONOLITH,
    owned_tables,
    table_writer,
)
from kit.playbook.state import StateStore
from kitcore.db import make_engine
from tests.playbook_shop import ROOT, write_manifest

CATALOG_TABLES = 'tables = ["categories", "products"]'
REPLICA_MAPPING = """
[[tables]]
source = "customers"
target = "customer_ref"
key = ["id"]

[tables.columns]
id = "id"
email = "email"
"""


def _write(tmp_path: Path, edit, mapping_extra: str | None = None) -> Path:  # type: ignore[no-untyped-def]
    path = write_manifest(tmp_path)
    text_ = path.read_text()
    if mapping_extra is not None:
        mapping = tmp_path / "catalog_mapping.toml"
        mapping.write_text((ROOT / "extracted/catalog/mapping.toml").read_text() + mapping_extra)
        text_ = text_.replace(str(ROOT / "extracted/catalog/mapping.toml"), str(mapping))
    path.write_text(edit(text_))
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    return [str(p) for p in info.value.problems]


def _with_replicas(replicas: str):  # type: ignore[no-untyped-def]
    return lambda t: t.replace(CATALOG_TABLES, f"{CATALOG_TABLES}\nreplicas = {replicas}", 1)


def test_a_table_cannot_be_both_owned_and_a_replica_and_replicas_are_names(
    tmp_path: Path,
) -> None:
    problems = _problems(_write(tmp_path, _with_replicas('["products", "customers", "customers"]')))
    assert (
        "services.catalog.replicas: table 'products' is both in tables (the service takes over "
        "its writes) and in replicas (a read-only copy): a service owns a table or replicates "
        "it, not both" in problems
    )
    assert "services.catalog.replicas: table 'customers' is listed twice" in problems
    problems = _problems(_write(tmp_path, _with_replicas('"customers"')))
    assert problems == ["services.catalog.replicas: must be a list of table names, got 'customers'"]


def test_write_endpoints_of_a_service_that_only_holds_replicas_are_refused(tmp_path: Path) -> None:
    def edit(t: str) -> str:
        return t.replace('tables = ["customers"]', 'tables = []\nreplicas = ["customers"]')

    problems = _problems(_write(tmp_path, edit))
    assert any(
        p.startswith(
            "services.customers.endpoints: POST /customers is declared kind = 'write', but "
            "'customers' owns no table (only the replicas customers, which never accept writes)"
        )
        for p in problems
    )


def test_a_replica_must_be_mapped_and_a_mapped_unlisted_table_points_to_replicas(
    tmp_path: Path,
) -> None:
    m = load_manifest(_write(tmp_path, _with_replicas('["customers"]')))
    problems = [str(p) for p in check_manifest(m)]
    assert any(
        p.startswith("services.catalog.replicas: replica 'customers' has no [[tables]] entry")
        for p in problems
    )
    m = load_manifest(_write(tmp_path, lambda t: t, REPLICA_MAPPING))
    problems = [str(p) for p in check_manifest(m)]
    assert (
        "services.catalog.tables: mapping maps table 'customers', which is not listed here (a "
        "table the service only reads: add it to replicas = [...])" in problems
    )


def test_a_mapped_replica_is_checked_forward_only(tmp_path: Path) -> None:
    m = load_manifest(_write(tmp_path, _with_replicas('["customers"]'), REPLICA_MAPPING))
    problems = [str(p) for p in check_manifest(m)]
    catalog = [p for p in problems if p.startswith("services.catalog")]
    # the copy's table is not in the shop catalog's models: named; no [reverse] demands
    assert catalog == [
        "services.catalog.mapping: customers -> customer_ref: target table 'customer_ref' is "
        "not in the service schema (extracted.catalog.models:Base.metadata)"
    ]


def test_the_ownership_model_never_lists_a_replica_as_owned(tmp_path: Path) -> None:
    m = load_manifest(_write(tmp_path, _with_replicas('["customers"]'), REPLICA_MAPPING))
    assert owned_tables(m, "catalog") == ("categories", "products")
    assert m.owner_of_table("customers") == "customers"
    assert m.replica_holders("customers") == ["catalog"]
    fwd, rev, rep = (
        pl.forward_pipeline(m, "catalog"),
        pl.reverse_pipeline(m, "catalog"),
        pl.replica_pipeline(m, "catalog"),
    )
    assert fwd.source_tables == ["categories", "products"]
    assert rev.target_tables == ["categories", "products"]  # never written back
    assert (rep.source_tables, rep.target_tables) == (["customers"], ["customer_ref"])
    assert (rep.group, rep.sink_worker, rep.capture_worker) == (
        "replica-catalog",
        "sink:catalog:replica",
        "capture:monolith",
    )
    assert "sink:catalog:replica" in pl.worker_names(m)
    assert "sink:customers:replica" not in pl.worker_names(m)

    state = StateStore(m.kit.state_url)
    try:
        assert table_writer(m, state, "customers") == MONOLITH
        state.want_worker("sink:catalog:replica", True, "replica capture of catalog")
        state.set("catalog", write_owner="service")
        # catalog owning its writes never makes it the writer of its replica
        assert table_writer(m, state, "customers") == MONOLITH
        assert table_writer(m, state, "products") == "catalog"
        # the monolith's triggers on a replicated table keep the reverse sinks' writes
        # (tagged) whichever pipeline installs them; the service's own database never
        assert pl.replicated_tables(m, rep) == ["customers"]
        assert pl.replicated_tables(m, pl.forward_pipeline(m, "customers")) == ["customers"]
        assert pl.replicated_tables(m, fwd) == []
        assert pl.replicated_tables(m, pl.reverse_pipeline(m, "customers")) == []
    finally:
        state.close()


def test_manifest_check_names_a_primary_key_the_model_declares_but_the_database_lacks(
    tmp_path: Path,
) -> None:
    m = load_manifest(_write(tmp_path, lambda t: t))
    engine = make_engine(m.monolith.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE categories (id INTEGER PRIMARY KEY, name TEXT)"))
            conn.execute(text("CREATE TABLE products (id INTEGER PRIMARY KEY, sku TEXT)"))
            # the model keys customers by id; this database has no primary key at all
            conn.execute(text("CREATE TABLE customers (id INTEGER NOT NULL, email TEXT)"))
    finally:
        engine.dispose()
    problems = [str(p) for p in check_manifest(m)]
    assert (
        "services.customers.mapping: keys: table 'customers': the model declares primary key "
        "(id) but the database has none; capture uses the mapping's key instead" in problems
    )
    assert not [p for p in problems if "keys:" in p and "customers" not in p]


def test_on_postgresql_a_replica_has_its_own_slot_worker_and_topics(tmp_path: Path) -> None:
    def edit(t: str) -> str:
        t = _with_replicas('["customers"]')(t)
        return t.replace(
            'database_url = "sqlite:///var/monolith.db"',
            'database_url = "postgresql://kit@127.0.0.1:5432/shop"',
        )

    m = load_manifest(_write(tmp_path, edit, REPLICA_MAPPING))
    rep, fwd = pl.replica_pipeline(m, "catalog"), pl.forward_pipeline(m, "catalog")
    assert (rep.slot, rep.publication) == ("kit_shop_catalog_rep", "kit_shop_catalog_rep")
    assert rep.capture_worker == "capture:monolith:catalog:replica"
    # never the topic another slot publishes the same table to (customers' forward pipeline)
    assert rep.topics == {"customers": "shop-catalog-replica.public.customers"}
    assert pl.forward_pipeline(m, "customers").topics == {"customers": "shop.public.customers"}
    assert fwd.slot == "kit_shop_catalog_fwd"
    names = pl.worker_names(m)
    assert {"capture:monolith:catalog:replica", "sink:catalog:replica"} <= set(names)
    worker = pl.manifest_worker(m, "capture:monolith:catalog:replica")
    assert (worker.kind, worker.pipe) == ("capture", rep)


def test_a_read_route_flip_waits_for_a_lagging_replica_feed(tmp_path: Path) -> None:
    from kit.playbook.guards import GuardContext, RouteIntent, find_endpoint
    from kit.playbook.state import ServiceState

    m = load_manifest(_write(tmp_path, _with_replicas('["customers"]'), REPLICA_MAPPING))

    def lag(service: str, direction: str) -> list[pl.Lag]:
        if direction == "replica":
            return [pl.Lag("customers", "replica", service, 12, 9.0, 0)]
        return [pl.Lag("products", direction, service, 0, 0.0, 0)]

    state = StateStore(m.kit.state_url)
    try:
        gctx = GuardContext(m, state, None, lag)
        e = find_endpoint(m, "GET", "/products")
        assert e is not None
        at_shadow = ServiceState("catalog", step="shadow", status="running")
        intent = RouteIntent(e, "shadow", "monolith", "catalog", "shadow", "monolith")
        (refusal,) = gctx.refusals(intent, at_shadow)
        assert refusal.startswith(
            "cdc lag: replica CDC of catalog is behind (customers 12 event(s)/9.0s"
        )
        writes = find_endpoint(m, "POST", "/products")
        assert writes is not None
        at_writes = ServiceState("catalog", step="writes", status="running", write_owner="service")
        w = RouteIntent(writes, "extracted", "monolith", "catalog", "extracted", "monolith")
        assert gctx.refusals(w, at_writes) == []  # writes never write a replica: not gated
    finally:
        state.close()
