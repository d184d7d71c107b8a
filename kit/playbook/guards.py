"""Guard rails on route changes, shared by the playbook, `kit route set`, the admin API and
the dashboard (plugged into strangler_proxy.service.RouteService as a Guard).

Rules (each refusal names the reason and the way forward; `force` lets the change through
and writes it to the playbook audit log):

- order: an endpoint goes to `shadow` only once its service reached the `shadow` step,
  `canary` at `canary`, `extracted` at `reads` (read endpoints) or `writes` (write endpoints);
- ownership: a write endpoint is served only by the side that owns its tables' writes
  (kit.playbook.ownership; the `writes` step and its rollback are the one way to move it);
- parity: no read endpoint goes to `canary`/`extracted` while its parity mismatch rate is over
  `guards.parity_max_mismatch_rate` over at least `guards.parity_min_samples` samples;
- lag: no route flip while the CDC pipeline feeding the side that will answer lags more
  than `guards.cdc_max_lag_seconds` (forward before write cut-over, reverse after it; for a
  read endpoint going to a service with replicas, the replica feed too).

Going back to the monolith is refused for write endpoints once the service owns the writes,
and for reads by the lag rule after write cut-over (the monolith would answer from stale
rows); `kit route reset` is never guarded (the emergency lever; see docs/playbook.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kit.manifest import Endpoint, Manifest
from kit.playbook.ownership import write_route_refusal
from kit.playbook.state import ServiceState, StateStore

LagFn = Callable[[str, str], "list[Any] | None"]  # (service, direction) -> [Lag] | None


@dataclass(frozen=True)
class RouteIntent:
    """What a route change means for the playbook (independent of the proxy's classes)."""

    endpoint: Endpoint
    mode: str  # monolith | shadow | canary | extracted
    old_mode: str
    service: str
    mode_text: str = ""  # full modes ("canary:50"): raising a canary share is a flip too
    old_text: str = ""


MODE_STEP = {"shadow": "shadow", "canary": "canary"}


def find_endpoint(m: Manifest, method: str, path: str) -> Endpoint | None:
    for e in m.endpoints:
        if e.method == method and e.path == path:
            return e
    return None


def parity_rate(stats: Any) -> tuple[int, float]:
    """(samples, mismatch rate) of an EndpointStats; errors count as compared but not matched;
    pairs both sides refused (401/403, `denied`) are no samples: they compared nothing; nor are
    pairs that differed and agreed on a re-check (`lagged`: CDC lag, neither clean nor not)."""
    compared = (
        int(stats.requests) - int(getattr(stats, "denied", 0)) - int(getattr(stats, "lagged", 0))
    )
    if compared <= 0:
        return 0, 0.0
    return compared, (int(stats.mismatches) + int(stats.errors)) / compared


class GuardContext:
    """Reads the playbook state, parity statistics and CDC lag for guard decisions."""

    def __init__(
        self,
        m: Manifest,
        state: StateStore,
        stats: Any = None,
        lag: LagFn | None = None,
    ) -> None:
        self.m = m
        self.state = state
        self.stats = stats
        self.lag = lag

    def refusals(self, intent: RouteIntent, state: ServiceState | None = None) -> list[str]:
        """Every reason to refuse this change (empty: allowed). `state` overrides the stored
        service state (a step checks its own route changes as if it were already running)."""
        e = intent.endpoint
        svc = e.service
        st = state or self.state.get(svc)
        g = self.m.guards
        out: list[str] = []
        if intent.mode == "held":
            return [
                f"{e.label} -> held: held is the write cut-over's own mode (`kit step {svc} "
                f"writes` and `kit rollback {svc}` hold write requests at the proxy while CDC "
                "brings the new owner up to date, then release them in the next route version); "
                "a route left held answers 503 after its hold limit (or force)"
            ]
        to_service = intent.mode != "monolith"
        if to_service:
            need = MODE_STEP.get(intent.mode)
            if intent.mode == "extracted":
                need = "reads" if e.is_read else "writes"
            if need is not None and not st.reached(need):
                at = f"at {st.step!r} ({st.status})" if st.step else "not started"
                out.append(
                    f"step out of order: {e.label} -> {intent.mode} needs service {svc!r} at "
                    f"step {need!r}, but it is {at}; way forward: `kit advance {svc}` until "
                    f"{need!r} (or force)"
                )
            if e.is_read and intent.mode in ("canary", "extracted") and self.stats is not None:
                stats = self.stats.stats_for(e.label)
                samples, rate = parity_rate(stats)
                if samples >= g.parity_min_samples and rate > g.parity_max_mismatch_rate:
                    out.append(
                        f"parity: {e.label} mismatches {rate:.1%} of {samples} shadow samples "
                        f"(threshold {g.parity_max_mismatch_rate:.1%}); way forward: fix the "
                        "service (see `kit parity report`), reset the statistics by re-running "
                        f"`kit step {svc} shadow`, or force"
                    )
        if not e.is_read:
            refusal = write_route_refusal(
                svc,
                e.label,
                intent.mode,
                st.write_owner,
                st.step,
                ", ".join(self.m.service(svc).tables),
            )
            if refusal:
                out.append(refusal)
        if intent.mode_text != intent.old_text and self.lag is not None:
            directions = []
            if to_service and st.write_owner == "monolith":
                directions.append("forward")
            elif not to_service and st.write_owner == "service":
                directions.append("reverse")
            if to_service and e.is_read and self.m.service(svc).replicas and st.reached("capture"):
                directions.append("replica")  # its reads join the replicas, fed whatever owns
            for direction in directions:
                try:
                    lags = self.lag(svc, direction) or []
                except Exception as exc:  # noqa: BLE001 - unknown lag must not pass silently
                    lags = []
                    out.append(
                        f"cdc lag of {svc} ({direction}) cannot be measured: {exc}; way "
                        "forward: check `kit status` (or force)"
                    )
                worst = [
                    x
                    for x in lags
                    if (x.events or 0) > 0
                    and (x.seconds is None or x.seconds > g.cdc_max_lag_seconds)
                ]
                if worst:
                    detail = ", ".join(
                        f"{x.table} {x.events} event(s)"
                        + (f"/{x.seconds:.1f}s" if x.seconds is not None else "")
                        for x in worst
                    )
                    out.append(
                        f"cdc lag: {direction} CDC of {svc} is behind ({detail}; threshold "
                        f"{g.cdc_max_lag_seconds:.1f}s); way forward: wait for the workers to "
                        "catch up (`kit status`) or force"
                    )
        return out

    def decide(self, intent: RouteIntent, *, force: bool, actor: str, reason: str) -> str | None:
        """The guard verdict: None (allowed) or the refusal text. Forced overrides are audited."""
        refusals = self.refusals(intent)
        if not refusals:
            return None
        message = "; ".join(refusals)
        detail = {
            "endpoint": intent.endpoint.label,
            "mode": intent.mode,
            "old_mode": intent.old_mode,
            "reason": reason,
            "refusals": refusals,
        }
        kind, verb = ("forced", "forced past") if force else ("refused", "refused")
        self.state.audit(
            kind,
            f"route {intent.endpoint.label} -> {intent.mode} {verb}: {message}",
            actor=actor,
            service=intent.endpoint.service,
            detail=detail,
        )
        return None if force else message


def route_guard(ctx: GuardContext) -> Callable[[Any], str | None]:
    """A strangler_proxy Guard: `(RouteChange) -> refusal | None`."""

    def guard(change: Any) -> str | None:
        e = find_endpoint(ctx.m, change.new.method, change.new.path)
        if e is None:
            return None
        if change.old.mode == change.new.mode and change.old.service == change.new.service:
            return None
        intent = RouteIntent(
            e,
            change.new.mode.kind,
            change.old.mode.kind,
            change.new.service,
            str(change.new.mode),
            str(change.old.mode),
        )
        return ctx.decide(intent, force=change.force, actor=change.actor, reason=change.reason)

    return guard
