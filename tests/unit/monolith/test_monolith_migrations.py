"""The monolith's Alembic environment: round trip on SQLite, and the schema matches the models."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from kit import alembic_runner
from kit.cli import main
from migrations import shop_migrations
from monolith.schema import metadata
from shoplib.db import make_engine

ROOT = Path(__file__).resolve().parents[3]
TABLES = {"categories", "products", "customers", "stock", "reservations", "orders", "order_lines"}


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_round_trip_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    assert alembic_runner.current(shop_migrations("monolith"), url) is None
    alembic_runner.upgrade(shop_migrations("monolith"), url)
    assert _tables(url) == TABLES | {"alembic_version_monolith"}
    assert (
        alembic_runner.current(shop_migrations("monolith"), url)
        == alembic_runner.heads(shop_migrations("monolith"))[0]
    )
    alembic_runner.downgrade(shop_migrations("monolith"), url, "base")
    assert _tables(url) == {"alembic_version_monolith"}
    assert alembic_runner.current(shop_migrations("monolith"), url) is None
    alembic_runner.upgrade(shop_migrations("monolith"), url)
    assert _tables(url) == TABLES | {"alembic_version_monolith"}


def test_migrated_schema_matches_the_models(migrated_template: Path) -> None:
    engine = make_engine(f"sqlite:///{migrated_template}")
    try:
        with engine.connect() as connection, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SQLite cannot reflect the lower(email) index
            context = MigrationContext.configure(
                connection,
                opts={"compare_type": True, "version_table": "alembic_version_monolith"},
            )
            assert compare_metadata(context, metadata()) == []
    finally:
        engine.dispose()


def test_email_index_is_unique_on_lower_email(db_url: str) -> None:
    engine = make_engine(db_url)
    insert = text(
        "INSERT INTO customers (email, full_name, created_at, updated_at) "
        "VALUES (:email, 'X', '2026-01-01', '2026-01-01')"
    )
    try:
        with engine.begin() as connection:
            connection.execute(insert, {"email": "Ada@Example.com"})
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(insert, {"email": "ada@example.COM"})
    finally:
        engine.dispose()


def test_kit_db_commands_upgrade_show_and_downgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    runner = CliRunner(env={"KIT_MANIFEST": str(ROOT / "kit.toml")})
    up = runner.invoke(main, ["db", "upgrade", "monolith", "--url", url])
    assert up.exit_code == 0, up.output
    assert "upgraded to m0001_initial" in up.output
    current = runner.invoke(main, ["db", "current", "monolith", "--url", url])
    assert "m0001_initial" in current.output and "up to date" in current.output
    down = runner.invoke(main, ["db", "downgrade", "monolith", "--url", url])
    assert down.exit_code == 0 and "(base)" in down.output


def test_kit_db_reports_a_bad_revision_cleanly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bad.db'}"
    result = CliRunner(env={"KIT_MANIFEST": str(ROOT / "kit.toml")}).invoke(
        main, ["db", "upgrade", "monolith", "--url", url, "--revision", "zzz"]
    )
    assert result.exit_code == 1
    assert "Error:" in result.output and "zzz" in result.output
