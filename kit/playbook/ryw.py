"""Read-your-writes windows: how long a client's reads of a service follow its last write.

While reads and writes of a service are split (canary/reads: writes in the monolith, reads
partly or wholly in the service; after rolling back `writes`: the same), a client that reads
what it just wrote may reach the side CDC has not updated yet. The proxy pins such a client
(strangler_proxy.policy.RywPins, keyed by `[proxy] client_key`): after its write to any route
of service S, its reads of S's routes go to the side that took the write for `window(S)`
seconds. The kit sets the window per service when it starts the proxy:

- `[proxy] read_your_writes = <seconds>` in the manifest (0 turns pinning off), else
- derived from the CDC lag measured then: FACTOR × the worst table lag of the pipeline that
  feeds the side that does not own the writes, at least FLOOR_S, at most
  `guards.cdc_max_lag_seconds` (the lag above which the guards refuse route flips anyway).

Limits (docs/playbook.md): the window is a time bound, not a replication position; a client
whose write takes longer than the window to replicate can still read a stale row; the
window is fixed when the proxy starts (restart it to re-derive); a client is what the client
key says it is (without a key: its address, so clients behind one NAT share pins).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from kit.manifest import Manifest
from kit.playbook.state import StateStore

FLOOR_S = 1.0  # below this, scheduling noise alone exceeds the window
FACTOR = 3.0  # lag varies; three times the measured value covers its usual swings


def window_from_lag(lag_seconds: Iterable[float | None], cap: float) -> float:
    """FACTOR × the worst measured lag, within [FLOOR_S, max(cap, FLOOR_S)]."""
    worst = max((x for x in lag_seconds if x is not None), default=0.0)
    return round(min(max(cap, FLOOR_S), max(FLOOR_S, FACTOR * worst)), 3)


def ryw_windows(
    m: Manifest, state: StateStore, lag: Callable[[str, str], list[Any]]
) -> dict[str, float]:
    """The window of every service (see the module docstring)."""
    if m.proxy.read_your_writes is not None:
        return {name: m.proxy.read_your_writes for name in m.services}
    out: dict[str, float] = {}
    for name in m.services:
        st = state.get(name)
        direction = "reverse" if st.write_owner == "service" else "forward"
        try:
            seconds = [x.seconds for x in lag(name, direction)] if st.reached("capture") else []
        except Exception:  # noqa: BLE001 - an unmeasurable lag gets the floor, not a crash
            seconds = []
        out[name] = window_from_lag(seconds, m.guards.cdc_max_lag_seconds)
    return out
