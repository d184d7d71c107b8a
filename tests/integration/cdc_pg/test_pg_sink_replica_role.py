"""Every PostgreSQL apply transaction sets ``session_replication_role = replica``: a sink role
that may not is refused clearly when the Sink is built (and by `kit`, without a traceback),
not mid-stream at the first apply; a role granted the parameter (PostgreSQL 15+) applies."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cdc.mapping import MappingSpec, load_mapping
from cdc.ports import OutgoingMessage
from cdc.sink import Sink, SinkConfig, SinkPermissionError, count_dead_letters, pg_origin_name
from cdc.transport.embedded import EmbeddedLog
from kit.commands.cdc import cli
from kitcore.db import make_engine
from tests.integration.cdc_pg.helpers import as_role, embedded, execute, scalar

pytestmark = pytest.mark.integration

TOPIC = "mono.public.docs"
MAPPING_TOML = """
service = "docs"
[[tables]]
source = "docs"
target = "docs"
key = ["id"]
columns = { id = "id", title = "title", author_id = "author_id" }
"""
GRANT = "GRANT SET ON PARAMETER session_replication_role TO {role}"
ORIGIN_FUNCTIONS = (
    "pg_replication_origin_oid(text)",
    "pg_replication_origin_create(text)",
    "pg_replication_origin_session_setup(text)",
    "pg_replication_origin_session_reset()",
)


@pytest.fixture
def role(pg_url: str) -> Iterator[str]:
    """A login role that owns nothing and may write the target tables, nothing more."""
    name = f"kit_sink_{uuid.uuid4().hex[:8]}"
    execute(
        pg_url,
        "CREATE TABLE authors (id int PRIMARY KEY)",
        "CREATE TABLE docs (id int PRIMARY KEY, title text, author_id int REFERENCES authors)",
        f"CREATE ROLE {name} LOGIN",
        f"GRANT CREATE ON SCHEMA public TO {name}",
        f"GRANT ALL ON authors, docs TO {name}",
    )
    try:
        yield name
    finally:
        # privileges here and on shared objects (the parameter) go with DROP OWNED
        execute(pg_url, f"DROP OWNED BY {name}", f"DROP ROLE {name}")


@pytest.fixture
def mapping(tmp_path: Path) -> MappingSpec:
    (tmp_path / "mapping.toml").write_text(MAPPING_TOML)
    return load_mapping(tmp_path / "mapping.toml")


def _publish_doc_of_a_missing_author(log: EmbeddedLog) -> None:
    """An event whose foreign key only holds once another table's event arrives."""
    value = {
        "before": None,
        "after": {"id": 1, "title": "first", "author_id": 7},
        "source": {"connector": "postgresql", "schema": "public", "table": "docs"},
        "op": "c",
        "ts_ms": 1,
    }
    producer = log.producer()
    producer.send_batch([OutgoingMessage(TOPIC, b'{"id":1}', json.dumps(value).encode())])
    producer.close()


def test_a_role_that_may_not_set_the_replica_role_is_refused_when_the_sink_is_built(
    pg_url: str, role: str, mapping: MappingSpec, tmp_path: Path
) -> None:
    log = embedded(tmp_path)
    _publish_doc_of_a_missing_author(log)
    engine = make_engine(as_role(pg_url, role))
    try:
        with pytest.raises(SinkPermissionError) as refused:
            Sink(engine, mapping, log, SinkConfig("g", (TOPIC,)))
    finally:
        engine.dispose()
    message = str(refused.value)
    assert f"role {role!r} may not set session_replication_role" in message
    assert f"`ALTER ROLE {role} SUPERUSER;`" in message
    assert "PostgreSQL 15 and later" in message and f"`{GRANT.format(role=role)};`" in message
    # refused before anything was created or applied
    assert scalar(pg_url, "SELECT to_regclass('public._cdc_sink_offsets')") is None
    assert scalar(pg_url, "SELECT count(*) FROM docs") == 0


def test_kit_cdc_run_reports_the_missing_right_without_a_traceback(
    pg_url: str, role: str, tmp_path: Path
) -> None:
    (tmp_path / "mapping.toml").write_text(MAPPING_TOML)
    env = {
        "CDC_TARGET_URL": as_role(pg_url, role),
        "CDC_MAPPING": str(tmp_path / "mapping.toml"),
        "CDC_LOG_DIR": str(tmp_path / "log"),
        "KAFKA_BOOTSTRAP_SERVERS": "",
        "CDC_KAFKA_BOOTSTRAP": "",
    }
    result = CliRunner().invoke(
        cli, ["run", "--no-capture", "--exit-when-idle"], env=env, catch_exceptions=False
    )
    assert result.exit_code == 1, result.output
    assert f"Error: the sink's database role {role!r} may not set" in result.output
    assert GRANT.format(role=role) in result.output
    assert "Traceback" not in result.output


def test_a_role_allowed_to_set_the_parameter_builds_the_sink_and_applies(
    pg_url: str, role: str, mapping: MappingSpec, tmp_path: Path
) -> None:
    version = int(scalar(pg_url, "SHOW server_version_num"))
    # The parameter is granted on its own since PostgreSQL 15 (the fixture's server is 16+);
    # an older server named by PG_URL only lets a superuser set it, the other remedy named.
    allow = GRANT.format(role=role) if version >= 150000 else f"ALTER ROLE {role} SUPERUSER"
    execute(
        pg_url,
        allow,
        *(f"GRANT EXECUTE ON FUNCTION {fn} TO {role}" for fn in ORIGIN_FUNCTIONS),
    )
    log = embedded(tmp_path)
    _publish_doc_of_a_missing_author(log)
    engine = make_engine(as_role(pg_url, role))
    origin = pg_origin_name(engine, "g")
    try:
        sink = Sink(engine, mapping, log, SinkConfig("g", (TOPIC,)))
        try:
            sink.drain(idle_polls=1)
        finally:
            sink.close()
        # applied as a replica: the foreign key was not checked row by row
        assert scalar(pg_url, "SELECT title FROM docs WHERE author_id = 7") == "first"
        assert count_dead_letters(engine, "g") == 0
        assert sink.pg_origin == origin
    finally:
        engine.dispose()
        execute(
            pg_url,
            "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin "
            f"WHERE roname = '{origin}'",
        )
