"""The playbook's composition root: every adapter a step touches, built once per Playbook.

State store, route service (with the proxy's guards), parity statistics, CDC transport and
the pipelines of each service. Each is built on first use (a `kit status` that never reads
parity never opens its store) and then kept; tests pass fakes (subclasses of the real ports)
through the constructor instead of patching modules.
"""

from __future__ import annotations

import os
from typing import Any

from kit.manifest import Manifest, traffic_ready_paths
from kit.playbook import pipelines as pl
from kit.playbook.guards import GuardContext, route_guard
from kit.playbook.state import StateStore


class Root:
    """The adapters of one Playbook; see the module docstring."""

    def __init__(
        self,
        m: Manifest,
        *,
        actor: str | None = None,
        state: StateStore | None = None,
        stats: Any = None,
        transport: Any = None,
        routes: Any = None,
    ) -> None:
        self.m = m
        self.actor = actor or os.environ.get("USER") or "kit"
        self.state = state if state is not None else StateStore(m.kit.state_url)
        self._stats = stats
        self._transport = transport
        self._routes = routes
        self._pipes: dict[tuple[str, str], pl.Pipeline] = {}

    def stats(self) -> Any:
        """Parity statistics (what the `canary`/`reads` gates read)."""
        if self._stats is None:
            from parity.recording import open_stats_store

            self._stats = open_stats_store(self.m.parity.stats_url)
        return self._stats

    def proxy_stats(self) -> dict[str, Any]:
        """The running proxy's live statistics (`/admin/stats`): what canaries really split."""
        from kit.runtime.plan import read_admin_stats

        return read_admin_stats(self.m, timeout=2.0)

    def transport(self) -> Any:
        """The CDC transport (embedded log or Kafka) the pipelines publish to."""
        if self._transport is None:
            self._transport = pl.make_transport(self.m)
        return self._transport

    def pipeline(self, direction: str, service: str) -> pl.Pipeline:
        key = (direction, service)
        if key not in self._pipes:
            build = {
                "forward": pl.forward_pipeline,
                "reverse": pl.reverse_pipeline,
                "replica": pl.replica_pipeline,
            }[direction]
            self._pipes[key] = build(self.m, service)
        return self._pipes[key]

    def replica(self, service: str) -> pl.Pipeline | None:
        """The pipeline feeding the service's read-only replicas; None when it has none."""
        if not self.m.service(service).replicas:
            return None
        return self.pipeline("replica", service)

    def forward(self, service: str) -> pl.Pipeline:
        return self.pipeline("forward", service)

    def reverse(self, service: str) -> pl.Pipeline:
        return self.pipeline("reverse", service)

    def lag(self, service: str, direction: str) -> list[pl.Lag]:
        return pl.pipeline_lag(self.pipeline(direction, service), self.transport())

    def guard_context(self) -> GuardContext:
        return GuardContext(self.m, self.state, self.stats(), self.lag)

    def routes(self) -> Any:
        """RouteService on the shared route store, with the same guards as the proxy."""
        if self._routes is None:
            from kit.manifest import proxy_config
            from strangler_proxy.service import RouteService, readiness_guard
            from strangler_proxy.store import RouteStore

            cfg = proxy_config(self.m)
            store = RouteStore.from_url(self.m.proxy.store_url)
            store.sync_services(cfg.upstreams)
            store.declare(cfg.routes)
            self._routes = RouteService(
                store,
                [
                    readiness_guard(store.services, paths=traffic_ready_paths(self.m)),
                    route_guard(self.guard_context()),
                ],
            )
        return self._routes

    def route_modes(self) -> dict[tuple[str, str], str]:
        _, routes = self.routes().store.load()
        return {r.key: str(r.mode) for r in routes}

    def close(self) -> None:
        if self._routes is not None:
            self._routes.store.close()
        if self._stats is not None and hasattr(self._stats, "close"):
            self._stats.close()
        self.state.close()
