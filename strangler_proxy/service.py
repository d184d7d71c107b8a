"""Route-changing service layer shared by the admin API and the CLI.

Every change is validated completely (methods, pattern, mode, service, declared endpoint)
and passed through the guard rails *before* the store is touched, so a refused or malformed
change leaves nothing behind. Guards are plain callables `(RouteChange) -> str | None`
returning a refusal reason; the playbook plugs in parity/CDC guards the same way the built-in
readiness guard is plugged in here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import httpx

from strangler_proxy.routes import (
    MODE_CANARY,
    MODE_EXTRACTED,
    MONOLITH,
    Route,
    RouteError,
    parse_methods,
    parse_mode,
    parse_pattern,
)
from strangler_proxy.store import RouteStore, UnknownRouteError


@dataclass(frozen=True)
class RouteChange:
    """A proposed change of one route, as seen by guards."""

    old: Route
    new: Route
    actor: str
    reason: str
    force: bool


Guard = Callable[[RouteChange], "str | None"]


class ChangeRefused(RouteError):
    """A guard refused the change; `code` lets the admin API map it to an HTTP status."""

    def __init__(self, message: str, code: str = "refused") -> None:
        super().__init__(message)
        self.code = code


class UnknownServiceError(RouteError):
    """The named service is not a configured upstream."""


@dataclass(frozen=True)
class ChangeResult:
    version: int
    changes: list[RouteChange]

    def to_dict(self) -> dict[str, object]:
        return {
            "version": self.version,
            "changes": [{"old": c.old.to_dict(), "new": c.new.to_dict()} for c in self.changes],
        }


READY_PATH = "/readyz"


def readiness_guard(
    services: Callable[[], Mapping[str, str]] | Mapping[str, str],
    *,
    timeout: float = 2.0,
    paths: Mapping[str, str] | None = None,
) -> Guard:
    """Refuse canary/extracted for a service whose readiness path (`paths[service]`, else
    `/readyz`) does not answer 200 (unless forced)."""
    ready_paths = dict(paths or {})

    def guard(change: RouteChange) -> str | None:
        if change.force or change.new.mode.kind not in (MODE_CANARY, MODE_EXTRACTED):
            return None
        if change.old.mode == change.new.mode and change.old.service == change.new.service:
            return None
        urls = services() if callable(services) else services
        url = urls.get(change.new.service)
        if url is None:
            return f"service {change.new.service!r} has no configured URL"
        path = ready_paths.get(change.new.service, READY_PATH)
        try:
            with httpx.Client(timeout=timeout, trust_env=False) as client:
                response = client.get(url.rstrip("/") + path)
        except httpx.HTTPError as exc:
            return (
                f"service {change.new.service!r} is not ready: {path} unreachable "
                f"({exc.__class__.__name__}); use force to override"
            )
        if response.status_code != 200:
            return (
                f"service {change.new.service!r} is not ready: {path} returned "
                f"{response.status_code}; use force to override"
            )
        return None

    return guard


class RouteService:
    """Validates, guards and applies route changes to the store."""

    def __init__(self, store: RouteStore, guards: Sequence[Guard] = ()) -> None:
        self.store = store
        self.guards = list(guards)

    def set_route(
        self,
        methods: str | Sequence[str],
        path: str,
        mode: str,
        *,
        guards: Sequence[Guard] | None = None,
        **options: Any,
    ) -> ChangeResult:
        """Set the mode of one or more methods of a declared route, atomically (`options`:
        those of `plan`)."""
        return self.commit(self.plan(methods, path, mode, **options), guards=guards)

    def plan(
        self,
        methods: str | Sequence[str],
        path: str,
        mode: str,
        *,
        service: str | None = None,
        reason: str = "",
        actor: str = "unknown",
        force: bool = False,
        fallback: bool | None = None,
        shadow_writes: bool | None = None,
        sticky_header: str | None = None,
        sticky_cookie: str | None = None,
    ) -> list[RouteChange]:
        """The validated changes `set_route` would make (nothing is guarded or stored yet)."""
        method_set = parse_methods(methods)
        parse_pattern(path)
        parsed_mode = parse_mode(mode)
        _, routes = self.store.load()
        by_key = {r.key: r for r in routes}
        known_services = self.store.services()
        if service is not None and service not in known_services:
            raise UnknownServiceError(
                f"unknown service {service!r}: configured services are "
                f"{', '.join(sorted(known_services)) or '(none)'}"
            )
        changes: list[RouteChange] = []
        for method in sorted(method_set):
            old = by_key.get((method, path))
            if old is None:
                declared = sorted({p for (_, p) in by_key if p == path or p.startswith(path)})
                hint = f"; declared patterns like it: {', '.join(declared[:5])}" if declared else ""
                raise UnknownRouteError(f"no route is declared for {method} {path}{hint}")
            target_service = service or old.service
            if parsed_mode.kind != "monolith" and target_service == MONOLITH:
                raise RouteError(f"mode {parsed_mode} needs --service naming an extracted service")
            if sticky_header and sticky_cookie:
                raise RouteError("choose either a sticky header or a sticky cookie, not both")
            new = replace(
                old,
                service=target_service,
                mode=parsed_mode,
                fallback=old.fallback if fallback is None else fallback,
                shadow_writes=old.shadow_writes if shadow_writes is None else shadow_writes,
                sticky_header=sticky_header
                if sticky_header is not None
                else (None if sticky_cookie else old.sticky_header),
                sticky_cookie=sticky_cookie
                if sticky_cookie is not None
                else (None if sticky_header else old.sticky_cookie),
            )
            changes.append(RouteChange(old, new, actor, reason, force))
        return changes

    def commit(
        self, changes: Sequence[RouteChange], *, guards: Sequence[Guard] | None = None
    ) -> ChangeResult:
        """Guard every change once, then store the whole set as ONE route-table version (a
        proxy never serves half of it); any refusal stores nothing."""
        for change in changes:
            for guard in self.guards if guards is None else guards:
                refusal = guard(change)
                if refusal:
                    raise ChangeRefused(refusal)
        if not changes:
            return ChangeResult(self.store.version(), [])
        first = changes[0]
        version, _ = self.store.apply(
            [c.new for c in changes], actor=first.actor, reason=first.reason
        )
        return ChangeResult(version, list(changes))

    def plan_reset(
        self, *, actor: str = "unknown", reason: str = "reset", force: bool = False
    ) -> list[RouteChange]:
        """The changes `reset` makes: every route not on the monolith goes back to it."""
        _, routes = self.store.load()
        return [
            RouteChange(r, replace(r, mode=parse_mode(MONOLITH)), actor, reason, force)
            for r in sorted(routes, key=lambda r: r.key)
            if r.mode.kind != MONOLITH
        ]

    def reset(
        self,
        *,
        actor: str = "unknown",
        reason: str = "reset",
        force: bool = False,
        guards: Sequence[Guard] | None = None,
    ) -> int:
        """Everything back to the monolith in one route-table version, through the same guards
        as any change: reads always may go back, but a write endpoint whose tables the service
        owns would send writes to a side that no longer owns them (a lost row), so that is
        refused unless `force` (audited); `kit rollback` moves writes back properly."""
        return self.commit(
            self.plan_reset(actor=actor, reason=reason, force=force), guards=guards
        ).version
