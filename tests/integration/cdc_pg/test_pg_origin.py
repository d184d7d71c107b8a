"""The sink's replication origin on PostgreSQL: created once, and a role that may not create
it gets the permission error when the origin is set up, not at the first apply."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlalchemy.exc import DBAPIError

from cdc.db import make_engine
from cdc.sink import ensure_pg_origin
from tests.integration.cdc_pg.helpers import execute, scalar

pytestmark = pytest.mark.integration


def _as_role(url: str, role: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{role}@{host}"))


def test_the_origin_is_created_once_and_found_again(pg_url):
    name = f"kit_test_{uuid.uuid4().hex[:8]}"
    engine = make_engine(pg_url)
    try:
        assert ensure_pg_origin(engine, name) == name
        assert ensure_pg_origin(engine, name) == name  # found, not created twice
        assert (
            scalar(pg_url, f"SELECT count(*) FROM pg_replication_origin WHERE roname = '{name}'")
            == 1
        )
    finally:
        execute(pg_url, f"SELECT pg_replication_origin_drop('{name}')")
        engine.dispose()


def test_a_role_without_the_origin_functions_gets_the_permission_error(pg_url):
    role = f"kit_nobody_{uuid.uuid4().hex[:8]}"
    execute(pg_url, f"CREATE ROLE {role} LOGIN")
    engine = make_engine(_as_role(pg_url, role))
    try:
        with pytest.raises(DBAPIError, match="permission denied"):
            ensure_pg_origin(engine, f"kit_test_{uuid.uuid4().hex[:8]}")
    finally:
        engine.dispose()
        execute(pg_url, f"DROP ROLE {role}")
