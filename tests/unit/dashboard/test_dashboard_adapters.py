"""Adapters from the parity statistics store and CDC status rows to the dashboard ports."""

from __future__ import annotations

from cdc.status import TableStatus
from parity.recording import MemoryStatsStore, PairSink
from strangler_proxy.dashboard.adapters import StatsStoreParity, StatusCdcProvider


def _pair(path: str, control: str, candidate: str) -> dict[str, object]:
    headers = {"Content-Type": "application/json"}
    return {
        "method": "GET",
        "path": path,
        "control": {"status": 200, "headers": headers, "body": control},
        "candidate": {"status": 200, "headers": headers, "body": candidate},
    }


def test_parity_stats_and_recent_mismatches_come_from_the_real_stats_store() -> None:
    stats = MemoryStatsStore()
    sink = PairSink(stats)
    sink.record(_pair("/products/1", '{"name": "Mug", "price": 5}', '{"name": "Mug", "price": 5}'))
    sink.record(_pair("/products/2", '{"name": "Cup", "price": 5}', '{"name": "Cup", "price": 6}'))
    provider = StatsStoreParity(stats)

    (entry,) = provider.endpoint_stats()
    assert entry.endpoint == "GET /products/<int:id>"
    assert (entry.matches, entry.mismatches) == (1, 1)
    assert entry.agreement == 0.5

    (mismatch,) = provider.recent_mismatches("GET /products/<int:id>")
    assert mismatch.request == "GET /products/2"
    price = next(d for d in mismatch.differences if d.where == "$.price")
    assert (price.control, price.candidate, price.noise) == ("5", "6", False)
    assert mismatch.at is not None


def test_pairs_both_sides_refused_are_shown_as_denied_not_as_agreement() -> None:
    stats = MemoryStatsStore()
    sink = PairSink(stats)
    refused = _pair("/products/3", '{"message": "no"}', '{"message": "no"}')
    for side in ("control", "candidate"):
        refused[side]["status"] = 401  # type: ignore[index]
    sink.record(refused)
    sink.record(_pair("/products/1", '{"name": "Mug"}', '{"name": "Mug"}'))
    (entry,) = StatsStoreParity(stats).endpoint_stats()
    assert (entry.matches, entry.denied, entry.compared) == (1, 1, 2)
    assert entry.agreement == 1.0  # the refused pair is neither agreement nor regression
    assert entry.to_dict()["denied"] == 1


def test_an_unknown_endpoint_has_no_mismatches() -> None:
    assert StatsStoreParity(MemoryStatsStore()).recent_mismatches("GET /nope") == []


def test_cdc_status_rows_become_table_lags() -> None:
    rows = [
        TableStatus("orders", "shop.public.orders", "g", 10, 0, 0.0, 12, 9, 3, 1.5, 0),
        TableStatus(
            "customers", "shop.public.customers", None, 4, 2, 0.7, 4, None, None, None, None
        ),
    ]
    lags = StatusCdcProvider(lambda: rows).lag()
    assert [(lag.table, lag.lag_events, lag.lag_seconds) for lag in lags] == [
        ("orders", 3, 1.5),
        ("customers", None, 0.7),  # falls back to the capture lag
    ]
    assert lags[0].detail == "shop.public.orders"
