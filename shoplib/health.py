"""`/healthz` (the process is alive) and `/readyz` (it can serve: the database answers and,
for an app that owns an Alembic history, its schema is at that history's head)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from flask import Blueprint, Response, jsonify
from sqlalchemy import Engine, column, select, table

from shoplib.db import database

log = logging.getLogger(__name__)


@dataclass
class SchemaAtHead:
    """Ready only once the database's Alembic version table holds the head(s) of the app's
    script folder. The heads are read once (on first use) and, once the database was seen at
    them, the check is not repeated: a migration cannot move a running database backwards
    behind the app's back, and readiness polls must stay cheap."""

    script_location: Path
    version_table: str
    _heads: frozenset[str] | None = field(default=None, init=False, repr=False)
    _at_head: bool = field(default=False, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def heads(self) -> frozenset[str]:
        with self._lock:
            if self._heads is None:
                from alembic.script import ScriptDirectory

                self._heads = frozenset(ScriptDirectory(str(self.script_location)).get_heads())
            return self._heads

    def problem(self, engine: Engine) -> str | None:
        """None when at head, else what is wrong (for the readiness answer and the log)."""
        if self._at_head:
            return None
        heads = self.heads()
        versions = table(self.version_table, column("version_num"))
        try:
            with engine.connect() as connection:
                applied = frozenset(connection.execute(select(versions.c.version_num)).scalars())
        except Exception:  # noqa: BLE001 - no version table yet: never migrated
            return f"no Alembic version table {self.version_table!r}: not migrated"
        if applied != heads:
            found = ", ".join(sorted(applied)) or "(none)"
            return f"schema at {found}, the code expects {', '.join(sorted(heads))}"
        self._at_head = True
        return None


def health_blueprint(schema: SchemaAtHead | None = None) -> Blueprint:
    blueprint = Blueprint("health", __name__)

    @blueprint.get("/healthz")
    def healthz() -> Response:
        return jsonify({"status": "ok"})

    @blueprint.get("/readyz")
    def readyz() -> tuple[Response, int]:
        try:
            database().ping()
        except Exception as error:  # readiness reports any failure, never raises
            log.warning("readiness check failed: %s", error)
            return jsonify({"status": "unavailable", "checks": {"database": "failed"}}), 503
        checks = {"database": "ok"}
        if schema is not None:
            engine = database().engine
            assert engine is not None
            problem = schema.problem(engine)
            if problem is not None:
                log.warning("not ready: %s", problem)
                checks["schema"] = problem
                return jsonify({"status": "unavailable", "checks": checks}), 503
            checks["schema"] = "ok"
        return jsonify({"status": "ready", "checks": checks}), 200

    return blueprint
