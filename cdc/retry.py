"""Which database errors say nothing about the event: the sink retries those, never
dead-letters them.

A lock or busy timeout, a lost connection, a serialization failure or a deadlock happens to
whatever the transaction held, not because of a value in the event: dead-lettering the events
of such a batch would skip them and leave the target diverged. Everything else the database
says (a constraint, a bad value, a missing column) is about the event and isolates it as a
dead letter.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError, DisconnectionError, SQLAlchemyError

# SQLSTATEs (PostgreSQL and the standard) that name a passing condition.
TRANSIENT_SQLSTATES = {
    "40001": "serialization failure",
    "40P01": "deadlock",
    "55P03": "lock not available (lock_timeout)",
    "57014": "statement cancelled (statement_timeout)",
    "57P01": "server shutting down",
    "57P02": "server crashed",
    "57P03": "server not accepting connections yet",
    "53300": "too many connections",
    "53400": "configuration limit exceeded",
}
TRANSIENT_SQLSTATE_CLASSES = {"08": "connection failure"}
# SQLite reports its lock waits (past the busy timeout) by message only.
SQLITE_TRANSIENT_MESSAGES = ("database is locked", "database table is locked", "is busy")


class TransientDatabaseError(RuntimeError):
    """The target database failed for a passing reason: retry the batch later, as it is."""


def sqlstate(exc: BaseException | None) -> str | None:
    """The SQLSTATE of a driver error (psycopg 3 names it `sqlstate`, psycopg2 `pgcode`)."""
    return getattr(exc, "pgcode", None) or getattr(exc, "sqlstate", None)


def transient_reason(exc: BaseException) -> str | None:
    """Why `exc` says nothing about the event (a short reason), or None when it may."""
    if isinstance(exc, DisconnectionError):
        return f"connection lost: {exc}"
    if not isinstance(exc, SQLAlchemyError):
        return None
    orig = getattr(exc, "orig", None)
    detail = str(orig if orig is not None else exc).strip().splitlines()[0][:300]
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return f"connection lost: {detail}"
    state = sqlstate(orig)
    if state:
        label = TRANSIENT_SQLSTATES.get(state) or TRANSIENT_SQLSTATE_CLASSES.get(state[:2])
        return f"{label} ({state}): {detail}" if label else None
    module = type(orig).__module__ if orig is not None else ""
    name = type(orig).__name__ if orig is not None else ""
    if module.startswith("sqlite3"):
        lowered = detail.lower()
        if name == "OperationalError" and any(m in lowered for m in SQLITE_TRANSIENT_MESSAGES):
            return f"target database busy: {detail}"
        return None
    if name in ("OperationalError", "InterfaceError"):
        # a PostgreSQL driver error without a SQLSTATE comes from the connection itself
        return f"connection failure: {detail}"
    return None


def rejection_reason(exc: SQLAlchemyError) -> str:
    """The dead letter's reason for an error about the event; a transient one is re-raised
    (it says nothing about the event)."""
    if transient_reason(exc):
        raise exc
    orig = getattr(exc, "orig", None) or exc
    return f"database rejected the event: {orig.__class__.__name__}: {orig}"


@dataclass
class Backoff:
    """Exponential backoff between retries of one batch: first, doubling, capped."""

    first_s: float = 0.05
    max_s: float = 5.0
    attempts: int = 0
    reason: str = ""
    since: float = 0.0
    next_at: float = 0.0
    delay_s: float = 0.0

    def failed(self, reason: str) -> None:
        now = time.monotonic()
        if not self.attempts:
            self.since = now
        self.attempts += 1
        self.reason = reason
        self.delay_s = min(self.max_s, self.first_s * 2 ** (self.attempts - 1))
        self.next_at = now + self.delay_s

    def wait_s(self) -> float:
        return max(0.0, self.next_at - time.monotonic())

    def describe(self) -> str:
        waited = time.monotonic() - self.since
        return f"retrying (attempt {self.attempts}, {waited:.1f}s): {self.reason}"
