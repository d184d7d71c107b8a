"""Adapters from other packages' shapes to the dashboard ports, by duck typing.

The proxy imports neither `parity` nor `cdc`; these adapters only rely on the documented
shapes: a parity `StatsStore` (`endpoints()`, `stats_for(endpoint)` returning an object with
`matches`, `mismatches`, `noise`, `errors` and `last_mismatches` - dicts from
`ComparisonResult.to_dict()` plus `at`) and CDC `TableStatus` rows (`table`, `lag_events`,
`lag_s`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from strangler_proxy.dashboard.ports import (
    CdcProvider,
    DiffItem,
    EndpointParity,
    Mismatch,
    ParityProvider,
    TableLag,
)

ABSENT_TEXT = "<absent>"


class _StatsLike(Protocol):
    matches: int
    mismatches: int
    noise: int
    errors: int
    denied: int
    last_mismatches: list[dict[str, Any]]


class _StatsStoreLike(Protocol):
    def endpoints(self) -> list[str]: ...

    def stats_for(self, endpoint: str) -> _StatsLike: ...


def show_value(data: Mapping[str, Any], key: str) -> str:
    """JSON text of a difference side, or `<absent>` when that side has no value."""
    if key not in data:
        return ABSENT_TEXT
    return json.dumps(data[key], ensure_ascii=False, sort_keys=True, default=str)


def mismatch_from_detail(endpoint: str, detail: Mapping[str, Any]) -> Mismatch:
    """Turn one parity result dict (`ComparisonResult.to_dict()` + `at`) into a Mismatch."""
    request = detail.get("request") or {}
    target = str(request.get("path", ""))
    query = request.get("query") or []
    if query:
        target += "?" + "&".join(f"{k}={v}" for k, v in query)
    differences = tuple(
        DiffItem(
            where=str(d.get("path", "")),
            kind=str(d.get("kind", "")),
            control=show_value(d, "control"),
            candidate=show_value(d, "candidate"),
            noise=bool(d.get("noise", False)),
        )
        for d in detail.get("differences") or []
        if isinstance(d, Mapping)
    )
    at = detail.get("at")
    bodies = {side: detail.get(side) for side in ("control", "candidate")}
    return Mismatch(
        endpoint=endpoint,
        request=f"{request.get('method', '')} {target}".strip(),
        at=float(at) if isinstance(at, int | float) else None,
        differences=differences,
        error=detail.get("error"),
        control_body=_body_text(bodies["control"]),
        candidate_body=_body_text(bodies["candidate"]),
    )


def _body_text(side: Any) -> str | None:
    if isinstance(side, Mapping) and isinstance(side.get("body"), str):
        return side["body"]
    return None


class StatsStoreParity(ParityProvider):
    """Reads a parity statistics store (parity.recording.StatsStore or anything shaped so)."""

    def __init__(self, store: _StatsStoreLike) -> None:
        self.store = store

    def endpoint_stats(self) -> list[EndpointParity]:
        out = []
        for endpoint in self.store.endpoints():
            s = self.store.stats_for(endpoint)
            out.append(
                EndpointParity(
                    endpoint,
                    s.matches,
                    s.mismatches,
                    s.noise,
                    s.errors,
                    getattr(s, "denied", 0),
                    getattr(s, "lagged", 0),
                )
            )
        return out

    def recent_mismatches(self, endpoint: str, limit: int = 10) -> list[Mismatch]:
        stats = self.store.stats_for(endpoint)
        return [mismatch_from_detail(endpoint, d) for d in stats.last_mismatches[:limit]]


class StatusCdcProvider(CdcProvider):
    """Wraps a callable returning CDC status rows (e.g. a partial of cdc.status.pipeline_status)."""

    def __init__(self, status: Callable[[], Iterable[Any]]) -> None:
        self.status = status

    def lag(self) -> list[TableLag]:
        rows = []
        for row in self.status():
            lag_s = getattr(row, "lag_s", None)
            if lag_s is None:
                lag_s = getattr(row, "capture_lag_s", None)
            rows.append(
                TableLag(
                    table=str(row.table),
                    lag_events=getattr(row, "lag_events", None),
                    lag_seconds=lag_s,
                    detail=str(getattr(row, "topic", "") or ""),
                )
            )
        return rows
