"""`/healthz` (the process is alive) and `/readyz` (it can serve: the database answers)."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify

from shoplib.db import database

log = logging.getLogger(__name__)


def health_blueprint() -> Blueprint:
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
        return jsonify({"status": "ready", "checks": {"database": "ok"}}), 200

    return blueprint
