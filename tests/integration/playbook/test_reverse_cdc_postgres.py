"""Reverse CDC on PostgreSQL: after `writes`, a product created and repriced through the proxy
(now served by the catalog service) lands in the monolith's PostgreSQL tables, the monolith
prices orders with it, and nothing loops back — the sinks tag their commits with a
replication origin and the pgoutput captures skip those transactions.

The monolith and both services run on one real PostgreSQL server (three databases); events
go through the embedded log (the Kafka variant is the end-to-end demo test)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kit.playbook import Playbook
from kit.playbook import pipelines as pl
from tests.integration.playbook import reverse_cdc_helpers as rc
from tests.integration.playbook.test_crash_and_proxy import _ProxyThread
from tests.playbook_shop import Shop, seed_monolith, write_manifest

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_shop(tmp_path: Path, postgres_server) -> Iterator[Shop]:  # type: ignore[no-untyped-def]
    from kit.manifest import load_manifest

    urls = {n: postgres_server.create_database() for n in ("monolith", "catalog", "customers")}
    path = write_manifest(tmp_path)
    manifest = path.read_text()
    for name, url in urls.items():
        manifest = manifest.replace(f"sqlite:///var/{name}.db", url)
    path.write_text(manifest)
    m = load_manifest(path)
    seed_monolith(m.monolith.database_url)
    shop = Shop(path, m)
    try:
        for name in ("monolith", "catalog", "customers"):
            shop.serve(name)
        yield shop
    finally:
        shop.close()
        for url in urls.values():
            postgres_server.drop_database(url.rsplit("/", 1)[1])


def _slots(url: str) -> set[str]:
    from cdc.capture.postgres import list_slots

    return {s.name for s in list_slots(url)}


def test_on_postgresql_writes_through_the_proxy_reach_the_monolith_without_loops(
    pg_shop: Shop,
) -> None:
    from kit.playbook.proxy import build_proxy

    m = pg_shop.manifest
    pb = Playbook(m, actor="test")
    try:
        rc.advance_to_writes(pb, "catalog")
        fwd, rev = pb.forward("catalog"), pb.reverse("catalog")
        # per-pipeline slots: forward dropped when forward CDC stopped, reverse in place
        assert rev.slot in _slots(rev.source_url) and fwd.slot not in _slots(fwd.source_url)
        assert fwd.capture_worker not in {w.name for w in pl.desired_workers(m)}
        with rc.reverse_workers(m, rev):
            runtime = build_proxy(m, listen_port=0, admin_port=0)
            with _ProxyThread(runtime):
                pid = rc.create_and_reprice_product(runtime.proxy_url, "PG-NEW-1")
            assert pid > 50  # the service's sequence moved past the monolith's ids
            rc.assert_monolith_sells_the_service_product(
                m, pid, ("PG-NEW-1", "Reverse Bench", True, "EUR"), timeout_s=20
            )

            # no loops: the reverse sink's commits carry its replication origin; nothing new
            # is published once the two writes (create = insert + slug update, reprice) went
            reverse_events = rc.published(pb, rev)
            time.sleep(1.5)
            assert rc.published(pb, rev) == reverse_events <= 3
            lags = pb.lag("catalog", "reverse")
            assert all((x.events or 0) == 0 for x in lags), lags
    finally:
        pb.close()


def test_on_postgresql_cdc_running_both_ways_does_not_loop_events(pg_shop: Shop) -> None:
    """Capture on both sides at once: each change is published once, by its own side."""
    m = pg_shop.manifest
    pb = Playbook(m, actor="test")
    try:
        for _ in range(3):  # schema, capture, verify
            assert pb.advance("catalog").ok
        fwd, rev = pb.forward("catalog"), pb.reverse("catalog")
        pl.enable_pipe_capture(m, rev)  # reverse capture on top (slot created right away)
        rc.assert_each_side_applies_the_others_change_once(pb, m, fwd, rev, rounds=2, timeout_s=30)
        # rollback of capture drops the forward slot; the reverse one is ours to drop here
        pl.disable_pipe_capture(m, rev)
        assert rev.slot not in _slots(rev.source_url)
        assert pb.rollback("catalog").ok  # verify -> capture
        assert pb.rollback("catalog").ok  # capture -> schema: slot gone, tables emptied
        assert fwd.slot not in _slots(fwd.source_url)
        assert rc.rows(rev.source_url, "SELECT count(*) FROM catalog_product") == [(0,)]
    finally:
        pb.close()
