"""The PostgreSQL fixtures give a logical-decoding-ready server and isolated databases."""

from __future__ import annotations

import os

import psycopg2
import psycopg2.extras
import pytest

pytestmark = pytest.mark.integration


def scalar(url: str, sql: str, params: tuple = ()):
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchone()[0]
    finally:
        conn.close()


def test_server_runs_with_logical_wal_and_room_for_slots(postgres_server):
    assert scalar(postgres_server.url, "SHOW wal_level") == "logical"
    assert int(scalar(postgres_server.url, "SHOW max_replication_slots")) >= 10
    assert int(scalar(postgres_server.url, "SHOW max_wal_senders")) >= 10
    if postgres_server.owned:
        assert scalar(postgres_server.url, "SHOW listen_addresses") == "127.0.0.1"
        assert scalar(postgres_server.url, "SHOW fsync") == "off"


def test_pgoutput_slot_is_created_and_dropped_over_the_replication_protocol(
    pg_url, pg_replication_url
):
    conn = psycopg2.connect(pg_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE items (id int PRIMARY KEY, name text)")
        cur.execute("CREATE PUBLICATION kit_pub FOR TABLE items")
    repl = psycopg2.connect(
        pg_replication_url, connection_factory=psycopg2.extras.LogicalReplicationConnection
    )
    try:
        with repl.cursor() as rcur:
            rcur.create_replication_slot("kit_slot", output_plugin="pgoutput")
            with conn.cursor() as cur:
                cur.execute("INSERT INTO items VALUES (1, 'one')")
                cur.execute(
                    "SELECT count(*) FROM pg_logical_slot_peek_binary_changes("
                    "'kit_slot', NULL, NULL, 'proto_version', '1', 'publication_names', 'kit_pub')"
                )
                assert cur.fetchone()[0] >= 3  # BEGIN, RELATION, INSERT, COMMIT
            rcur.drop_replication_slot("kit_slot")
    finally:
        repl.close()
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'kit_slot'")
        assert cur.fetchone()[0] == 0
    conn.close()


def test_a_slot_left_behind_does_not_block_dropping_the_test_database(postgres_server):
    url = postgres_server.create_database()
    name = url.rsplit("/", 1)[1]
    scalar(url, "SELECT lsn FROM pg_create_logical_replication_slot('leftover', 'pgoutput')")

    postgres_server.drop_database(name)

    assert (
        scalar(postgres_server.url, "SELECT count(*) FROM pg_database WHERE datname = %s", (name,))
        == 0
    )
    assert scalar(postgres_server.url, "SELECT count(*) FROM pg_replication_slots") == 0


@pytest.fixture
def second_pg_url(postgres_server):
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url.rsplit("/", 1)[1])


def test_each_test_database_is_new_empty_and_isolated(pg_url, second_pg_url):
    assert pg_url != second_pg_url
    conn = psycopg2.connect(pg_url)
    with conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE only_here (id int)")
    conn.close()

    tables = "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
    assert scalar(pg_url, tables) == 1
    assert scalar(second_pg_url, tables) == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands PostgreSQL to another user")
def test_a_server_starts_from_binaries_inside_a_folder_only_its_owner_may_enter(
    tmp_path, monkeypatch
):
    # as `make test` in a clone under root's home or `mktemp -d`: .venv is out of reach of
    # the unprivileged user PostgreSQL runs as
    from tests.fixtures.postgres import copy_install, find_postgres_bin_dir, start_postgres

    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    monkeypatch.setenv("PG_BIN_DIR", str(copy_install(find_postgres_bin_dir(), private)))
    monkeypatch.delenv("PG_URL", raising=False)
    server = start_postgres()
    try:
        assert not str(server.bin_dir).startswith(str(private))  # a reachable copy ran
        assert scalar(server.url, "SELECT 41 + 1") == 42
    finally:
        server.stop()
