"""`kit cdc` picks the PostgreSQL capture for a postgresql:// source: enable, snapshot, run,
status and verify work end to end (embedded log here; the Kafka path is in the crash test)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from kit.commands.cdc import cli
from kitcore.db import make_engine
from tests.integration.cdc_pg.helpers import execute, scalar
from tests.integration.cdc_pg.test_pg_kafka_processes_crash import MAPPING

pytestmark = pytest.mark.integration


def test_cli_runs_the_postgres_pipeline_from_enable_to_a_clean_verify(pg_url, tmp_path: Path):
    execute(
        pg_url,
        "CREATE TABLE products (id int PRIMARY KEY, name text, qty int, price numeric(12, 2))",
        "INSERT INTO products SELECT g, 'p' || g, g, g * 0.5 FROM generate_series(1, 40) g",
    )
    (tmp_path / "mapping.toml").write_text(MAPPING)
    target_url = f"sqlite:///{tmp_path / 'target.db'}"
    target = make_engine(target_url)
    with target.begin() as conn:
        conn.execute(
            text("CREATE TABLE catalog (id INTEGER PRIMARY KEY, title TEXT, qty INT, price TEXT)")
        )
    target.dispose()
    env = {
        "CDC_SOURCE_URL": pg_url,
        "CDC_TARGET_URL": target_url,
        "CDC_MAPPING": str(tmp_path / "mapping.toml"),
        "CDC_LOG_DIR": str(tmp_path / "log"),
        "CDC_PG_SLOT": "cli_slot",
        "KAFKA_BOOTSTRAP_SERVERS": "",
        "CDC_KAFKA_BOOTSTRAP": "",
    }
    runner = CliRunner()

    def kit(*args: str, code: int = 0) -> str:
        result = runner.invoke(cli, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output

    out = kit("enable", "products")
    assert "public.products" in out and "REPLICA IDENTITY FULL" in out
    assert scalar(pg_url, "SELECT relreplident FROM pg_class WHERE relname = 'products'") == "f"
    out = kit("snapshot", "--chunk", "15")
    assert "public.products" in out and "done" in out and "40" in out
    execute(
        pg_url,
        "UPDATE products SET qty = qty + 100 WHERE id <= 5",
        "DELETE FROM products WHERE id = 40",
    )
    kit("run", "--exit-when-idle")
    kit("verify")
    out = kit("status")
    assert "slot lsn" in out and "done 40/40" in out
    out = kit("slot", "list")
    assert "cli_slot" in out and "pgoutput" in out
    kit("slot", "drop", "nope", code=1)
    kit("disable", "products")
    assert scalar(pg_url, "SELECT count(*) FROM pg_publication_tables") == 0
