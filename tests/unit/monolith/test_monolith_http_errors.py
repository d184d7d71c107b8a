"""Cross-cutting bad input: every write endpoint, every list endpoint, and a fuzzer.

Whatever arrives, the answer is a documented status with the JSON error body; never a 500.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

WRITES = [
    ("post", "/categories"),
    ("post", "/products"),
    ("patch", "/products/{product}"),
    ("post", "/customers"),
    ("patch", "/customers/{customer}"),
    ("put", "/inventory/{product}"),
    ("post", "/inventory/{product}/adjust"),
    ("post", "/orders"),
]
LISTS = ["/categories", "/products", "/customers", "/inventory", "/orders"]


@pytest.fixture
def ids(shop) -> dict[str, int]:
    return {"product": shop.product(stock=1)["id"], "customer": shop.customer()["id"]}


@pytest.mark.parametrize(("method", "path"), WRITES)
@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        ("{not json", "application/json", 400, "malformed_json"),
        ("[1, 2]", "application/json", 400, "malformed_json"),
        ('"text"', "application/json", 400, "malformed_json"),
        ("", "application/json", 400, "malformed_json"),
        ("name=x", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        ('{"name": "x"}', "text/plain", 415, "unsupported_media_type"),
        ("", None, 400, "malformed_json"),
    ],
)
def test_write_endpoints_refuse_bodies_that_are_not_json_objects(
    client, ids, error, method, path, data, content_type, status, code
) -> None:
    url = path.format(**ids)
    kwargs = {"data": data}
    if content_type:
        kwargs["content_type"] = content_type
    response = getattr(client, method)(url, **kwargs)
    assert response.status_code == status, response.get_data(as_text=True)
    assert error(response)["code"] == code
    assert response.mimetype == "application/json"


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("per_page=101", "per_page"),
        ("per_page=0", "per_page"),
        ("per_page=ten", "per_page"),
        ("page=0", "page"),
        ("page=-3", "page"),
        ("sort=colour", "sort"),
        ("sort=--id", "sort"),
    ],
)
def test_list_endpoints_refuse_bad_paging_with_400(client, error, path, query, field) -> None:
    response = client.get(f"{path}?{query}")
    assert response.status_code == 400
    body = error(response)
    assert body["code"] == "invalid_query"
    assert list(body["fields"]) == [field]


@pytest.mark.parametrize("path", LISTS)
def test_list_endpoints_answer_an_empty_envelope(client, path) -> None:
    response = client.get(f"{path}?page=3")
    assert response.status_code == 200
    body = response.get_json()
    assert body["items"] == [] and body["page"] == 3 and body["per_page"] == 20
    assert body["next"] is None
    assert body["prev"] is not None and "page=2" in body["prev"]


def test_unknown_paths_and_wrong_methods_have_json_errors(client, error) -> None:
    missing = client.get("/nowhere")
    assert missing.status_code == 404 and error(missing)["code"] == "not_found"
    wrong = client.delete("/categories")
    assert wrong.status_code == 405 and error(wrong)["code"] == "method_not_allowed"
    assert wrong.headers["Allow"] == "GET, HEAD, OPTIONS, POST"


def test_health_and_readiness(client) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ready", "checks": {"database": "ok"}}


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_bodies = st.dictionaries(
    st.sampled_from(
        ["sku", "name", "category_id", "price", "active", "email", "customer_id", "lines",
         "on_hand", "delta", "phone", "description", "parent_id"]
    ),
    _json_values | st.integers(min_value=-(2**70), max_value=2**70),
    max_size=6,
)  # fmt: skip


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=_bodies, target=st.sampled_from(WRITES))
def test_no_body_ever_causes_a_500(client, ids, body, target) -> None:
    method, path = target
    response = getattr(client, method)(path.format(**ids), json=body)
    assert response.status_code in {200, 201, 404, 409, 422}, response.get_json()
    assert response.is_json
