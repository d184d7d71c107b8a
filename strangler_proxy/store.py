"""Route store: routes, a monotonically increasing version and an audit log, via SQLAlchemy.

SQLite by default; any SQLAlchemy URL (e.g. PostgreSQL) lets several proxy instances share
one table. Every change runs in one transaction that first bumps the version row, which
serialises concurrent writers (row lock on PostgreSQL, write lock on SQLite), then writes the
routes and one audit row per changed route, so a change set is ONE version. Proxies poll
`version()` - a one-row primary-key read - and reload the table only when it moved; each
proxy instance records the version it serves (`report_served`) so that whoever changed the
routes can wait until every live proxy serves them (`wait_served`) instead of sleeping.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    insert,
    select,
    update,
)

from kitcore.db import make_engine
from strangler_proxy.routes import MODE_MONOLITH, Mode, Route, RouteError

metadata = MetaData()

services_table = Table(
    "proxy_services",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("url", String(500), nullable=False),
)

routes_table = Table(
    "proxy_routes",
    metadata,
    Column("method", String(10), primary_key=True),
    Column("path", String(500), primary_key=True),
    Column("service", String(100), nullable=False),
    Column("mode", String(30), nullable=False),
    Column("fallback", Boolean, nullable=False, default=True),
    Column("shadow_writes", Boolean, nullable=False, default=False),
    Column("sticky_header", String(200)),
    Column("sticky_cookie", String(200)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

state_table = Table(
    "proxy_route_state",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
)

instances_table = Table(
    "proxy_instances",
    metadata,
    Column("instance", String(200), primary_key=True),  # host:pid:nonce of a proxy
    Column("version", Integer, nullable=False),  # the route table version it serves
    Column("seen_at", DateTime(timezone=True), nullable=False),
)

LIVE_S = 3.0  # a proxy that has not reported for this long is not waited for


@dataclass(frozen=True)
class Served:
    """How far a route change reached: live proxies, those serving it, the time it took."""

    version: int
    live: int
    serving: int
    seconds: float

    @property
    def complete(self) -> bool:
        return self.serving == self.live


audit_table = Table(
    "proxy_route_audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("version", Integer, nullable=False),
    Column("method", String(10), nullable=False),
    Column("path", String(500), nullable=False),
    Column("old_value", Text),
    Column("new_value", Text),
    Column("actor", String(200), nullable=False),
    Column("reason", Text, nullable=False),
)


class UnknownRouteError(RouteError):
    """No route is declared for this method and path."""


@dataclass(frozen=True)
class AuditEntry:
    """One row of the audit log."""

    id: int
    at: datetime
    version: int
    method: str
    path: str
    old: dict[str, object] | None
    new: dict[str, object] | None
    actor: str
    reason: str

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "at": self.at.isoformat().replace("+00:00", "Z"),
            "version": self.version,
            "method": self.method,
            "path": self.path,
            "old": self.old,
            "new": self.new,
            "actor": self.actor,
            "reason": self.reason,
        }


def _now() -> datetime:
    return datetime.now(UTC)


def _row_to_route(row: Mapping[str, object]) -> Route:
    return Route.from_dict(row)


def _route_values(route: Route) -> dict[str, object]:
    return {
        "service": route.service,
        "mode": str(route.mode),
        "fallback": route.fallback,
        "shadow_writes": route.shadow_writes,
        "sticky_header": route.sticky_header,
        "sticky_cookie": route.sticky_cookie,
    }


class RouteStore:
    """Durable route table with versioning and an audit trail."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def from_url(cls, url: str, *, create: bool = True) -> RouteStore:
        store = cls(make_engine(url))
        if create:
            store.create_schema()
        return store

    def create_schema(self) -> None:
        """Create the tables if missing and the version row (idempotent)."""
        metadata.create_all(self.engine)
        with self.engine.begin() as conn:
            if conn.execute(select(state_table.c.version)).first() is None:
                conn.execute(insert(state_table).values(id=1, version=1))

    def close(self) -> None:
        self.engine.dispose()

    # -- reads ---------------------------------------------------------------------------
    def version(self) -> int:
        """The cheap poll: one primary-key read."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(state_table.c.version)).scalar_one())

    def load(self) -> tuple[int, list[Route]]:
        """Version and routes read in one transaction, so they belong together."""
        with self.engine.begin() as conn:
            version = int(conn.execute(select(state_table.c.version)).scalar_one())
            rows = conn.execute(select(routes_table)).mappings().all()
        return version, [_row_to_route(row) for row in rows]

    def services(self) -> dict[str, str]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(services_table)).all()
        return {row.name: row.url for row in rows}

    def history(self, limit: int = 50) -> list[AuditEntry]:
        """Most recent audit entries first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(audit_table).order_by(audit_table.c.id.desc()).limit(limit)
            ).all()
        return [
            AuditEntry(
                id=row.id,
                at=row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC),
                version=row.version,
                method=row.method,
                path=row.path,
                old=json.loads(row.old_value) if row.old_value else None,
                new=json.loads(row.new_value) if row.new_value else None,
                actor=row.actor,
                reason=row.reason,
            )
            for row in rows
        ]

    def served(self, version: int, *, live_s: float = LIVE_S) -> Served:
        """Live proxies (reported within `live_s`) and how many of them serve `version`+."""
        since = _now() - timedelta(seconds=live_s)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(instances_table.c.version).where(instances_table.c.seen_at >= since)
            ).all()
        return Served(version, len(rows), sum(1 for r in rows if r.version >= version), 0.0)

    def wait_served(self, version: int, *, timeout: float = 10.0, live_s: float = LIVE_S) -> Served:
        """Wait until every live proxy serves `version` (or `timeout`); the last view, timed."""
        started = time.monotonic()
        while True:
            seen = self.served(version, live_s=live_s)
            elapsed = time.monotonic() - started
            if seen.complete or elapsed >= timeout:
                return Served(version, seen.live, seen.serving, elapsed)
            time.sleep(0.02)

    # -- writes --------------------------------------------------------------------------
    def report_served(self, instance: str, version: int) -> None:
        """A proxy instance's heartbeat: the route table version all its processes serve."""
        with self.engine.begin() as conn:
            values = {"version": version, "seen_at": _now()}
            res = conn.execute(
                update(instances_table)
                .where(instances_table.c.instance == instance)
                .values(**values)
            )
            if res.rowcount == 0:
                conn.execute(insert(instances_table).values(instance=instance, **values))

    def forget_instance(self, instance: str) -> None:
        """A proxy that stops cleanly is no longer waited for."""
        with self.engine.begin() as conn:
            conn.execute(delete(instances_table).where(instances_table.c.instance == instance))

    def sync_services(self, services: Mapping[str, str]) -> None:
        """Record the configured upstreams so store-only tools (the CLI) can validate names."""
        with self.engine.begin() as conn:
            existing = {r.name: r.url for r in conn.execute(select(services_table)).all()}
            for name, url in services.items():
                if name not in existing:
                    conn.execute(insert(services_table).values(name=name, url=url))
                elif existing[name] != url:
                    conn.execute(
                        update(services_table).where(services_table.c.name == name).values(url=url)
                    )

    def declare(self, routes: Iterable[Route], *, actor: str = "config") -> int:
        """Insert declared routes that do not exist yet; existing modes are kept."""
        routes = list(routes)
        with self.engine.begin() as conn:
            existing = {
                (r.method, r.path)
                for r in conn.execute(select(routes_table.c.method, routes_table.c.path)).all()
            }
            missing = [r for r in routes if r.key not in existing]
            if not missing:
                return int(conn.execute(select(state_table.c.version)).scalar_one())
            version = self._bump(conn)
            now = _now()
            for route in missing:
                conn.execute(
                    insert(routes_table).values(
                        method=route.method, path=route.path, updated_at=now, **_route_values(route)
                    )
                )
                self._audit(conn, version, now, route.key, None, route, actor, "declared")
            return version

    def apply(self, routes: Iterable[Route], *, actor: str, reason: str) -> tuple[int, list[Route]]:
        """Replace existing routes atomically; any unknown endpoint aborts the whole change.

        Returns the new version and the old routes, in the same order.
        """
        routes = list(routes)
        with self.engine.begin() as conn:
            version = self._bump(conn)
            now = _now()
            olds: list[Route] = []
            for route in routes:
                row = (
                    conn.execute(
                        select(routes_table).where(
                            routes_table.c.method == route.method,
                            routes_table.c.path == route.path,
                        )
                    )
                    .mappings()
                    .first()
                )
                if row is None:
                    raise UnknownRouteError(f"no route is declared for {route.method} {route.path}")
                old = _row_to_route(row)
                olds.append(old)
                conn.execute(
                    update(routes_table)
                    .where(routes_table.c.method == route.method, routes_table.c.path == route.path)
                    .values(updated_at=now, **_route_values(route))
                )
                self._audit(conn, version, now, route.key, old, route, actor, reason)
            return version, olds

    def reset(self, *, actor: str, reason: str) -> int:
        """Send every route back to the monolith (the one-command rollback)."""
        _, routes = self.load()
        changed = [
            _replace_mode(r, Mode(MODE_MONOLITH)) for r in routes if r.mode.kind != "monolith"
        ]
        if not changed:
            return self.version()
        version, _ = self.apply(changed, actor=actor, reason=reason)
        return version

    @staticmethod
    def _bump(conn) -> int:  # type: ignore[no-untyped-def]
        conn.execute(update(state_table).values(version=state_table.c.version + 1))
        return int(conn.execute(select(state_table.c.version)).scalar_one())

    @staticmethod
    def _audit(  # type: ignore[no-untyped-def]
        conn, version, at, key, old: Route | None, new: Route | None, actor: str, reason: str
    ) -> None:
        conn.execute(
            insert(audit_table).values(
                at=at,
                version=version,
                method=key[0],
                path=key[1],
                old_value=json.dumps(old.to_dict()) if old else None,
                new_value=json.dumps(new.to_dict()) if new else None,
                actor=actor,
                reason=reason,
            )
        )


def _replace_mode(route: Route, mode: Mode) -> Route:
    from dataclasses import replace

    return replace(route, mode=mode)
