"""`kit cdc revision`: capture installed and removed by an Alembic revision the team owns.

Every test works on a copy of migrations/monolith in a temporary folder (named by the
manifest's `[monolith.migrations]`), never on the repository's own migrations.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from sqlalchemy import text

from kit.cli import main
from migrations import FOLDER as SHOP_MIGRATIONS
from shoplib.db import make_engine
from tests.playbook_shop import write_manifest

TRIGGERS = {"_cdc_products_ins", "_cdc_products_upd", "_cdc_products_del"}


@pytest.fixture
def migrations_copy(tmp_path: Path) -> Path:
    """A private copy of migrations/monolith: generated revisions land here only."""
    root = tmp_path / "migrations"
    shutil.copytree(
        SHOP_MIGRATIONS / "monolith",
        root / "monolith",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return root


def _revision(root: Path, *args: str) -> tuple[int, str]:
    manifest = write_manifest(root.parent, migrations=root)
    result = CliRunner(env={"KIT_MANIFEST": str(manifest)}).invoke(
        main, ["cdc", "revision", *args], catch_exceptions=False
    )
    return result.exit_code, result.output


def _config(root: Path, url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(root / "monolith"))
    config.attributes["url"] = url
    config.attributes["version_table"] = "alembic_version_monolith"
    return config


def _sqlite_triggers(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'trigger'")
            return {r[0] for r in rows}
    finally:
        engine.dispose()


def _insert_product(url: str) -> None:
    now = dt.datetime(2026, 1, 1)
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO categories (id, name, created_at) VALUES (1, 'tools', :now)"),
                {"now": now},
            )
            conn.execute(
                text(
                    "INSERT INTO products (id, sku, name, description, category_id, price_cents, "
                    "currency, active, created_at, updated_at) VALUES (7, 'SKU-7', 'hammer', '', "
                    "1, 1299, 'EUR', true, :now, :now)"
                ),
                {"now": now},
            )
    finally:
        engine.dispose()


def test_revision_is_written_on_top_of_the_current_head_and_its_path_printed(
    migrations_copy: Path,
) -> None:
    script = ScriptDirectory(str(migrations_copy / "monolith"))
    (head,) = script.get_heads()
    code, output = _revision(migrations_copy, "products", "--message", "capture products")
    assert code == 0, output
    path = Path(output.strip())
    assert path.parent == migrations_copy / "monolith" / "versions"
    assert path.is_file()
    source = path.read_text()
    assert f"down_revision: str | None = {head!r}" in source
    assert "capture products" in source
    (new_head,) = ScriptDirectory(str(migrations_copy / "monolith")).get_heads()
    assert new_head != head
    assert not any(
        p.name.endswith("capture_products.py")
        for p in (SHOP_MIGRATIONS / "monolith" / "versions").iterdir()
    )


def test_revision_refuses_a_table_the_schema_does_not_have(migrations_copy: Path) -> None:
    before = sorted((migrations_copy / "monolith" / "versions").iterdir())
    code, output = _revision(migrations_copy, "products", "no_such_table")
    assert code != 0
    assert "unknown table(s) no_such_table" in output
    assert sorted((migrations_copy / "monolith" / "versions").iterdir()) == before


def test_revision_refuses_an_unknown_app(migrations_copy: Path) -> None:
    code, output = _revision(migrations_copy, "products", "--app", "warehouse")
    assert code != 0
    assert "unknown app 'warehouse'" in output


def test_sqlite_upgrade_installs_triggers_and_downgrade_removes_them_keeping_data(
    migrations_copy: Path, tmp_path: Path
) -> None:
    code, output = _revision(migrations_copy, "products")
    assert code == 0, output
    url = f"sqlite:///{tmp_path / 'monolith.db'}"
    config = _config(migrations_copy, url)

    command.upgrade(config, "head")
    assert _sqlite_triggers(url) >= TRIGGERS
    _insert_product(url)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            changes = conn.exec_driver_sql("SELECT tbl, op, after FROM _cdc_changes").fetchall()
        assert [(c[0], c[1]) for c in changes] == [("products", "c")]
        assert '"sku":"SKU-7"' in changes[0][2]

        command.downgrade(config, "-1")
        assert not (_sqlite_triggers(url) & TRIGGERS)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT sku FROM products").scalars().all() == ["SKU-7"]
            assert conn.exec_driver_sql("SELECT count(*) FROM _cdc_changes").scalar() == 1
            assert conn.exec_driver_sql("SELECT count(*) FROM _cdc_capture_tables").scalar() == 0
    finally:
        engine.dispose()


def _replica_identity(url: str, table: str) -> str:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(
                text("SELECT relreplident FROM pg_class WHERE oid = to_regclass(:t)"), {"t": table}
            ).scalar_one()
    finally:
        engine.dispose()


@pytest.mark.integration
def test_postgres_upgrade_sets_replica_identity_full_and_downgrade_resets_it(
    migrations_copy: Path, pg_url: str
) -> None:
    code, output = _revision(migrations_copy, "products", "customers")
    assert code == 0, output
    config = _config(migrations_copy, pg_url)

    command.upgrade(config, "head")
    assert _replica_identity(pg_url, "products") == "f"
    assert _replica_identity(pg_url, "customers") == "f"
    assert _replica_identity(pg_url, "orders") == "d"

    command.downgrade(config, "-1")
    assert _replica_identity(pg_url, "products") == "d"
    assert _replica_identity(pg_url, "customers") == "d"
