"""Admin API on its own port: routes, history, stats, shadow pairs and Prometheus metrics.

Every `/admin/*` endpoint needs `Authorization: Bearer <token>`, compared in constant time.
`/metrics` is open by default (Prometheus scrapers rarely carry tokens and the admin port is
bound to 127.0.0.1); set `metrics_require_token = true` to protect it too. `/healthz` is open.
Store and readiness calls are blocking, so they run in a worker thread.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from strangler_proxy.routes import RouteError
from strangler_proxy.service import ChangeRefused, UnknownServiceError
from strangler_proxy.store import UnknownRouteError

if TYPE_CHECKING:
    from strangler_proxy.bootstrap import ProxyRuntime

RUNTIME_KEY: web.AppKey[ProxyRuntime] = web.AppKey("runtime")
_OPEN_PATHS = frozenset({"/healthz"})


def json_error(status: int, code: str, message: str) -> web.Response:
    """The kit's JSON error body `{"error": {"code", "message"}}` (admin API and dashboard)."""
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def bad_request(code: str, message: str) -> web.HTTPBadRequest:
    """The same error body as a 400 to raise from deep inside a handler."""
    return web.HTTPBadRequest(
        text=json.dumps({"error": {"code": code, "message": message}}),
        content_type="application/json",
    )


async def read_json_object(request: web.Request, malformed: str | None = None) -> dict[str, Any]:
    """The request's JSON body, which must be an object; 400 `malformed_json` otherwise.

    `malformed` replaces the parser's own message when the body is not JSON at all.
    """
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request("malformed_json", malformed or str(exc)) from exc
    if not isinstance(data, dict):
        raise bad_request("malformed_json", "body must be a JSON object")
    return data


def make_auth_middleware(
    token: str, protect_metrics: bool, session_paths: Callable[[str], bool] | None = None
) -> Any:
    """Bearer-token check with hmac.compare_digest (no early exit on the first wrong byte).

    `session_paths` names paths that authenticate themselves (the dashboard's session cookie).
    """
    expected = token.encode()

    @web.middleware
    async def auth(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path in _OPEN_PATHS or (request.path == "/metrics" and not protect_metrics):
            return await handler(request)
        if session_paths is not None and session_paths(request.path):
            return await handler(request)
        header = request.headers.get("Authorization", "")
        if not header.isascii():  # tokens are ASCII: anything else is wrong, never a 500
            header = "Bearer -"
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            resp = json_error(401, "unauthorized", "missing bearer token")
            resp.headers["WWW-Authenticate"] = 'Bearer realm="strangler-proxy"'
            return resp
        if not hmac.compare_digest(given.strip().encode(), expected):
            resp = json_error(401, "unauthorized", "invalid bearer token")
            resp.headers["WWW-Authenticate"] = (
                'Bearer realm="strangler-proxy", error="invalid_token"'
            )
            return resp
        return await handler(request)

    return auth


def make_host_middleware(runtime: ProxyRuntime) -> Any:
    """Answer only requests addressed to the admin server itself (or an allowed name).

    Why: a DNS-rebinding page in the operator's browser reaches 127.0.0.1 under a name of
    its own; the `Host` it sends is that name, so it gets 421 instead of /metrics or the
    dashboard's sign-in.
    """

    def allowed() -> frozenset[str]:
        host = runtime.config.admin_host
        if ":" in host:
            host = f"[{host}]"
        names = {host, f"{host}:{runtime.admin_port}"}
        return frozenset(n.lower() for n in (*names, *runtime.config.admin_allowed_hosts))

    @web.middleware
    async def check_host(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.headers.get("Host", "").lower() not in allowed():
            return json_error(
                421,
                "misdirected_request",
                "this admin server answers only to its own address "
                "(add other names to admin_allowed_hosts)",
            )
        return await handler(request)

    return check_host


def _limit(request: web.Request, default: int) -> int:
    raw = request.query.get("limit", str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= 10000:
        raise bad_request("invalid_query", "limit must be 1..10000")
    return int(raw)


async def get_routes(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    version, routes = await asyncio.to_thread(runtime.store.load)
    return web.json_response(
        {
            "version": version,
            "active_version": runtime.core.table.version,
            "routes": [r.to_dict() for r in sorted(routes, key=lambda r: (r.path, r.method))],
            "services": dict(runtime.config.upstreams),
        }
    )


_SET_FIELDS = {
    "method",
    "methods",
    "path",
    "mode",
    "service",
    "reason",
    "actor",
    "force",
    "fallback",
    "shadow_writes",
    "sticky_header",
    "sticky_cookie",
}


async def put_routes(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    data = await read_json_object(request)
    unknown = sorted(set(data) - _SET_FIELDS)
    if unknown:
        return json_error(422, "validation_error", f"unknown fields: {', '.join(unknown)}")
    methods = data.get("methods") or data.get("method")
    for name in ("path", "mode"):
        if not isinstance(data.get(name), str):
            return json_error(422, "validation_error", f"{name} is required (string)")
    if not methods or not isinstance(methods, str | list):
        return json_error(422, "validation_error", "method is required (string or list)")
    for name in ("force", "fallback", "shadow_writes"):
        if name in data and not isinstance(data[name], bool):
            return json_error(422, "validation_error", f"{name} must be a boolean")
    try:
        result = await asyncio.to_thread(
            runtime.route_service.set_route,
            methods,
            data["path"],
            data["mode"],
            service=data.get("service"),
            reason=str(data.get("reason", "")),
            actor=str(data.get("actor", "admin-api")),
            force=bool(data.get("force", False)),
            fallback=data.get("fallback"),
            shadow_writes=data.get("shadow_writes"),
            sticky_header=data.get("sticky_header"),
            sticky_cookie=data.get("sticky_cookie"),
        )
    except UnknownRouteError as exc:
        return json_error(404, "unknown_route", str(exc))
    except UnknownServiceError as exc:
        return json_error(422, "unknown_service", str(exc))
    except ChangeRefused as exc:
        return json_error(409, exc.code, str(exc))
    except RouteError as exc:
        return json_error(422, "invalid_route", str(exc))
    await runtime.reload()
    return web.json_response(result.to_dict())


async def post_reset(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    data = await read_json_object(request) if request.can_read_body else {}
    if "force" in data and not isinstance(data["force"], bool):
        return json_error(422, "validation_error", "force must be a boolean")
    try:
        version = await asyncio.to_thread(
            runtime.route_service.reset,
            actor=str(data.get("actor", "admin-api")),
            reason=str(data.get("reason", "reset")),
            force=bool(data.get("force", False)),
        )
    except ChangeRefused as exc:
        return json_error(409, exc.code, str(exc))
    await runtime.reload()
    return web.json_response({"version": version})


async def get_history(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    entries = await asyncio.to_thread(runtime.store.history, _limit(request, 50))
    return web.json_response({"history": [e.to_dict() for e in entries]})


async def get_stats(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    core = runtime.core
    snapshot = core.stats.snapshot()
    snapshot["breakers"] = {
        name: {"state": b.state, "failures": b.failures} for name, b in core.breakers.items()
    }
    snapshot["shadow_queue"] = core.shadow.queued
    snapshot["in_flight"] = core.in_flight
    snapshot["route_version"] = core.table.version
    workers = getattr(runtime, "workers", None)
    if workers is not None:  # multi-process proxy: per-worker view (pid, route version...)
        snapshot["workers"] = workers.describe()
    return web.json_response(snapshot)


async def get_shadow(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    pairs = runtime.ring.recent(_limit(request, 50))
    return web.json_response({"total": runtime.ring.total, "pairs": [p.to_dict() for p in pairs]})


async def get_metrics(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    core = runtime.core
    states = {"closed": 0, "half_open": 1, "open": 2}
    gauges = [
        (
            "strangler_proxy_breaker_state",
            "Circuit breaker state per service (0 closed, 1 half-open, 2 open).",
            {"service": name},
            float(states[b.state]),
        )
        for name, b in sorted(core.breakers.items())
    ]
    gauges.append(
        (
            "strangler_proxy_route_version",
            "Route table version in use.",
            {},
            float(core.table.version),
        )
    )
    gauges.append(
        ("strangler_proxy_in_flight", "Requests being proxied.", {}, float(core.in_flight))
    )
    gauges.append(
        ("strangler_proxy_shadow_queue", "Queued shadow copies.", {}, float(core.shadow.queued))
    )
    return web.Response(
        text=core.stats.prometheus(gauges),
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_admin_app(runtime: ProxyRuntime, token: str) -> web.Application:
    """Build the admin application (not started), with the dashboard when the runtime has one."""
    dashboard = getattr(runtime, "dashboard", None)
    session_paths = None
    if dashboard is not None:
        # Imported here: the dashboard's views import this module (RUNTIME_KEY).
        from strangler_proxy.dashboard.views import is_dashboard_path

        session_paths = is_dashboard_path
    app = web.Application(
        middlewares=[
            make_host_middleware(runtime),
            make_auth_middleware(token, runtime.config.metrics_require_token, session_paths),
        ],
        client_max_size=1024 * 1024,
    )
    app[RUNTIME_KEY] = runtime
    app.router.add_get("/admin/routes", get_routes)
    app.router.add_put("/admin/routes", put_routes)
    app.router.add_post("/admin/routes/reset", post_reset)
    app.router.add_get("/admin/history", get_history)
    app.router.add_get("/admin/stats", get_stats)
    app.router.add_get("/admin/shadow", get_shadow)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", healthz)
    if dashboard is not None:
        from strangler_proxy.dashboard.views import mount

        mount(app, dashboard)
    return app
