"""Judging a canary's observed split: did the stage's share of clients really reach the service?

A canary sends whole clients to one side, bucketed by their sticky key. When every request
carries the same key (all clients behind one load balancer or NAT and no client key set, or
a configured key most requests lack) the canary sends 0 % or 100 % whatever its stage says.
`judge_split` is the one policy for that, used by the proxy (`/admin/stats`, dashboard) and by
`kit status`; it reads only counts, so it is pure and cheap.
"""

from __future__ import annotations

import math

#: Below this many requests a split says too little to judge.
MIN_REQUESTS = 50
#: Distinct key buckets the proxy remembers per split; a full set means "at least this many".
CANARY_KEYS = 64
#: Fewer distinct sticky keys than this cannot approximate a share.
MIN_KEYS = 10


def _pct(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def judge_split(
    share: float,
    to_service: int,
    to_monolith: int,
    distinct_keys: int,
    by_address: int = 0,
    key: str | None = None,
) -> str | None:
    """A warning when the split a canary at `share` % made is not the split it promises.

    `distinct_keys`: distinct sticky keys seen (a lower bound is fine); `by_address`: requests
    keyed by the client address; `key`: the configured sticky key's name (None: address only).
    None when the split looks sound, the stage sends everything to one side (0 or 100 %), or
    fewer than `MIN_REQUESTS` requests were seen.
    """
    requests = max(0, to_service) + max(0, to_monolith)
    if requests < MIN_REQUESTS or not 0 < share < 100:
        return None
    observed = 100 * max(0, to_service) / requests
    keys = max(0, distinct_keys)
    lacked = min(max(0, by_address), requests)
    stage = f"{_pct(observed)} % to the service at a {_pct(share)} % stage"
    if keys < MIN_KEYS:
        clients = "1 client key" if keys == 1 else f"{keys} client keys"
        why = ""
        if key is None:
            why = (
                "; no client key is configured, so clients are told apart by address alone"
                " (all one behind a load balancer or NAT): set [proxy] client_key"
            )
        elif 2 * lacked > requests:
            why = f"; {lacked} of them lacked the {key} and were keyed by client address"
        return f"all {requests} requests came from {clients}: the canary cannot split them ({stage}){why}"
    if key is not None and 2 * lacked > requests:
        return (
            f"{lacked} of {requests} canary requests lacked the {key} and were keyed by client"
            f" address, so clients behind one address share a side ({stage})"
        )
    p = share / 100
    one_sided = (observed == 0 and keys * p >= 3) or (observed == 100 and keys * (1 - p) >= 3)
    spread = 300 * math.sqrt(p * (1 - p) / keys) + 5  # 3 standard deviations + 5 points
    if one_sided or abs(observed - share) > spread:
        return (
            f"{stage} over {requests} requests from {keys}"
            f"{'+' if keys >= CANARY_KEYS else ''} client keys: a few clients carry most of the traffic"
        )
    return None


def split_note(route: str, share: float, warning: str) -> str:
    """A warning of `judge_split` about `route`'s canary, as `kit status` and the dashboard
    show it."""
    return f"canary {route} (canary:{share:g}) as observed: {warning}"
