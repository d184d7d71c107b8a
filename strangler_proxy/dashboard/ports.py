"""Provider ports: where the dashboard gets parity, CDC lag and playbook state from.

The proxy knows none of those packages. Each port is a small class whose default does
nothing (an empty answer), so the dashboard works on a bare proxy; the kit injects real
providers through `bootstrap(config, parity=..., cdc=..., playbook=...)`. Providers are
called from a worker thread, so blocking (SQL, HTTP) implementations are fine, but they
should answer within a fraction of a second because the page polls every second.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EndpointParity:
    """Parity counters for one endpoint (`"GET /products/<int:id>"`)."""

    endpoint: str
    matches: int = 0
    mismatches: int = 0
    noise: int = 0
    errors: int = 0
    denied: int = 0  # both sides answered 401/403: proves nothing, never a match
    lagged: int = 0  # differed, then agreed on a re-check (CDC lag): neither match nor mismatch

    @property
    def compared(self) -> int:
        return self.matches + self.mismatches + self.noise + self.errors + self.denied + self.lagged

    @property
    def agreement(self) -> float | None:
        """Share of compared requests without a regression (None when nothing compared)."""
        usable = self.matches + self.mismatches + self.noise
        return None if usable == 0 else (self.matches + self.noise) / usable

    def to_dict(self) -> dict[str, Any]:
        agreement = self.agreement
        return {
            "endpoint": self.endpoint,
            "matches": self.matches,
            "mismatches": self.mismatches,
            "noise": self.noise,
            "errors": self.errors,
            "denied": self.denied,
            "lagged": self.lagged,
            "compared": self.compared,
            "agreement": None if agreement is None else round(agreement, 4),
        }


@dataclass(frozen=True)
class DiffItem:
    """One difference: where, what kind, the monolith's value and the service's value.

    Values are display strings (already JSON-encoded or `"<absent>"`).
    """

    where: str
    kind: str
    control: str
    candidate: str
    noise: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "where": self.where,
            "kind": self.kind,
            "control": self.control,
            "candidate": self.candidate,
            "noise": self.noise,
        }


@dataclass(frozen=True)
class Mismatch:
    """A recent mismatching request with its differences (newest first from providers)."""

    endpoint: str
    request: str
    at: float | None = None
    differences: tuple[DiffItem, ...] = ()
    error: str | None = None
    control_body: str | None = None
    candidate_body: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "request": self.request,
            "at": self.at,
            "differences": [d.to_dict() for d in self.differences],
            "error": self.error,
            "control_body": self.control_body,
            "candidate_body": self.candidate_body,
        }


@dataclass(frozen=True)
class TableLag:
    """CDC lag of one table: events not yet applied and how old the oldest pending one is."""

    table: str
    lag_events: int | None = None
    lag_seconds: float | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "lag_events": self.lag_events,
            "lag_seconds": None if self.lag_seconds is None else round(self.lag_seconds, 3),
            "detail": self.detail,
        }


@dataclass(frozen=True)
class PlaybookStep:
    """Where one service stands in its migration playbook."""

    service: str
    step: str
    index: int | None = None
    total: int | None = None
    status: str = ""
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "step": self.step,
            "index": self.index,
            "total": self.total,
            "status": self.status,
            "detail": self.detail,
        }


class ParityProvider:
    """Port: per-endpoint parity statistics and recent mismatches. Default: none known."""

    def endpoint_stats(self) -> list[EndpointParity]:
        """Counters for every endpoint parity has seen."""
        return []

    def recent_mismatches(self, endpoint: str, limit: int = 10) -> list[Mismatch]:
        """Newest first."""
        return []


class CdcProvider:
    """Port: current lag per captured table. Default: no CDC pipeline."""

    def lag(self) -> list[TableLag]:
        return []


class PlaybookProvider:
    """Port: the current playbook step per service. Default: no playbook."""

    def steps(self) -> dict[str, PlaybookStep]:
        return {}
