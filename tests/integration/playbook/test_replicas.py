"""A service keeps a read-only replica of reference data it does not own: the shop's catalog
declares `replicas = ["customers"]` (a test-local copy of the manifest and of its mapping).
Through the whole playbook, to `retire` and after, monolith changes of `customers` reach the
catalog's copy, `kit cdc verify` covers it, `writes` moves only the tables catalog owns, and
the copy refuses every write but its sink's."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.exc import DBAPIError

from kit.manifest import Manifest, load_manifest
from kit.playbook import Playbook
from kit.playbook import pipelines as pl
from tests.integration.playbook import reverse_cdc_helpers as rc
from tests.playbook_shop import ROOT, Shop, seed_monolith, write_manifest

pytestmark = pytest.mark.integration

REPLICA_MAPPING = """
[[tables]]
source = "customers"
target = "customer_ref"
key = ["id"]

[tables.columns]
id = "id"
email = "email"
full_name = "full_name"
"""


def replica_shop(folder: Path, urls: dict[str, str] | None = None) -> Shop:
    """The shop's test manifest with catalog holding a replica of the monolith's customers
    (which the customers service owns, not extracted in this test); `urls`: database URLs
    by app name instead of the SQLite files."""
    path = write_manifest(folder)
    for name, url in (urls or {}).items():
        path.write_text(path.read_text().replace(f"sqlite:///var/{name}.db", url))
    mapping = folder / "catalog_mapping.toml"
    mapping.write_text((ROOT / "extracted/catalog/mapping.toml").read_text() + REPLICA_MAPPING)
    text = path.read_text()
    old = f'mapping = "{ROOT}/extracted/catalog/mapping.toml"\ntables = ["categories", "products"]'
    assert old in text
    path.write_text(
        text.replace(
            old,
            f'mapping = "{mapping}"\ntables = ["categories", "products"]\nreplicas = ["customers"]',
        )
    )
    m = load_manifest(path)
    seed_monolith(m.monolith.database_url)
    shop = Shop(path, m)
    shop.serve("monolith")
    shop.serve("catalog")
    return shop


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    s = replica_shop(tmp_path)
    try:
        yield s
    finally:
        s.close()


@contextmanager
def running(m: Manifest, *names: str) -> Iterator[None]:
    """Workers as `kit up` runs them, each in a thread."""
    stop = threading.Event()
    threads = [
        threading.Thread(target=pl.run_worker, args=(m, n, stop), daemon=True) for n in names
    ]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)


def replica_rows(m: Manifest) -> list[tuple]:
    db = m.services["catalog"].database_url
    return rc.rows(db, "SELECT id, email, full_name FROM customer_ref ORDER BY id")


def monolith_rows(m: Manifest) -> list[tuple]:
    db = m.monolith.database_url
    return rc.rows(db, "SELECT id, email, full_name FROM customers ORDER BY id")


def schema_with_replica_table(pb: Playbook) -> None:
    """catalog's `schema` step, then the replica's table: it belongs to the service's own
    schema (here made by hand), which the capture step then feeds."""
    result = pb.advance("catalog")
    assert result.ok and result.step == "schema", result
    rc.execute(
        pb.m.services["catalog"].database_url,
        "CREATE TABLE customer_ref (id INTEGER PRIMARY KEY, email VARCHAR(200), "
        "full_name VARCHAR(200))",
    )


def test_a_replica_stays_fed_through_writes_and_retire_and_never_accepts_writes(
    shop: Shop,
) -> None:
    m = shop.manifest
    catalog, mono_db = m.services["catalog"], m.monolith.database_url
    pb = Playbook(m, actor="test")
    try:
        schema_with_replica_table(pb)
        captured = pb.advance("catalog")
        assert captured.ok, captured
        assert captured.evidence["snapshot"]["customers"] == 30
        assert replica_rows(m) == monolith_rows(m)
        verified = pb.advance("catalog")
        assert verified.ok, verified
        assert verified.evidence["tables"]["customers"]["target_rows"] == 30

        for _ in range(6):  # shadow, canary x2, reads, writes, retire
            result = pb.advance("catalog")
            assert result.ok, result
            if result.step == "writes":
                # only the owned tables changed direction; the replica keeps its forward feed
                assert result.evidence["reverse_topics"] == [
                    "shop-catalog.main.catalog_category",
                    "shop-catalog.main.catalog_product",
                ]
                on = pl.capture_enabled(mono_db, ["products", "customers"])
                assert on == {"products": False, "customers": True}
            if result.step == "retire":
                break
        assert pb.state.get("catalog").step == "retire"
        wanted = {w.name for w in pl.desired_workers(m)}
        assert {"capture:monolith", "sink:catalog:replica"} <= wanted
        assert "sink:catalog" not in wanted

        # after retire: the monolith still owns customers; its changes reach the copy
        rc.execute(
            mono_db,
            "INSERT INTO customers (id, email, full_name, created_at, updated_at) VALUES "
            "(9001, 'ada@example.org', 'Ada Lovelace', '2026-01-01 00:00:00', "
            "'2026-01-01 00:00:00')",
        )
        rc.execute(mono_db, "UPDATE customers SET full_name = 'Grace Hopper' WHERE id = 1")
        rc.execute(mono_db, "DELETE FROM customers WHERE id = 2")
        with running(m, "capture:monolith", "sink:catalog:replica"):
            rc.until(lambda: replica_rows(m) == monolith_rows(m), timeout_s=15)
        got = {r[0]: r for r in replica_rows(m)}
        assert got[9001] == (9001, "ada@example.org", "Ada Lovelace")
        assert got[1][2] == "Grace Hopper" and 2 not in got

        # the copy refuses writes that are not its sink's
        with pytest.raises(DBAPIError, match="read-only replica"):
            rc.execute(catalog.database_url, "UPDATE customer_ref SET email = 'x' WHERE id = 1")

        lag = [x for x in pb.status().lag if x.direction == "replica"]
        assert {x.table for x in lag} == {"customers"}
        assert all((x.events or 0) == 0 for x in lag)
    finally:
        pb.close()

    from kit.cli import main

    env = {"KIT_MANIFEST": str(shop.manifest_path)}
    result = CliRunner(env=env).invoke(main, ["cdc", "verify", "catalog"])
    assert result.exit_code == 0, result.output
    assert "customers" in result.output and "source and target match" in result.output


def test_capture_rollback_stops_the_replica_but_keeps_triggers_another_pipeline_reads(
    shop: Shop,
) -> None:
    """catalog replicates customers, which the customers service takes over: the monolith's
    triggers on customers are shared; rolling back catalog's capture empties and unguards its
    copy but leaves customers' forward CDC alone."""
    from cdc.readonly import protected

    m = shop.manifest
    catalog, mono_db = m.services["catalog"], m.monolith.database_url
    pb = Playbook(m, actor="test")
    try:
        schema_with_replica_table(pb)
        assert pb.advance("catalog").ok  # capture (with the replica)
        for _ in range(2):  # customers: schema, capture
            assert pb.advance("customers").ok
        assert len(replica_rows(m)) == 30

        rolled = pb.rollback("catalog")
        assert rolled.ok, rolled
        assert replica_rows(m) == []
        engine = pl.make_engine(catalog.database_url)
        try:
            assert protected(engine, ["customer_ref"]) == {"customer_ref": False}
        finally:
            engine.dispose()
        assert pl.capture_enabled(mono_db, ["customers", "products"]) == {
            "customers": True,  # customers' forward CDC still reads these triggers
            "products": False,
        }
        wanted = {w.name for w in pl.desired_workers(m)}
        assert "sink:catalog:replica" not in wanted
        assert {"capture:monolith", "sink:customers"} <= wanted
    finally:
        pb.close()


def _verify(shop: Shop, service: str) -> str:
    from kit.cli import main

    env = {"KIT_MANIFEST": str(shop.manifest_path)}
    result = CliRunner(env=env).invoke(main, ["cdc", "verify", service])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_replica_follows_the_service_that_owns_the_tables_writes_through_retire_and_back(
    shop: Shop,
) -> None:
    _follow_the_writer(shop, pg=False)


def test_on_postgresql_a_replica_follows_the_service_that_owns_the_tables_writes(
    tmp_path: Path,
    postgres_server,  # type: ignore[no-untyped-def]
) -> None:
    """The same on PostgreSQL: the replica's slot takes the reverse sink's commits
    (`origin = any`) while the customers service's forward slot skips them."""
    urls = {n: postgres_server.create_database() for n in ("monolith", "catalog", "customers")}
    s = replica_shop(tmp_path, urls)
    try:
        _follow_the_writer(s, pg=True)
    finally:
        s.close()
        for url in urls.values():
            postgres_server.drop_database(url.rsplit("/", 1)[1])


def _follow_the_writer(shop: Shop, *, pg: bool) -> None:
    """catalog replicates customers; the customers service takes customers' writes over
    (`writes`) and retires with reverse CDC due to stop: its writes, made through its own API,
    reach catalog's copy through the monolith (reverse sink, then the monolith capture's
    origin-tagged events only the replica sink applies); rolled back past `writes`, the copy
    follows the monolith again and the customers service never gets its own changes back."""
    import httpx

    m = shop.manifest
    shop.serve("customers")
    mono_db, customers = m.monolith.database_url, m.services["customers"]
    assert customers.stop_reverse_cdc_on_retire  # the shop's test manifest: the default
    pb = Playbook(m, actor="test")
    try:
        schema_with_replica_table(pb)
        assert pb.advance("catalog").ok  # capture: the replica is fed
        rc.advance_to_writes(pb, "customers")  # no refusal: the replica follows the writer
        retired = pb.advance("customers")
        assert retired.ok and retired.step == "retire", retired
        assert retired.evidence["reverse_cdc"].startswith("kept (replicas")
        wanted = {w.name for w in pl.desired_workers(m)}
        assert {"capture:customers", "sink:customers:reverse"} <= wanted
        assert "sink:customers" not in wanted

        base = customers.url
        mono_capture = "capture:monolith:catalog:replica" if pg else "capture:monolith"
        workers = ("capture:customers", "sink:customers:reverse", mono_capture)
        workers += ("sink:catalog:replica",)
        with running(m, *workers):
            made = httpx.post(f"{base}/customers", json={"email": "ada@x.org", "name": "Ada L"})
            assert made.status_code == 201, made.text
            ada = made.json()["id"]
            gone = httpx.post(f"{base}/customers", json={"email": "tmp@x.org", "name": "T Mp"})
            assert gone.status_code == 201, gone.text
            renamed = httpx.patch(f"{base}/customers/1", json={"name": "Grace Hopper"})
            assert renamed.status_code == 200, renamed.text
            rc.until(lambda: len(replica_rows(m)) == 32, timeout_s=15)
            deleted = httpx.delete(f"{base}/customers/{gone.json()['id']}")
            assert deleted.status_code in (200, 204), deleted.text
            rc.until(
                lambda: replica_rows(m) == monolith_rows(m) and len(replica_rows(m)) == 31,
                timeout_s=15,
            )
        got = {r[0]: r for r in replica_rows(m)}
        assert got[ada] == (ada, "ada@x.org", "Ada L")
        assert got[1][2] == "Grace Hopper"
        assert "source and target match" in _verify(shop, "catalog")

        # back past writes: the monolith owns customers again, the copy follows it
        for step in ("retire", "writes"):
            rolled = pb.rollback("customers")
            assert rolled.ok and rolled.step == step, rolled
        assert pb.state.get("customers").write_owner == "monolith"
        rc.execute(mono_db, f"UPDATE customers SET full_name = 'Ada Byron' WHERE id = {ada}")
        rc.execute(mono_db, f"DELETE FROM customers WHERE id = {ada}")
        rc.execute(mono_db, "UPDATE customers SET full_name = 'Alan Turing' WHERE id = 3")
        forward = ("capture:monolith:customers",) if pg else ()
        with running(m, mono_capture, *forward, "sink:catalog:replica", "sink:customers"):
            rc.until(lambda: replica_rows(m) == monolith_rows(m), timeout_s=15)
            rc.until(
                lambda: rc.rows(customers.database_url, "SELECT count(*) FROM customer") == [(30,)],
                timeout_s=15,
            )
        got = {r[0]: r for r in replica_rows(m)}
        assert ada not in got and got[3][2] == "Alan Turing" and got[1][2] == "Grace Hopper"
    finally:
        pb.close()
    assert "source and target match" in _verify(shop, "catalog")
    assert "source and target match" in _verify(shop, "customers")


def test_a_replica_captured_after_its_table_moved_to_a_service_follows_that_service(
    shop: Shop,
) -> None:
    """customers owns its writes first; catalog's capture of the replica is no longer refused:
    it snapshots the monolith's copy (kept current by reverse CDC) and then follows the
    customers service's writes."""
    import httpx

    m = shop.manifest
    shop.serve("customers")
    customers = m.services["customers"]
    pb = Playbook(m, actor="test")
    try:
        rc.advance_to_writes(pb, "customers")
        schema_with_replica_table(pb)
        captured = pb.advance("catalog")
        assert captured.ok, captured
        assert replica_rows(m) == monolith_rows(m)
        workers = ("capture:customers", "sink:customers:reverse")
        with running(m, *workers, "capture:monolith", "sink:catalog:replica"):
            renamed = httpx.patch(f"{customers.url}/customers/2", json={"name": "Edsger D"})
            assert renamed.status_code == 200, renamed.text
            rc.until(lambda: replica_rows(m)[1][2] == "Edsger D", timeout_s=15)
        verified = pb.advance("catalog")
        assert verified.ok, verified
    finally:
        pb.close()


def test_capture_of_a_replica_is_refused_while_its_owner_retired_with_reverse_cdc_stopped(
    shop: Shop,
) -> None:
    """customers retired (reverse CDC stopped) before catalog declared its replica: the
    monolith's copy no longer follows customers, so catalog's capture says so."""
    from kit.playbook import StepRefused

    shop.serve("customers")
    plain = shop.manifest_path.with_name("without_replica.toml")
    plain.write_text(shop.manifest_path.read_text().replace('replicas = ["customers"]\n', ""))
    pb0 = Playbook(load_manifest(plain), actor="test")
    try:
        rc.advance_to_writes(pb0, "customers")
        retired = pb0.advance("customers")
        assert retired.ok and retired.evidence["reverse_cdc"] == "stopped", retired
    finally:
        pb0.close()
    m = shop.manifest
    pb = Playbook(m, actor="test")
    try:
        assert pb.advance("catalog").ok  # schema
        with pytest.raises(StepRefused, match="whose reverse CDC is stopped"):
            pb.advance("catalog")
    finally:
        pb.close()
