"""`kit route`: list, set, reset and audit per-endpoint routing.

Talks to a running proxy's admin API (`--admin-url`/`KIT_ADMIN_URL`, `--token`/
`KIT_ADMIN_TOKEN`, else the token file), or directly to the route store with `--store URL`
(`KIT_ROUTE_STORE`), which every proxy sharing that store picks up within a second.
Bad input exits non-zero with a clear message and changes nothing.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import click
import httpx

from kit.commands.playbook import table as render_table
from strangler_proxy.routes import RouteError
from strangler_proxy.service import RouteService, readiness_guard
from strangler_proxy.store import RouteStore

DEFAULT_ADMIN_URL = "http://127.0.0.1:8081"
DEFAULT_TOKEN_FILE = "var/proxy-admin-token"


class Backend(ABC):
    """What the commands need, whichever way they reach the routes."""

    @abstractmethod
    def list(self) -> dict[str, Any]:
        """Version, routes and services."""

    @abstractmethod
    def set(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Apply one validated, guarded change."""

    @abstractmethod
    def reset(self, actor: str, reason: str, force: bool) -> dict[str, Any]:
        """Everything back to the monolith (guarded like any change unless `force`)."""

    @abstractmethod
    def history(self, limit: int) -> list[dict[str, Any]]:
        """Audit entries, newest first."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""


class AdminBackend(Backend):
    """Through the admin API of a running proxy."""

    def __init__(self, url: str, token: str) -> None:
        self.client = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=15,
            trust_env=False,
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise click.ClickException(
                f"cannot reach the proxy admin API at {self.client.base_url}: {exc}"
            ) from exc
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code >= 400:
            message = (
                data["error"]["message"]
                if isinstance(data, dict) and "error" in data
                else response.text[:200]
            )
            raise click.ClickException(f"{message} (HTTP {response.status_code})")
        return data

    def list(self) -> dict[str, Any]:
        return self._call("GET", "/admin/routes")

    def set(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self._call("PUT", "/admin/routes", json=payload)

    def reset(self, actor: str, reason: str, force: bool) -> dict[str, Any]:
        return self._call(
            "POST",
            "/admin/routes/reset",
            json={"actor": actor, "reason": reason, "force": force},
        )

    def history(self, limit: int) -> list[dict[str, Any]]:
        return self._call("GET", f"/admin/history?limit={limit}")["history"]

    def close(self) -> None:
        self.client.close()


class StoreBackend(Backend):
    """Directly against the shared route store (same validation and guards as the API)."""

    def __init__(self, url: str) -> None:
        self.store = RouteStore.from_url(url)
        self.service = RouteService(self.store, _guards(self.store))

    def list(self) -> dict[str, Any]:
        version, routes = self.store.load()
        return {
            "version": version,
            "routes": [r.to_dict() for r in sorted(routes, key=lambda r: (r.path, r.method))],
            "services": self.store.services(),
        }

    def set(self, payload: dict[str, Any]) -> dict[str, Any]:
        payload = dict(payload)
        try:
            result = self.service.set_route(
                payload.pop("methods"), payload.pop("path"), payload.pop("mode"), **payload
            )
        except RouteError as exc:
            raise click.ClickException(str(exc)) from exc
        return result.to_dict()

    def reset(self, actor: str, reason: str, force: bool) -> dict[str, Any]:
        try:
            return {"version": self.service.reset(actor=actor, reason=reason, force=force)}
        except RouteError as exc:
            raise click.ClickException(str(exc)) from exc

    def history(self, limit: int) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.store.history(limit)]

    def close(self) -> None:
        self.store.close()


def _guards(store: RouteStore) -> list[Any]:
    """The readiness guard, and the playbook's guard rails (order, ownership, parity, CDC lag)
    when a manifest exists, so `--store` refuses exactly like the admin API of a proxy started
    by `kit up`."""
    from kit.manifest import ManifestError, load_manifest, manifest_path, traffic_ready_paths

    if not manifest_path(None).exists():
        return [readiness_guard(store.services)]
    try:
        m = load_manifest(None)
    except ManifestError:
        return [readiness_guard(store.services)]
    from kit.playbook.guards import route_guard
    from kit.playbook.machine import Playbook

    return [
        readiness_guard(store.services, paths=traffic_ready_paths(m)),
        route_guard(Playbook(m, actor="kit route").guard_context()),
    ]


def _admin_defaults() -> tuple[str, str]:
    """Admin URL and token file of the proxy `kit up` started from the manifest, if any."""
    from kit.manifest import ManifestError, load_manifest, manifest_path

    if manifest_path(None).exists():
        try:
            proxy = load_manifest(None).proxy
        except ManifestError:
            pass
        else:
            return f"http://{proxy.admin}", str(proxy.token_file)
    return DEFAULT_ADMIN_URL, DEFAULT_TOKEN_FILE


def _token(explicit: str | None, token_file: str) -> str:
    if explicit:
        return explicit
    path = Path(token_file)
    if path.exists():
        return path.read_text().strip()
    raise click.ClickException(
        "no admin token: pass --token, set KIT_ADMIN_TOKEN, or point --token-file at the "
        "file the proxy printed at start-up"
    )


def _options(route: dict[str, Any]) -> str:
    parts = []
    if not route.get("fallback", True):
        parts.append("no-fallback")
    if route.get("shadow_writes"):
        parts.append("shadow-writes")
    if route.get("sticky_header"):
        parts.append(f"sticky-header={route['sticky_header']}")
    if route.get("sticky_cookie"):
        parts.append(f"sticky-cookie={route['sticky_cookie']}")
    return ",".join(parts)


@click.group("route")
@click.option(
    "--admin-url",
    envvar="KIT_ADMIN_URL",
    default=None,
    help=f"Admin API of a running proxy [default: the manifest's, else {DEFAULT_ADMIN_URL}].",
)
@click.option("--token", envvar="KIT_ADMIN_TOKEN", default=None, help="Admin bearer token.")
@click.option(
    "--token-file",
    default=None,
    help=f"Where the proxy stored its token [default: the manifest's, else {DEFAULT_TOKEN_FILE}].",
)
@click.option(
    "--store",
    envvar="KIT_ROUTE_STORE",
    default=None,
    help="SQLAlchemy URL of the route store; bypasses the admin API.",
)
@click.pass_context
def cli(
    ctx: click.Context,
    admin_url: str | None,
    token: str | None,
    token_file: str | None,
    store: str | None,
) -> None:
    """Show and change per-endpoint routing (monolith, shadow, canary:N, extracted)."""

    def factory() -> Backend:
        if store:
            return StoreBackend(store)
        default_url, default_token_file = _admin_defaults()
        return AdminBackend(
            admin_url or default_url, _token(token, token_file or default_token_file)
        )

    ctx.obj = factory


def _backend(ctx: click.Context) -> Backend:
    backend = ctx.obj()
    ctx.call_on_close(backend.close)
    return backend


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def list_routes(ctx: click.Context, as_json: bool) -> None:
    """List declared routes with their service and mode."""
    data = _backend(ctx).list()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    rows = [(r["method"], r["path"], r["service"], r["mode"], _options(r)) for r in data["routes"]]
    click.echo(render_table(["METHOD", "PATH", "SERVICE", "MODE", "OPTIONS"], rows))
    click.echo(f"\nversion {data['version']}; everything else -> monolith")


@cli.command("set")
@click.argument("method")
@click.argument("path")
@click.argument("mode")
@click.option("--service", default=None, help="Service the route is moved to.")
@click.option("--reason", default="", help="Why (kept in the audit log).")
@click.option("--actor", default=lambda: os.environ.get("USER", "cli"), show_default="$USER")
@click.option("--force", is_flag=True, help="Skip guard rails such as the /readyz check.")
@click.option("--fallback/--no-fallback", default=None, help="Fall back to the monolith.")
@click.option(
    "--shadow-writes/--no-shadow-writes", default=None, help="Shadow non-safe methods too."
)
@click.option("--sticky-header", default=None, help="Canary stickiness key header.")
@click.option("--sticky-cookie", default=None, help="Canary stickiness key cookie.")
@click.pass_context
def set_route(
    ctx: click.Context,
    method: str,
    path: str,
    mode: str,
    service: str | None,
    reason: str,
    actor: str,
    force: bool,
    fallback: bool | None,
    shadow_writes: bool | None,
    sticky_header: str | None,
    sticky_cookie: str | None,
) -> None:
    """Set METHOD PATH to MODE, e.g. `kit route set GET '/products/<int:id>' canary:10`.

    METHOD may list several methods (GET,HEAD); PATH is the declared pattern.
    """
    payload: dict[str, Any] = {
        "methods": [m.strip() for m in method.split(",")],
        "path": path,
        "mode": mode,
        "service": service,
        "reason": reason,
        "actor": actor,
        "force": force,
    }
    for key, value in (
        ("fallback", fallback),
        ("shadow_writes", shadow_writes),
        ("sticky_header", sticky_header),
        ("sticky_cookie", sticky_cookie),
    ):
        if value is not None:
            payload[key] = value
    result = _backend(ctx).set(payload)
    for change in result["changes"]:
        old, new = change["old"], change["new"]
        click.echo(
            f"{new['method']} {new['path']}: {old['mode']} ({old['service']}) -> "
            f"{new['mode']} ({new['service']})"
        )
    click.echo(f"version {result['version']}")


@cli.command("reset")
@click.option("--reason", default="reset", show_default=True)
@click.option("--actor", default=lambda: os.environ.get("USER", "cli"), show_default="$USER")
@click.option(
    "--force",
    is_flag=True,
    help="Also move write endpoints whose tables a service owns (audited; risks lost rows).",
)
@click.pass_context
def reset(ctx: click.Context, reason: str, actor: str, force: bool) -> None:
    """Send every route back to the monolith in one route-table version.

    Reads always may go back. Write endpoints of a service that owns its tables' writes are
    refused (the monolith would accept writes the service never sees): `kit rollback` moves
    writes back properly; --force does it anyway and is audited.
    """
    result = _backend(ctx).reset(actor, reason, force)
    click.echo(f"all routes -> monolith (version {result['version']})")


@cli.command("history")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10000))
@click.pass_context
def history(ctx: click.Context, limit: int) -> None:
    """Show the audit log, newest first."""
    entries = _backend(ctx).history(limit)
    rows = [
        (
            e["at"][:19].replace("T", " "),
            e["version"],
            e["method"],
            e["path"],
            (e["old"] or {}).get("mode", "-"),
            (e["new"] or {}).get("mode", "-"),
            e["actor"],
            e["reason"],
        )
        for e in entries
    ]
    click.echo(
        render_table(["WHEN (UTC)", "VER", "METHOD", "PATH", "OLD", "NEW", "ACTOR", "REASON"], rows)
    )
