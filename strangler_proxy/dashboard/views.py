"""aiohttp handlers of the dashboard, mounted on the proxy's admin application.

Auth: the admin bearer middleware lets `/dashboard*` through; every handler here checks
the signed session cookie itself (pages redirect to the sign-in page, JSON answers 401).
State-changing requests (POST) additionally need the session's CSRF token, in the
`X-CSRF-Token` header or the `csrf_token` form field, and are refused when the browser says
they come from another site (`Origin`, `Sec-Fetch-Site`). Every response carries a strict
Content-Security-Policy (scripts and styles only from the dashboard's own static files).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from strangler_proxy.admin import RUNTIME_KEY, json_error, read_json_object
from strangler_proxy.dashboard.diffview import side_by_side
from strangler_proxy.dashboard.render import render, static_file
from strangler_proxy.dashboard.sessions import COOKIE_NAME, Session
from strangler_proxy.dashboard.state import (
    ACTOR,
    PREFIX,
    ChangeRejected,
    Dashboard,
    apply_change,
    build_state,
    collect_blocking,
    describe_result,
    find_pair,
    mismatch_url,
    pairs_for_route,
    parse_change,
)
from strangler_proxy.service import ChangeRefused

log = logging.getLogger("strangler_proxy.dashboard")

DASHBOARD_KEY: web.AppKey[Dashboard] = web.AppKey("dashboard")
_SAMPLER_KEY: web.AppKey[asyncio.Task[None]] = web.AppKey("dashboard_sampler")

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SessionHandler = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]
ChangeHandler = Callable[[web.Request, Session, dict[str, Any]], Awaitable[web.StreamResponse]]


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _session(request: web.Request) -> Session | None:
    return request.app[DASHBOARD_KEY].sessions.verify(request.cookies.get(COOKIE_NAME))


def _wants_json(request: web.Request) -> bool:
    return request.content_type == "application/json" or "application/json" in request.headers.get(
        "Accept", ""
    )


def _cross_site(request: web.Request) -> str | None:
    """Why a state-changing request looks cross-site, or None when it does not."""
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        return f"origin {origin!r} is not this dashboard"
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return f"request came from a {site} page"
    return None


def page(handler: SessionHandler) -> Handler:
    """Signed-in pages: without a valid session, go to the sign-in page."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        session = _session(request)
        if session is None:
            return _redirect(f"{PREFIX}/login")
        return await handler(request, session)

    return wrapped


def api(handler: SessionHandler) -> Handler:
    """Signed-in JSON: 401 without a valid session."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        session = _session(request)
        if session is None:
            return json_error(401, "unauthorized", "sign in to the dashboard first")
        return await handler(request, session)

    return wrapped


def state_changing(handler: ChangeHandler) -> Handler:
    """Signed in, same site, and carrying this session's CSRF token (constant-time check)."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        session = _session(request)
        as_json = _wants_json(request)
        if session is None:
            if as_json:
                return json_error(401, "unauthorized", "sign in to the dashboard first")
            return _redirect(f"{PREFIX}/login")
        cross = _cross_site(request)
        if cross is not None:
            return json_error(403, "cross_site", f"refused: {cross}")
        data = await _read_body(request)
        token = request.headers.get("X-CSRF-Token") or data.get("csrf_token")
        if not request.app[DASHBOARD_KEY].sessions.check_csrf(
            session, token if isinstance(token, str) else None
        ):
            return json_error(403, "csrf", "missing or wrong CSRF token; reload the page")
        return await handler(request, session, data)

    return wrapped


async def _read_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    if request.content_type == "application/json":
        return await read_json_object(request, malformed="bad JSON")
    form = await request.post()
    return {k: v for k, v in form.items() if isinstance(v, str)}


async def _state(request: web.Request) -> dict[str, Any]:
    runtime = request.app[RUNTIME_KEY]
    dashboard = request.app[DASHBOARD_KEY]
    blocking = await asyncio.to_thread(collect_blocking, runtime, dashboard)
    return build_state(runtime, dashboard, blocking)


# -- sign-in -------------------------------------------------------------------------------


async def root(_request: web.Request) -> web.Response:
    return _redirect(f"{PREFIX}/")


async def login_page(request: web.Request) -> web.Response:
    if _session(request) is not None:
        return _redirect(f"{PREFIX}/")
    return _html(render("login.html", prefix=PREFIX, error=None))


async def login(request: web.Request) -> web.Response:
    dashboard = request.app[DASHBOARD_KEY]
    cross = _cross_site(request)
    if cross is not None:
        return _html(render("login.html", prefix=PREFIX, error=f"Refused: {cross}."), 403)
    client = request.remote or ""
    wait = dashboard.throttle.retry_after(client)
    if wait > 0:
        resp = _html(
            render(
                "login.html",
                prefix=PREFIX,
                error=f"Too many wrong tokens; try again in {int(wait) + 1} s.",
            ),
            429,
        )
        resp.headers["Retry-After"] = str(int(wait) + 1)
        return resp
    form = await request.post()
    given = form.get("token")
    expected = request.app[RUNTIME_KEY].admin_token
    given_text = given.strip() if isinstance(given, str) and given.isascii() else ""
    if not given_text or not hmac.compare_digest(given_text.encode(), expected.encode()):
        dashboard.throttle.failed(client)
        return _html(render("login.html", prefix=PREFIX, error="That is not the admin token."), 401)
    dashboard.throttle.succeeded(client)
    cookie, session = dashboard.sessions.issue()
    resp = _redirect(f"{PREFIX}/")
    resp.set_cookie(
        COOKIE_NAME,
        cookie,
        max_age=int(dashboard.sessions.ttl),
        path=PREFIX,
        httponly=True,
        samesite="Strict",
    )
    return resp


@state_changing
async def logout(request: web.Request, session: Session, data: dict[str, Any]) -> web.Response:
    request.app[DASHBOARD_KEY].sessions.revoke(session.sid)
    resp = _redirect(f"{PREFIX}/login")
    resp.del_cookie(COOKIE_NAME, path=PREFIX)
    return resp


# -- pages ---------------------------------------------------------------------------------


@page
async def overview(request: web.Request, session: Session) -> web.Response:
    return await _dashboard_page(request, session)


@page
async def mismatches_page(request: web.Request, session: Session) -> web.Response:
    endpoint = request.query.get("endpoint", "").strip()
    if not endpoint:
        return _redirect(f"{PREFIX}/")
    dashboard = request.app[DASHBOARD_KEY]
    runtime = request.app[RUNTIME_KEY]

    def gather() -> tuple[Any, list[Any], str | None]:
        try:
            stats = next(
                (p for p in dashboard.parity.endpoint_stats() if p.endpoint == endpoint), None
            )
            found = dashboard.parity.recent_mismatches(endpoint, 10)
            return stats, found, None
        except Exception as exc:  # noqa: BLE001 - show the provider failure on the page
            log.warning("dashboard: parity provider failed", exc_info=True)
            return None, [], f"parity provider failed: {exc.__class__.__name__}: {exc}"

    stats, found, problem = await asyncio.to_thread(gather)
    mismatches = [
        {
            **m.to_dict(),
            "rows": side_by_side(m.control_body, m.candidate_body)
            if (m.control_body or m.candidate_body)
            else [],
        }
        for m in found
    ]
    return _html(
        render(
            "mismatches.html",
            prefix=PREFIX,
            csrf=session.csrf,
            endpoint=endpoint,
            stats=stats,
            mismatches=mismatches,
            pairs=pairs_for_route(runtime, endpoint),
            problem=problem,
        )
    )


@page
async def shadow_page(request: web.Request, session: Session) -> web.Response:
    pair = find_pair(request.app[RUNTIME_KEY], request.match_info["request_id"])
    if pair is None:
        return _html(
            render(
                "notfound.html",
                prefix=PREFIX,
                csrf=session.csrf,
                title="Shadow pair not found",
                message="The proxy keeps only its most recent shadow pairs in memory.",
            ),
            404,
        )
    return _html(
        render(
            "shadow.html",
            prefix=PREFIX,
            csrf=session.csrf,
            pair=pair,
            mismatch_url=mismatch_url(pair["route"] or ""),
        )
    )


# -- JSON ------------------------------------------------------------------------------------


@api
async def state_json(request: web.Request, session: Session) -> web.Response:
    return web.json_response(await _state(request))


@api
async def mismatches_json(request: web.Request, session: Session) -> web.Response:
    endpoint = request.query.get("endpoint", "").strip()
    if not endpoint:
        return json_error(422, "validation_error", "endpoint is required")
    dashboard = request.app[DASHBOARD_KEY]
    found = await asyncio.to_thread(dashboard.parity.recent_mismatches, endpoint, 10)
    return web.json_response({"endpoint": endpoint, "mismatches": [m.to_dict() for m in found]})


# -- changes ---------------------------------------------------------------------------------


@state_changing
async def change_route(
    request: web.Request, session: Session, data: dict[str, Any]
) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    as_json = _wants_json(request)
    try:
        change = parse_change(data)
        result = await asyncio.to_thread(apply_change, runtime, change)
    except ChangeRejected as exc:
        if as_json:
            return json_error(exc.status, exc.code, exc.message)
        title = "Refused:" if exc.code == "refused" else "Not changed:"
        return await _overview_with(request, session, "error", title, exc.message, data, exc.status)
    await runtime.reload()
    message = describe_result(result)
    if as_json:
        return web.json_response({"ok": True, "message": message, **result.to_dict()})
    return await _overview_with(request, session, "ok", "Done.", message, None, 200)


@state_changing
async def reset_routes(
    request: web.Request, session: Session, data: dict[str, Any]
) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    reason = str(data.get("reason") or "rolled back from the dashboard")[:500]
    force = str(data.get("force", "")).lower() in ("1", "true", "on", "yes")
    try:
        version = await asyncio.to_thread(
            runtime.route_service.reset, actor=ACTOR, reason=reason, force=force
        )
    except ChangeRefused as exc:
        if _wants_json(request):
            return json_error(409, exc.code, str(exc))
        return await _overview_with(request, session, "error", "Refused:", str(exc), data, 409)
    await runtime.reload()
    message = f"Every route is back on the monolith (route table version {version})."
    if _wants_json(request):
        return web.json_response({"ok": True, "message": message, "version": version})
    return await _overview_with(request, session, "ok", "Rolled back.", message, None, 200)


async def _overview_with(
    request: web.Request,
    session: Session,
    kind: str,
    title: str,
    message: str,
    form: dict[str, Any] | None,
    status: int,
) -> web.Response:
    keep = None
    if form is not None:
        keep = {k: str(form.get(k) or "") for k in ("endpoint", "mode", "percent", "reason")}
    result = {"kind": kind, "title": title, "message": message}
    return await _dashboard_page(request, session, result, keep, status)


async def _dashboard_page(
    request: web.Request,
    session: Session,
    result: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    """The overview page, optionally with the outcome of an action and the form to re-fill."""
    state = await _state(request)
    return _html(
        render(
            "dashboard.html",
            prefix=PREFIX,
            csrf=session.csrf,
            state=state,
            result=result,
            form=form,
        ),
        status,
    )


async def static(request: web.Request) -> web.Response:
    found = static_file(request.match_info["name"])
    if found is None:
        raise web.HTTPNotFound()
    body, content_type = found
    return web.Response(body=body, content_type=content_type, charset="utf-8")


# -- mounting --------------------------------------------------------------------------------


async def _add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path == "/" or request.path == PREFIX or request.path.startswith(PREFIX + "/"):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)


async def _sampler(app: web.Application) -> None:
    """About once a second: a rate sample of the proxy's counters and a CDC lag reading."""
    runtime = app[RUNTIME_KEY]
    dashboard = app[DASHBOARD_KEY]
    while True:
        started = time.monotonic()
        try:
            dashboard.sample_stats(runtime)
            await asyncio.to_thread(dashboard.sample_cdc)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - keep sampling; the page shows provider errors
            log.warning("dashboard: sampling failed", exc_info=True)
        elapsed = time.monotonic() - started
        await asyncio.sleep(max(0.05, dashboard.sample_interval - elapsed))


async def _start_sampler(app: web.Application) -> None:
    app[_SAMPLER_KEY] = asyncio.create_task(_sampler(app), name="dashboard-sampler")


async def _stop_sampler(app: web.Application) -> None:
    task = app.get(_SAMPLER_KEY)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def mount(app: web.Application, dashboard: Dashboard) -> None:
    """Add the dashboard's routes, security headers and sampler to the admin application."""
    app[DASHBOARD_KEY] = dashboard
    app.router.add_get("/", root)
    app.router.add_get(PREFIX, root)
    app.router.add_get(PREFIX + "/", overview)
    app.router.add_get(PREFIX + "/login", login_page)
    app.router.add_post(PREFIX + "/login", login)
    app.router.add_post(PREFIX + "/logout", logout)
    app.router.add_post(PREFIX + "/routes", change_route)
    app.router.add_post(PREFIX + "/reset", reset_routes)
    app.router.add_get(PREFIX + "/mismatches", mismatches_page)
    app.router.add_get(PREFIX + "/shadow/{request_id}", shadow_page)
    app.router.add_get(PREFIX + "/api/state", state_json)
    app.router.add_get(PREFIX + "/api/mismatches", mismatches_json)
    app.router.add_get(PREFIX + "/static/{name}", static)
    app.on_response_prepare.append(_add_security_headers)
    app.on_startup.append(_start_sampler)
    app.on_cleanup.append(_stop_sampler)


def is_dashboard_path(path: str) -> bool:
    """Paths the admin bearer check leaves to the dashboard's own session check."""
    return path == "/" or path == PREFIX or path.startswith(PREFIX + "/")
