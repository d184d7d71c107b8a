"""Request sources: OpenAPI generation, hand-written lists."""

from __future__ import annotations

import pytest
from parity_testapps import openapi_document

from parity.model import Request
from parity.sources import from_list, from_openapi, load_list_file


def test_openapi_builds_get_requests_from_id_pool_and_query_variants():
    gen = from_openapi(openapi_document(), {"id": [1, 2, 3]})
    targets = {str(r) for r in gen.requests}
    assert gen.endpoints == ["GET /products", "GET /products/<int:id>"]
    assert {"GET /products/1", "GET /products/2", "GET /products/3"} <= targets
    assert "GET /products?page=2&per_page=5" in targets
    assert {"GET /products?sort=price", "GET /products?sort=-price"} <= targets
    assert {"GET /products?active=true", "GET /products?active=false"} <= targets
    assert all(r.method == "GET" for r in gen.requests)
    assert gen.skipped == ["GET /reports/sales: no value for required query parameter(s) from"]


def test_openapi_skips_paths_without_ids_and_fills_required_queries_from_the_pool():
    gen = from_openapi(openapi_document(), {"from": ["2026-01-01"]})
    assert any("no ids for path parameter(s) id" in s for s in gen.skipped)
    assert "GET /reports/sales?from=2026-01-01" in {str(r) for r in gen.requests}


def test_hand_written_lists_accept_lines_dicts_and_requests(tmp_path):
    reqs = from_list(
        ["GET /a?x=1", {"method": "POST", "path": "/b", "json": {"k": 1}}, Request("DELETE", "/c")]
    )
    assert [str(r) for r in reqs] == ["GET /a?x=1", "POST /b", "DELETE /c"]
    assert reqs[1].headers["content-type"] == "application/json"
    f = tmp_path / "reqs.txt"
    f.write_text("# comment\nGET /products\n\n/products/2\n")
    assert [str(r) for r in load_list_file(f)] == ["GET /products", "GET /products/2"]
    with pytest.raises(ValueError, match="request list item 0"):
        from_list(["GET nopath"])
