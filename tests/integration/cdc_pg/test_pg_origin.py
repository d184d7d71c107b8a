"""The sink's replication origin on PostgreSQL: created once, and a role that may not create
it gets a clear permission error when the origin is set up, not at the first apply."""

from __future__ import annotations

import uuid

import pytest

from cdc.sink import SinkPermissionError, ensure_pg_origin
from kitcore.db import make_engine
from tests.integration.cdc_pg.helpers import as_role, execute, scalar

pytestmark = pytest.mark.integration


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
    engine = make_engine(as_role(pg_url, role))
    try:
        with pytest.raises(SinkPermissionError, match="may not use the replication origin"):
            ensure_pg_origin(engine, f"kit_test_{uuid.uuid4().hex[:8]}")
    finally:
        engine.dispose()
        execute(pg_url, f"DROP ROLE {role}")
