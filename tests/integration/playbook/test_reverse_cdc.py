"""After the `writes` step, the service owns the tables and reverse CDC feeds the monolith:
a product created or repriced through the catalog service appears in the monolith's tables,
the monolith prices orders with it, and no event loops back."""

from __future__ import annotations

import time

import httpx
import pytest

from kit.playbook import Playbook
from kit.playbook import pipelines as pl
from tests.integration.playbook import reverse_cdc_helpers as rc
from tests.playbook_shop import Shop

pytestmark = pytest.mark.integration


def test_writes_through_the_service_reach_the_monolith_which_prices_orders_with_them(
    shop: Shop,
) -> None:
    m = shop.manifest
    pb = Playbook(m, actor="test")
    try:
        rc.advance_to_writes(pb, "catalog")
        rev = pb.reverse("catalog")
        with rc.reverse_workers(m, rev):
            pid = rc.create_and_reprice_product(m.services["catalog"].url, "NEW-1")
            rc.assert_monolith_sells_the_service_product(
                m, pid, ("NEW-1", "Reverse Bench", 1, "EUR"), timeout_s=15
            )
            mono, mono_db = m.monolith.url, m.monolith.database_url
            customer = rc.rows(mono_db, "SELECT id FROM customers ORDER BY id LIMIT 1")[0][0]
            httpx.put(f"{mono}/inventory/1", json={"on_hand": 10})
            order1 = httpx.post(
                f"{mono}/orders",
                json={"customer_id": customer, "lines": [{"product_id": 1, "quantity": 2}]},
            )
            assert order1.status_code == 201, order1.text
            assert order1.json()["total"]["cents"] == 1554

            # no loops: the reverse sink's writes to the monolith are not captured back, and
            # the number of events stays bounded (the service writes a new product in two
            # statements: insert, then its id-based slug; plus the repricing)
            fwd = pb.forward("catalog")
            reverse_events = rc.published(pb, rev)
            forward_events = rc.published(pb, fwd)
            time.sleep(1.5)
            assert rc.published(pb, rev) == reverse_events <= 3
            assert rc.published(pb, fwd) == forward_events
            changes = "SELECT count(*) FROM _cdc_changes WHERE tbl = 'products'"
            assert rc.rows(mono_db, changes) == [(0,)]
    finally:
        pb.close()


def test_cdc_running_both_ways_does_not_loop_events(shop: Shop) -> None:
    """With capture on both sides at once (the writes transition), each change makes one event."""
    m = shop.manifest
    pb = Playbook(m, actor="test")
    try:
        for _ in range(3):  # schema, capture, verify
            assert pb.advance("catalog").ok
        fwd, rev = pb.forward("catalog"), pb.reverse("catalog")
        pl.enable_capture(rev.source_url, rev.source_tables)  # reverse capture on top
        rc.assert_each_side_applies_the_others_change_once(pb, m, fwd, rev, rounds=3, timeout_s=20)
    finally:
        pb.close()
