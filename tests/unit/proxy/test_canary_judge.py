"""Judging a canary's observed split, and the split figures the proxy's Stats keep."""

from __future__ import annotations

import pickle

from hypothesis import given
from hypothesis import strategies as st

from strangler_proxy.canary import CANARY_KEYS, MIN_KEYS, MIN_REQUESTS, judge_split
from strangler_proxy.policy import Decision, decide, sticky_name
from strangler_proxy.routes import MONOLITH, Route, RouteTable
from strangler_proxy.stats import Stats

counts = st.integers(min_value=-5, max_value=10**9)
shares = st.floats(min_value=-10, max_value=200, allow_nan=False)
keys = st.one_of(st.none(), st.text(max_size=20))


@given(shares, counts, counts, counts, counts, keys)
def test_any_counts_give_a_warning_text_or_none_and_never_raise(
    share: float, to_service: int, to_monolith: int, distinct: int, by_address: int, key: str | None
) -> None:
    verdict = judge_split(share, to_service, to_monolith, distinct, by_address, key)
    assert verdict is None or (isinstance(verdict, str) and verdict)


@given(
    share=st.floats(min_value=0.1, max_value=99.9),
    to_service=st.integers(min_value=0, max_value=10**6),
    to_monolith=st.integers(min_value=0, max_value=10**6),
    distinct=st.integers(min_value=0, max_value=MIN_KEYS - 1),
    key=keys,
)
def test_fewer_keys_than_the_threshold_past_the_minimum_sample_always_warn(
    share: float, to_service: int, to_monolith: int, distinct: int, key: str | None
) -> None:
    requests = to_service + to_monolith
    verdict = judge_split(share, to_service, to_monolith, distinct, 0, key)
    if requests >= MIN_REQUESTS:
        assert verdict is not None and "the canary cannot split them" in verdict
        assert f"{requests} requests" in verdict
    else:
        assert verdict is None


@given(
    share=st.integers(min_value=5, max_value=95),
    requests=st.integers(min_value=100, max_value=10**6),
    drift=st.floats(min_value=-2, max_value=2),
    distinct=st.integers(min_value=CANARY_KEYS, max_value=10**4),
    key=keys,
)
def test_a_well_spread_canary_near_its_share_never_warns(
    share: int, requests: int, drift: float, distinct: int, key: str | None
) -> None:
    to_service = max(1, min(requests - 1, round(requests * (share + drift) / 100)))
    assert judge_split(share, to_service, requests - to_service, distinct, 0, key) is None


def test_one_client_key_is_named_with_the_requests_it_carried() -> None:
    verdict = judge_split(10, 812, 0, 1)
    assert verdict is not None
    assert verdict.startswith("all 812 requests came from 1 client key: the canary cannot split")
    assert "100 % to the service at a 10 % stage" in verdict
    assert "set [proxy] client_key" in verdict


def test_requests_that_mostly_lack_the_configured_key_name_it() -> None:
    verdict = judge_split(10, 10, 90, 40, by_address=70, key="header X-Client-Id")
    assert (
        verdict is not None and "70 of 100 canary requests lacked the header X-Client-Id" in verdict
    )
    few = judge_split(10, 0, 100, 1, by_address=100, key="cookie sid")
    assert few is not None and "100 of them lacked the cookie sid" in few


def test_a_share_far_outside_what_the_keys_allow_warns() -> None:
    assert judge_split(10, 0, 1000, 64) is not None  # 0 % where ~6 of 64 keys should hit
    assert judge_split(10, 700, 300, 64) is not None  # 70 % at a 10 % stage
    assert judge_split(0.1, 0, 1000, 64) is None  # 0 % is what 64 keys give at 0.1 %


def test_stages_that_send_everything_to_one_side_and_small_samples_are_not_judged() -> None:
    assert judge_split(0, 0, 500, 1) is None
    assert judge_split(100, 500, 0, 1) is None
    assert judge_split(10, 49, 0, 1) is None


def _observe(stats: Stats, route: str, threshold: int, buckets: range, to_service: bool) -> None:
    split = stats.canary(route, threshold, "header X-Client-Id")
    for bucket in buckets:
        split.observe(to_service, bucket, by_address=bucket % 2 == 0)


def test_canary_splits_survive_export_and_merge_with_the_key_set_bounded() -> None:
    worker_a, worker_b, supervisor = Stats(), Stats(), Stats()
    _observe(worker_a, "/p/<int:id>", 1000, range(40), to_service=True)
    _observe(worker_b, "/p/<int:id>", 1000, range(30, 100), to_service=False)
    _observe(worker_b, "/p/<int:id>", 5000, range(3), to_service=False)
    for worker in (worker_a, worker_b):
        supervisor.merge(pickle.loads(pickle.dumps(worker.export())))

    rows = {(r["route"], r["share"]): r for r in supervisor.snapshot()["canaries"]}
    ten = rows[("/p/<int:id>", 10)]
    assert (ten["to_service"], ten["to_monolith"], ten["requests"]) == (40, 70, 110)
    assert ten["by_address"] == 20 + 35
    assert ten["distinct_keys"] == CANARY_KEYS and ten["distinct_keys_capped"]
    assert ten["client_key"] == "header X-Client-Id"
    assert ten["observed_share"] == round(100 * 40 / 110, 2)
    fifty = rows[("/p/<int:id>", 50)]
    assert (fifty["requests"], fifty["distinct_keys"], fifty["distinct_keys_capped"]) == (
        3,
        3,
        False,
    )


def test_canary_splits_appear_as_prometheus_metrics() -> None:
    stats = Stats()
    _observe(stats, "/p", 3000, range(5), to_service=True)
    text = stats.prometheus()
    assert 'strangler_proxy_canary_requests_total{route="/p",share="30",side="service"} 5' in text
    assert 'strangler_proxy_canary_requests_total{route="/p",share="30",side="monolith"} 0' in text
    assert 'strangler_proxy_canary_by_address_total{route="/p",share="30"} 3' in text
    assert 'strangler_proxy_canary_distinct_keys{route="/p",share="30"} 5' in text


def _route(mode: str, **extra: object) -> RouteTable:
    return RouteTable(
        [Route.from_dict({"method": "GET", "path": "/p", "service": "cat", "mode": mode, **extra})],
        1,
    )


def _no_headers(_: bytes) -> bytes | None:
    return None


def test_a_canary_decision_carries_its_bucket_and_whether_the_address_keyed_it() -> None:
    table = _route("canary:30", sticky_header="X-Client-Id")
    match = table.match("GET", "/p")
    by_address = decide(match, "GET", _no_headers, "10.0.0.1")
    assert by_address.bucket >= 0 and by_address.by_address
    keyed = decide(match, "GET", {b"x-client-id": b"u1"}.get, "10.0.0.1")
    assert keyed.bucket >= 0 and not keyed.by_address
    assert sticky_name(match.route, None) == "header X-Client-Id"  # type: ignore[arg-type]
    other = decide(_route("extracted").match("GET", "/p"), "GET", _no_headers, "10.0.0.1")
    assert other.bucket == -1 and other == Decision("cat", fallback=True)
    assert MONOLITH != other.target
