"""Durable migration state (SQLAlchemy; SQLite by default, any URL works).

Per service: the step it is at, that step's status, the canary stage, who owns writes of its
tables (forward CDC = "monolith", reverse CDC = "service") and the pid of the process running
a step. Every step run and rollback is a history row with timestamps, evidence (JSON), the
forced flag and the error; guard overrides and refusals go to an audit table; the CDC workers
the playbook wants running are rows the `kit up` supervisor polls.

A process killed mid-step leaves status "running" with a pid that no longer exists: `kit status`
reports it as interrupted and `kit step` (continue) or `kit rollback` (undo) pick it up, since
every step's action is idempotent.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)

from kitcore.db import make_engine

STEPS: tuple[str, ...] = (
    "schema",
    "capture",
    "verify",
    "shadow",
    "canary",
    "reads",
    "writes",
    "retire",
)

PENDING, RUNNING, DONE, FAILED, ROLLING_BACK = (
    "pending",
    "running",
    "done",
    "failed",
    "rolling-back",
)

metadata = MetaData()

services_table = Table(
    "kit_service_state",
    metadata,
    Column("service", String(100), primary_key=True),
    Column("step", String(20)),
    Column("status", String(20), nullable=False, default=PENDING),
    Column("canary_stage", Integer, nullable=False, default=-1),
    Column("write_owner", String(20), nullable=False, default="monolith"),
    Column("pid", Integer),
    Column("host", String(200)),
    Column("run_id", Integer),
    Column("updated_at", DateTime(timezone=True)),
)

history_table = Table(
    "kit_step_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("service", String(100), nullable=False, index=True),
    Column("step", String(20), nullable=False),
    Column("action", String(20), nullable=False),  # run | rollback
    Column("status", String(20), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("evidence", Text),
    Column("forced", Boolean, nullable=False, default=False),
    Column("actor", String(200), nullable=False),
    Column("pid", Integer),
    Column("error", Text),
)

audit_table = Table(
    "kit_audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("service", String(100)),
    Column("kind", String(30), nullable=False),  # forced | refused | step | rollback
    Column("message", Text, nullable=False),
    Column("detail", Text),
)

workers_table = Table(
    "kit_workers",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("desired", Boolean, nullable=False),
    Column("reason", Text),
    Column("updated_at", DateTime(timezone=True)),
)


def now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def pid_alive(pid: int | None, host: str | None) -> bool:
    """True when `pid` runs on this host (another host's pid is assumed alive)."""
    if pid is None:
        return False
    if host and host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) is not running anything
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


@dataclass(frozen=True)
class ServiceState:
    service: str
    step: str | None = None
    status: str = PENDING
    canary_stage: int = -1
    write_owner: str = "monolith"
    pid: int | None = None
    host: str | None = None
    run_id: int | None = None
    updated_at: datetime | None = None

    @property
    def index(self) -> int:
        """Index in STEPS of the step the service is at (-1 before `schema`)."""
        return STEPS.index(self.step) if self.step else -1

    @property
    def done_index(self) -> int:
        """Index of the last step that is completely done."""
        if self.step is None:
            return -1
        return self.index if self.status == DONE else self.index - 1

    @property
    def busy(self) -> bool:
        return self.status in (RUNNING, ROLLING_BACK)

    @property
    def interrupted(self) -> bool:
        """Running/rolling back but its process is gone (crashed or killed)."""
        return self.busy and not pid_alive(self.pid, self.host)

    def reached(self, step: str) -> bool:
        """The service is at `step` (running or done) or past it."""
        return self.index >= STEPS.index(step) and not (
            self.step == step and self.status in (FAILED, ROLLING_BACK)
        )


@dataclass(frozen=True)
class HistoryEntry:
    id: int
    service: str
    step: str
    action: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    evidence: dict[str, Any] = field(default_factory=dict)
    forced: bool = False
    actor: str = ""
    pid: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    service: str | None
    kind: str
    message: str
    detail: dict[str, Any] | None


class StepBusy(RuntimeError):
    """Another live process is running a step or a rollback of this service."""


class StateStore:
    """Reads and writes the playbook state; every write is one short transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        metadata.create_all(self.engine, checkfirst=True)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        with self.engine.begin() as conn:
            yield conn

    # -- services
    def get(self, service: str) -> ServiceState:
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(services_table).where(services_table.c.service == service))
                .mappings()
                .first()
            )
        if row is None:
            return ServiceState(service)
        data = dict(row)
        data["updated_at"] = _aware(data["updated_at"])
        return ServiceState(**data)

    def all(self) -> dict[str, ServiceState]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(services_table)).mappings().all()
        out = {}
        for r in rows:
            data = dict(r)
            data["updated_at"] = _aware(data["updated_at"])
            out[r["service"]] = ServiceState(**data)
        return out

    def _put(self, conn: Any, service: str, **values: Any) -> None:
        values["updated_at"] = now()
        res = conn.execute(
            update(services_table).where(services_table.c.service == service).values(**values)
        )
        if res.rowcount == 0:
            conn.execute(insert(services_table).values(service=service, **values))

    def set(self, service: str, **values: Any) -> None:
        """Update fields of a service's state (creating the row when absent)."""
        with self._tx() as conn:
            self._put(conn, service, **values)

    def begin(
        self, service: str, step: str, action: str, *, actor: str, forced: bool
    ) -> tuple[int, ServiceState]:
        """Claim the service for a step run/rollback; StepBusy when a live process has it."""
        with self._tx() as conn:
            current = self.get(service)
            if current.busy and pid_alive(current.pid, current.host) and current.pid != os.getpid():
                raise StepBusy(
                    f"{service}: step {current.step!r} is {current.status} in process "
                    f"{current.pid} on {current.host}; wait for it to finish"
                )
            started = now()
            run_id = conn.execute(
                insert(history_table).values(
                    service=service,
                    step=step,
                    action=action,
                    status=RUNNING if action == "run" else ROLLING_BACK,
                    started_at=started,
                    forced=forced,
                    actor=actor,
                    pid=os.getpid(),
                )
            ).inserted_primary_key[0]
            self._put(
                conn,
                service,
                step=step,
                status=RUNNING if action == "run" else ROLLING_BACK,
                pid=os.getpid(),
                host=socket.gethostname(),
                run_id=run_id,
            )
        return int(run_id), current

    def finish(
        self,
        run_id: int,
        service: str,
        *,
        history_status: str,
        step: str | None,
        status: str,
        evidence: Mapping[str, Any] | None = None,
        error: str | None = None,
        **extra: Any,
    ) -> None:
        """Close a history row and move the service to (`step`, `status`) in one transaction."""
        with self._tx() as conn:
            conn.execute(
                update(history_table)
                .where(history_table.c.id == run_id)
                .values(
                    status=history_status,
                    finished_at=now(),
                    evidence=json.dumps(evidence or {}, default=str),
                    error=error,
                )
            )
            self._put(conn, service, step=step, status=status, pid=None, host=None, **extra)

    def save_evidence(self, run_id: int, evidence: Mapping[str, Any]) -> None:
        """Checkpoint partial evidence of a running step (shown by `kit status` after a crash)."""
        with self._tx() as conn:
            conn.execute(
                update(history_table)
                .where(history_table.c.id == run_id)
                .values(evidence=json.dumps(evidence, default=str))
            )

    def history(
        self,
        service: str | None = None,
        limit: int = 50,
        *,
        step: str | None = None,
        action: str | None = None,
    ) -> list[HistoryEntry]:
        q = select(history_table).order_by(history_table.c.id.desc()).limit(limit)
        if service:
            q = q.where(history_table.c.service == service)
        if step:
            q = q.where(history_table.c.step == step)
        if action:
            q = q.where(history_table.c.action == action)
        with self.engine.connect() as conn:
            rows = conn.execute(q).mappings().all()
        return [
            HistoryEntry(
                id=r["id"],
                service=r["service"],
                step=r["step"],
                action=r["action"],
                status=r["status"],
                started_at=_aware(r["started_at"]),  # type: ignore[arg-type]
                finished_at=_aware(r["finished_at"]),
                evidence=json.loads(r["evidence"]) if r["evidence"] else {},
                forced=bool(r["forced"]),
                actor=r["actor"],
                pid=r["pid"],
                error=r["error"],
            )
            for r in rows
        ]

    def last_run(self, service: str, step: str, action: str = "run") -> HistoryEntry | None:
        runs = self.history(service, limit=1, step=step, action=action)
        return runs[0] if runs else None

    # -- audit
    def audit(
        self,
        kind: str,
        message: str,
        *,
        actor: str,
        service: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        with self._tx() as conn:
            conn.execute(
                insert(audit_table).values(
                    at=now(),
                    actor=actor,
                    service=service,
                    kind=kind,
                    message=message,
                    detail=json.dumps(detail, default=str) if detail is not None else None,
                )
            )

    def audit_log(self, limit: int = 50, kind: str | None = None) -> list[AuditEntry]:
        q = select(audit_table).order_by(audit_table.c.id.desc()).limit(limit)
        if kind:
            q = q.where(audit_table.c.kind == kind)
        with self.engine.connect() as conn:
            rows = conn.execute(q).mappings().all()
        return [
            AuditEntry(
                r["id"],
                _aware(r["at"]),  # type: ignore[arg-type]
                r["actor"],
                r["service"],
                r["kind"],
                r["message"],
                json.loads(r["detail"]) if r["detail"] else None,
            )
            for r in rows
        ]

    # -- workers wanted by the playbook
    def want_worker(self, name: str, desired: bool, reason: str = "") -> None:
        with self._tx() as conn:
            values = {"desired": desired, "reason": reason, "updated_at": now()}
            res = conn.execute(
                update(workers_table).where(workers_table.c.name == name).values(**values)
            )
            if res.rowcount == 0:
                conn.execute(insert(workers_table).values(name=name, **values))

    def workers(self) -> dict[str, bool]:
        with self.engine.connect() as conn:
            return {
                n: bool(d)
                for n, d in conn.execute(
                    select(workers_table.c.name, workers_table.c.desired).order_by(
                        workers_table.c.name
                    )
                )
            }
