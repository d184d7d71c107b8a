"""`kit status` in one structure: every service's step, every endpoint's mode, CDC lag, parity.

Each part is gathered independently; a part that cannot be read (a database not created yet,
no route store) is reported as a note instead of failing the whole view.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kit.manifest import Manifest
from kit.playbook.guards import parity_rate
from kit.playbook.state import STEPS, StateStore
from strangler_proxy.canary import split_note


class StatusSource(Protocol):
    """What the status view reads (the Playbook is one; no import of it, so no cycle)."""

    m: Manifest
    state: StateStore

    def explain(self, service: str) -> str: ...
    def route_modes(self) -> dict[tuple[str, str], str]: ...
    def stats(self) -> Any: ...
    def proxy_stats(self) -> Mapping[str, Any]: ...
    def lag(self, service: str, direction: str) -> list[Any]: ...


@dataclass(frozen=True)
class ServiceStatus:
    service: str
    step: str | None
    status: str
    position: str  # "3/8"
    write_owner: str
    explanation: str


@dataclass(frozen=True)
class EndpointStatus:
    service: str
    method: str
    path: str
    kind: str
    mode: str | None
    samples: int
    mismatch_rate: float | None
    lagged: int = 0  # shadow pairs that differed, then agreed on a re-check (CDC lag)


@dataclass(frozen=True)
class TableLag:
    service: str
    direction: str
    table: str
    events: int | None
    seconds: float | None
    dead_letters: int | None
    snapshot: str | None = None
    slot_lag_bytes: int | None = None  # PostgreSQL source: WAL its replication slot holds
    group_lag: int | None = None  # Kafka: published − offsets the sink group committed


@dataclass
class Status:
    services: list[ServiceStatus] = field(default_factory=list)
    endpoints: list[EndpointStatus] = field(default_factory=list)
    lag: list[TableLag] = field(default_factory=list)
    workers: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "services": [s.__dict__ for s in self.services],
            "endpoints": [e.__dict__ for e in self.endpoints],
            "lag": [x.__dict__ for x in self.lag],
            "workers": self.workers,
            "notes": self.notes,
        }


def canary_notes(
    client_key: Mapping[str, str] | None, modes: Mapping[tuple[str, str], str]
) -> list[str]:
    """A canary splits clients by their key; without `[proxy] client_key` the key is the
    client's address, and clients behind one address (a load balancer, a NAT, a test
    client) all land on one side: 0 % or 100 % to the service whatever the stage says."""
    canaries = sorted(f"{m} {p} ({mode})" for (m, p), mode in modes.items() if "canary" in mode)
    if not canaries or client_key is not None:
        return []
    return [
        f"canary without a client key: {', '.join(canaries)} bucket clients by their address, "
        "so clients behind one address (a load balancer, a NAT) all land on one side and the "
        "stage's share is not what the service gets; set [proxy] client_key in the manifest, "
        'e.g. client_key = { hash_header = "Authorization" } (or { header = ... } / '
        "{ cookie = ... })"
    ]


def held_notes(modes: Mapping[tuple[str, str], str]) -> list[str]:
    """Routes left `held` (a write cut-over the kit did not finish): their requests wait at
    the proxy and get 503 after the hold limit until a route version releases them."""
    held = sorted(f"{m} {p}" for (m, p), mode in modes.items() if mode == "held")
    if not held:
        return []
    return [
        f"write endpoints held for a write cut-over: {', '.join(held)}; if no `kit step` or "
        "`kit rollback` is running, the cut-over was interrupted: `kit advance <service>` "
        "finishes it, `kit rollback <service>` undoes it (either releases the held requests)"
    ]


def observed_canary_notes(
    splits: Sequence[Mapping[str, Any]], modes: Mapping[tuple[str, str], str]
) -> list[str]:
    """What the running proxy saw each canary at its current stage actually split: a note per
    split its judge (`strangler_proxy.canary.judge_split`) warned about in /admin/stats."""
    current = {(p, str(mode)) for (_, p), mode in modes.items() if mode.startswith("canary:")}
    return [
        split_note(str(row["route"]), float(row["share"]), str(row["warning"]))
        for row in splits
        if row.get("warning") and (row.get("route"), f"canary:{float(row['share']):g}") in current
    ]


def collect_status(pb: StatusSource) -> Status:
    out = Status()
    m = pb.m
    for name in m.services:
        st = pb.state.get(name)
        pos = f"{st.index + 1}/{len(STEPS)}" if st.step else f"0/{len(STEPS)}"
        status = "interrupted" if st.interrupted else st.status
        out.services.append(
            ServiceStatus(name, st.step, status, pos, st.write_owner, pb.explain(name))
        )
    try:
        modes = pb.route_modes()
    except Exception as exc:  # noqa: BLE001
        modes = {}
        out.notes.append(f"route store unreadable: {exc}")
    out.notes.extend(canary_notes(m.proxy.client_key, modes))
    out.notes.extend(held_notes(modes))
    if any(mode.startswith("canary:") for mode in modes.values()):
        try:
            splits = pb.proxy_stats().get("canaries", [])
        except Exception as exc:  # noqa: BLE001
            out.notes.append(f"observed canary split unknown (proxy admin API unreadable: {exc})")
        else:
            out.notes.extend(observed_canary_notes(splits, modes))
    try:
        stats = pb.stats()
    except Exception as exc:  # noqa: BLE001
        stats = None
        out.notes.append(f"parity statistics unreadable: {exc}")
    for e in m.endpoints:
        samples, rate, lagged = 0, None, 0
        if stats is not None:
            try:
                endpoint_stats = stats.stats_for(e.label)
                samples, r = parity_rate(endpoint_stats)
                rate = r if samples else None
                lagged = int(getattr(endpoint_stats, "lagged", 0))
            except Exception as exc:  # noqa: BLE001
                out.notes.append(f"parity of {e.label}: {exc}")
        out.endpoints.append(
            EndpointStatus(
                e.service,
                e.method,
                e.path,
                e.kind,
                modes.get((e.method, e.path)),
                samples,
                rate,
                lagged,
            )
        )
    for name in m.services:
        st = pb.state.get(name)
        directions = []
        if st.reached("capture") and st.write_owner == "monolith":
            directions.append("forward")
        if st.write_owner == "service" or (st.step in ("writes", "retire")):
            directions.append("reverse")
        if st.reached("capture") and m.services[name].replicas:
            directions.append("replica")  # fed through the monolith whatever owns the writes
        for direction in directions:
            try:
                for x in pb.lag(name, direction):
                    out.lag.append(
                        TableLag(
                            name,
                            direction,
                            x.table,
                            x.events,
                            x.seconds,
                            x.dead_letters,
                            x.snapshot,
                            x.slot_lag_bytes,
                            x.group_lag,
                        )
                    )
            except Exception as exc:  # noqa: BLE001
                out.notes.append(f"{direction} CDC lag of {name}: {exc}")
    out.workers = pb.state.workers()
    return out
