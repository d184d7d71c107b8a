"""The dashboard's service layer: gather what the page shows, and change routes.

Views stay thin: they parse the request, call these functions and render. Route changes go
through the proxy's `RouteService.set_route` - the same validation and guard rails as the
CLI and the admin API - with actor `dashboard`.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from strangler_proxy.dashboard.diffview import pair_view, pretty
from strangler_proxy.dashboard.ports import (
    CdcProvider,
    EndpointParity,
    Mismatch,
    ParityProvider,
    PlaybookProvider,
)
from strangler_proxy.dashboard.sessions import LoginThrottle, SessionManager
from strangler_proxy.dashboard.telemetry import LagHistory, RateTracker
from strangler_proxy.routes import MODE_CANARY, MONOLITH, Route, RouteError
from strangler_proxy.service import ChangeRefused, ChangeResult, UnknownServiceError
from strangler_proxy.shadow import ShadowPair
from strangler_proxy.store import AuditEntry, UnknownRouteError

if TYPE_CHECKING:
    from strangler_proxy.bootstrap import ProxyRuntime

log = logging.getLogger("strangler_proxy.dashboard")

PREFIX = "/dashboard"
ACTOR = "dashboard"
MODES = ("monolith", "shadow", "canary", "extracted")
MAX_REASON = 500
AUDIT_ROWS = 30
SHADOW_ROWS = 20


@dataclass
class Dashboard:
    """Everything the dashboard keeps: providers, sessions, and its own time series."""

    parity: ParityProvider = field(default_factory=ParityProvider)
    cdc: CdcProvider = field(default_factory=CdcProvider)
    playbook: PlaybookProvider = field(default_factory=PlaybookProvider)
    sessions: SessionManager = field(default_factory=SessionManager)
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    rates: RateTracker = field(default_factory=RateTracker)
    lag: LagHistory = field(default_factory=LagHistory)
    sample_interval: float = 1.0
    poll_ms: int = 1000
    clock: Callable[[], float] = time.time
    _same_body: OrderedDict[tuple[str, float], bool] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        if not 0 < self.sample_interval <= 60:
            raise ValueError("sample_interval must be in (0, 60] seconds")
        if not 100 <= self.poll_ms <= 60000:
            raise ValueError("poll_ms must be in 100..60000")

    # -- sampling (called by the sampler task) -------------------------------------------
    def sample_stats(self, runtime: ProxyRuntime) -> None:
        """Take a rate sample from the proxy's counters (call on the event loop thread)."""
        series = runtime.core.stats.snapshot()["series"]
        self.rates.sample(series, time.monotonic())  # type: ignore[arg-type]

    def sample_cdc(self) -> None:
        """Ask the CDC provider for lag now (blocking: call from a worker thread)."""
        self.lag.sample(self.cdc.lag(), self.clock())

    def same_body(self, pair: ShadowPair) -> bool:
        """Whether both sides answered the same status and (pretty-printed) body; cached."""
        key = (pair.request_id, pair.at)
        cached = self._same_body.get(key)
        if cached is None:
            resp = pair.service_response
            cached = (
                resp is not None
                and resp.status == pair.monolith.status
                and pretty(_text(pair.monolith.body)) == pretty(_text(resp.body))
            )
            self._same_body[key] = cached
            while len(self._same_body) > 1000:
                self._same_body.popitem(last=False)
        return cached


def _text(body: bytes) -> str:
    return body.decode("utf-8", errors="replace")


def endpoint_key(method: str, path: str) -> str:
    return f"{method} {path}"


def mismatch_url(endpoint: str) -> str:
    return f"{PREFIX}/mismatches?endpoint={quote(endpoint, safe='')}"


def shadow_url(request_id: str) -> str:
    return f"{PREFIX}/shadow/{quote(request_id, safe='')}"


def _mode_parts(route: Route) -> tuple[str, str | None]:
    if route.mode.kind == MODE_CANARY:
        return MODE_CANARY, f"{route.mode.percent.normalize():f}"
    return route.mode.kind, None


def _route_row(
    route: Route, rates: dict[str, dict[str, Any]], parity: dict[str, EndpointParity]
) -> dict[str, Any]:
    kind, percent = _mode_parts(route)
    key = endpoint_key(route.method, route.path)
    traffic = rates.get(route.path) or {
        "requests": 0,
        "errors": 0,
        "req_s": None,
        "err_s": None,
        "targets": {},
    }
    p = parity.get(key)
    return {
        "key": key,
        "method": route.method,
        "path": route.path,
        "service": route.service,
        "mode": str(route.mode),
        "mode_kind": kind,
        "percent": percent,
        "fallback": route.fallback,
        "shadow_writes": route.shadow_writes,
        "sticky": route.sticky_header or route.sticky_cookie,
        "traffic": traffic,
        "parity": p.to_dict() if p else None,
        "mismatch_url": mismatch_url(key),
    }


def _audit_row(entry: AuditEntry) -> dict[str, Any]:
    old, new = entry.old or {}, entry.new or {}
    return {
        "id": entry.id,
        "at": entry.at.timestamp(),
        "version": entry.version,
        "actor": entry.actor,
        "endpoint": endpoint_key(entry.method, entry.path),
        "old_mode": old.get("mode"),
        "new_mode": new.get("mode"),
        "old_service": old.get("service"),
        "new_service": new.get("service"),
        "reason": entry.reason,
    }


def _guarded(problems: list[str], what: str, call: Callable[[], Any], default: Any) -> Any:
    """Run a provider call; a failing provider becomes a visible problem, not a broken page."""
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - a provider must never take the page down
        log.warning("dashboard: %s failed", what, exc_info=True)
        problems.append(f"{what} failed: {exc.__class__.__name__}: {exc}")
        return default


def collect_blocking(runtime: ProxyRuntime, dashboard: Dashboard) -> dict[str, Any]:
    """The parts of the state that block (store, providers): run in a worker thread."""
    problems: list[str] = []
    version, routes = runtime.store.load()
    history = runtime.store.history(AUDIT_ROWS)
    parity = _guarded(problems, "parity provider", dashboard.parity.endpoint_stats, [])
    steps = _guarded(problems, "playbook provider", dashboard.playbook.steps, {})
    return {
        "version": version,
        "routes": routes,
        "history": history,
        "parity": parity,
        "steps": steps,
        "problems": problems,
    }


def build_state(runtime: ProxyRuntime, dashboard: Dashboard, blocking: dict[str, Any]) -> dict:
    """Assemble the JSON state (on the event loop thread: reads the proxy's live objects)."""
    rates = dashboard.rates.rates()
    parity_list: list[EndpointParity] = list(blocking["parity"])
    parity = {p.endpoint: p for p in parity_list}
    routes: list[Route] = sorted(blocking["routes"], key=lambda r: (r.path, r.method))
    rows = [_route_row(r, rates, parity) for r in routes]
    # Traffic is counted per path pattern: the first row of a path spans the others.
    for index, row in enumerate(rows):
        first = index == 0 or rows[index - 1]["path"] != row["path"]
        row["path_rows"] = sum(1 for r in rows if r["path"] == row["path"]) if first else 0
    core = runtime.core
    canaries = {(r.path, r.mode.threshold) for r in routes if r.mode.kind == MODE_CANARY}
    services = []
    for name, url in sorted(runtime.config.upstreams.items()):
        step = blocking["steps"].get(name)
        breaker = core.breakers.get(name)
        services.append(
            {
                "name": name,
                "url": url,
                "routes": sum(1 for r in routes if r.service == name),
                "step": step.to_dict() if step is not None else None,
                "breaker": breaker.state if breaker is not None else None,
            }
        )
    pairs = runtime.ring.recent(SHADOW_ROWS)
    shadow = [
        {
            "request_id": p.request_id,
            "at": p.at,
            "route": p.route,
            "service": p.service,
            "request": f"{p.request.method} {p.request.path}",
            "monolith_status": p.monolith.status,
            "service_status": p.service_response.status if p.service_response else None,
            "service_error": p.service_error,
            "same": dashboard.same_body(p),
            "url": shadow_url(p.request_id),
        }
        for p in pairs
    ]
    return {
        "generated_at": dashboard.clock(),
        "poll_ms": dashboard.poll_ms,
        "version": blocking["version"],
        "active_version": core.table.version,
        "routes": rows,
        "services": services,
        "parity": [
            {**p.to_dict(), "url": mismatch_url(p.endpoint)}
            for p in sorted(parity_list, key=lambda p: p.endpoint)
        ],
        "cdc": dashboard.lag.snapshot(),
        "audit": [_audit_row(e) for e in blocking["history"]],
        "shadow": {"total": runtime.ring.total, "pairs": shadow},
        "counters": dict(core.stats.counters),
        "problems": blocking["problems"] + core.stats.canary_notes(canaries),
        "modes": list(MODES),
        "extracted_services": sorted(n for n in runtime.config.upstreams if n != MONOLITH),
    }


# -- route changes ---------------------------------------------------------------------


class ChangeRejected(Exception):
    """A change the dashboard could not make: HTTP status, error code and reason."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ChangeRequest:
    """A parsed change form: which endpoint, the target mode text, and the options."""

    method: str
    path: str
    mode: str
    service: str | None
    reason: str
    force: bool


_TRUE = {"1", "true", "on", "yes"}


def parse_change(data: dict[str, Any]) -> ChangeRequest:
    """Validate the form/JSON fields the page sends; raise ChangeRejected(422) naming the field."""
    endpoint = data.get("endpoint")
    if not isinstance(endpoint, str) or " " not in endpoint.strip():
        raise ChangeRejected(422, "validation_error", "endpoint is required (e.g. 'GET /products')")
    method, _, path = endpoint.strip().partition(" ")
    mode = data.get("mode")
    if not isinstance(mode, str) or mode not in MODES:
        raise ChangeRejected(
            422, "validation_error", f"mode must be one of {', '.join(MODES)}, got {mode!r}"
        )
    if mode == MODE_CANARY:
        percent = data.get("percent")
        text = str(percent).strip() if percent is not None else ""
        if not text:
            raise ChangeRejected(422, "validation_error", "canary needs a percentage (0-100)")
        mode = f"canary:{text}"
    service = data.get("service")
    if service is not None and not isinstance(service, str):
        raise ChangeRejected(422, "validation_error", "service must be text")
    reason = data.get("reason") or ""
    if not isinstance(reason, str):
        raise ChangeRejected(422, "validation_error", "reason must be text")
    if len(reason) > MAX_REASON:
        raise ChangeRejected(422, "validation_error", f"reason is longer than {MAX_REASON} chars")
    force = data.get("force", False)
    if isinstance(force, str):
        force = force.strip().lower() in _TRUE
    if not isinstance(force, bool):
        raise ChangeRejected(422, "validation_error", "force must be a boolean")
    return ChangeRequest(
        method.strip().upper(), path.strip(), mode, service or None, reason.strip(), force
    )


def apply_change(runtime: ProxyRuntime, change: ChangeRequest) -> ChangeResult:
    """Blocking: the proxy's own service function, guards and all; errors become ChangeRejected."""
    try:
        return runtime.route_service.set_route(
            change.method,
            change.path,
            change.mode,
            service=change.service,
            reason=change.reason,
            actor=ACTOR,
            force=change.force,
        )
    except UnknownRouteError as exc:
        raise ChangeRejected(404, "unknown_route", str(exc)) from exc
    except UnknownServiceError as exc:
        raise ChangeRejected(422, "unknown_service", str(exc)) from exc
    except ChangeRefused as exc:
        raise ChangeRejected(409, exc.code, str(exc)) from exc
    except RouteError as exc:
        raise ChangeRejected(422, "invalid_route", str(exc)) from exc


def describe_result(result: ChangeResult) -> str:
    """A sentence for the page: what changed to what."""
    parts = [
        f"{c.new.method} {c.new.path}: {c.old.mode} → {c.new.mode}"
        + (f" ({c.new.service})" if c.new.service != MONOLITH else "")
        for c in result.changes
    ]
    return "Changed " + "; ".join(parts) + f" (route table version {result.version})."


def find_pair(runtime: ProxyRuntime, request_id: str) -> dict[str, Any] | None:
    """The newest recorded shadow pair with this request id, as a side-by-side view."""
    for pair in runtime.ring.recent():
        if pair.request_id == request_id:
            return pair_view(pair.to_dict())
    return None


def pairs_for_route(runtime: ProxyRuntime, endpoint: str, limit: int = 10) -> list[dict]:
    """The proxy's own recent shadow pairs of one endpoint (evidence next to parity's view)."""
    out = []
    for pair in runtime.ring.recent():
        if pair.route == endpoint:
            view = pair_view(pair.to_dict())
            view["url"] = shadow_url(pair.request_id)
            out.append(view)
            if len(out) >= limit:
                break
    return out


def mismatches_for(dashboard: Dashboard, endpoint: str, limit: int = 10) -> list[Mismatch]:
    return dashboard.parity.recent_mismatches(endpoint, limit)
