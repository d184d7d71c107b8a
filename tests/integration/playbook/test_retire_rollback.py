"""Rolling back `retire` after reverse CDC was stopped: the restarted capture's snapshot
re-sends the service's rows, and the rows the service deleted meanwhile are deleted from the
monolith too (a snapshot cannot carry an absence), with the writes held while it happens."""

from __future__ import annotations

import pytest

from kit.playbook import Playbook
from kit.runtime.demo_flow import verify_service
from tests.integration.playbook import reverse_cdc_helpers as rc
from tests.playbook_shop import Shop

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("shop", [{"stop_reverse": True}], indirect=True)
def test_rows_the_service_deleted_while_retired_are_gone_from_the_monolith_after_rollback(
    shop: Shop,
) -> None:
    m = shop.manifest
    pb = Playbook(m, actor="test")
    try:
        rc.advance_to_writes(pb, "catalog")
        result = pb.advance("catalog")
        assert result.ok and result.step == "retire", result
        assert result.evidence["reverse_cdc"] == "stopped"
        mono_db, svc_db = m.monolith.database_url, m.services["catalog"].database_url
        unsold = "SELECT max(id) FROM products WHERE id NOT IN (SELECT product_id FROM order_lines)"
        [(pid,)] = rc.rows(mono_db, unsold)
        # while retired (nothing captured): one product deleted, another renamed
        rc.execute(svc_db, f"DELETE FROM catalog_product WHERE id = {pid}")
        rc.execute(
            svc_db,
            "UPDATE catalog_product SET name = 'renamed while retired', "
            "slug = 'renamed-while-retired-1' WHERE id = 1",
        )  # the service keeps its slug (name + id) in step

        back = pb.rollback("catalog")

        assert back.ok, back
        assert rc.rows(mono_db, f"SELECT count(*) FROM products WHERE id = {pid}") == [(0,)]
        assert rc.rows(mono_db, "SELECT name FROM products WHERE id = 1") == [
            ("renamed while retired",)
        ]
        removed = back.evidence["deleted_while_retired"]
        assert removed["products"] == {"deleted": 1, "refused": []}
        modes = pb.route_modes()
        assert modes[("POST", "/products")] == "extracted"  # released to the owner again
        assert "held" not in modes.values()
        row = verify_service(m, "catalog", attempts=1)
        assert row.ok, row.detail
    finally:
        pb.close()
