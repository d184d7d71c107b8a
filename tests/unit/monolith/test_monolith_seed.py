"""Seed data: deterministic to the byte, consistent across modules, refuses to double-seed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, text

from kit import alembic_runner
from kit.cli import main
from migrations import shop_migrations
from monolith.schema import metadata
from monolith.seed import SEED_TABLES, SeedError, SeedPlan, seed_database, table_counts
from monolith.seed import main as seed_main
from shoplib.db import make_engine

SMALL = SeedPlan(products=150, customers=60, orders=300)


def _checksums(url: str) -> dict[str, str]:
    engine = make_engine(url)
    sums = {}
    try:
        with engine.connect() as connection:
            for name in SEED_TABLES:
                table = metadata().tables[name]
                digest = hashlib.sha256()
                for row in connection.execute(select(table).order_by(*table.primary_key)):
                    digest.update(repr(tuple(row)).encode())
                sums[name] = digest.hexdigest()
    finally:
        engine.dispose()
    return sums


def _seeded(tmp_path: Path, name: str, seed: int, batch_size: int = 5000) -> str:
    url = f"sqlite:///{tmp_path / name}"
    alembic_runner.upgrade(shop_migrations("monolith"), url)
    engine = make_engine(url)
    try:
        seed_database(engine, SMALL, seed, batch_size=batch_size)
    finally:
        engine.dispose()
    return url


def test_same_seed_gives_identical_tables_whatever_the_batch_size(tmp_path: Path) -> None:
    first = _checksums(_seeded(tmp_path, "a.db", 7))
    second = _checksums(_seeded(tmp_path, "b.db", 7, batch_size=37))
    other = _checksums(_seeded(tmp_path, "c.db", 8))
    assert first == second
    assert first != other


def test_seeded_stock_matches_held_reservations_and_order_totals(tmp_path: Path) -> None:
    url = _seeded(tmp_path, "s.db", 3)
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            mismatched = connection.scalar(
                text(
                    "SELECT count(*) FROM stock s WHERE s.reserved != COALESCE(("
                    " SELECT sum(quantity) FROM reservations r"
                    " WHERE r.product_id = s.product_id AND r.status = 'held'), 0)"
                    " OR s.on_hand < s.reserved"
                )
            )
            assert mismatched == 0
            bad_totals = connection.scalar(
                text(
                    "SELECT count(*) FROM orders o WHERE o.total_cents != ("
                    " SELECT sum(line_total_cents) FROM order_lines l WHERE l.order_id = o.id)"
                )
            )
            assert bad_totals == 0
            statuses = dict(
                connection.execute(
                    text(
                        "SELECT o.status, min(r.status) FROM orders o "
                        "JOIN reservations r ON r.order_id = o.id GROUP BY o.status"
                    )
                ).all()
            )
            assert statuses == {
                "pending": "held", "paid": "held", "shipped": "committed",
                "cancelled": "released",
            }  # fmt: skip
            names = [row[0] for row in connection.execute(text("SELECT full_name FROM customers"))]
            assert any(" " not in name for name in names)
            assert any(len(name.split()) >= 3 for name in names)
            emails = [row[0] for row in connection.execute(text("SELECT email FROM customers"))]
            assert any(email != email.lower() for email in emails)
            distinct = connection.scalar(
                select(func.count(func.distinct(func.lower(text("email"))))).select_from(
                    text("customers")
                )
            )
            assert distinct == len(emails)
    finally:
        engine.dispose()


def test_seeding_a_filled_database_is_refused_unless_replacing(tmp_path: Path) -> None:
    url = _seeded(tmp_path, "f.db", 1)
    engine = make_engine(url)
    try:
        with pytest.raises(SeedError, match="already holds rows"):
            seed_database(engine, SMALL, 1)
        counts = seed_database(engine, SMALL, 1, replace=True)
        assert counts == table_counts(engine)
    finally:
        engine.dispose()


def test_seeded_database_serves_the_api(tmp_path: Path) -> None:
    from monolith.app import create_app
    from monolith.config import MonolithConfig

    url = _seeded(tmp_path, "api.db", 5)
    app = create_app(MonolithConfig(url))
    client = app.test_client()
    try:
        customer = client.post("/customers", json={"email": "new@example.com", "name": "New"})
        assert customer.status_code == 201  # ids continue after the seeded ones
        assert customer.get_json()["id"] == SMALL.customers + 1
        assert client.get("/products?per_page=1").get_json()["total"] == SMALL.products
    finally:
        app.extensions["database"].engine.dispose()


def test_the_seed_cli_prints_row_counts_and_refuses_to_seed_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    alembic_runner.upgrade(shop_migrations("monolith"), url)
    assert seed_main(["--database-url", url, "--seed", "9", "--products", "40"]) == 0
    out = capsys.readouterr().out
    assert "products" in out and " 40\n" in out and "1,000" not in out
    assert seed_main(["--database-url", url]) == 1
    assert "already holds rows" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        seed_main(["--scale", "0", "--database-url", url])
    assert info.value.code == 2


def test_kit_seed_runs_the_manifests_seed_command_in_the_monolith_environment(
    tmp_path: Path,
) -> None:
    from tests.playbook_shop import write_manifest

    manifest = write_manifest(tmp_path)
    url = f"sqlite:///{tmp_path / 'kit-seed.db'}"
    env = {"KIT_MANIFEST": str(manifest)}
    missing = CliRunner().invoke(main, ["seed", "--url", url], env=env)
    assert missing.exit_code == 1
    assert "the manifest has no seed command for monolith" in missing.output
    manifest.write_text(
        manifest.read_text().replace(
            "[monolith]\n",
            '[monolith]\nseed = ["{python}", "-m", "monolith.seed", "--database-url", '
            '"{database_url}"]\n',
        )
    )
    result = CliRunner().invoke(
        main, ["seed", "--url", url, "--seed", "9", "--orders", "30"], env=env
    )
    assert result.exit_code == 0, result.output
    engine = make_engine(url)
    try:
        assert table_counts(engine)["orders"] == 30
    finally:
        engine.dispose()
    again = CliRunner().invoke(main, ["seed", "--url", url], env=env)
    assert again.exit_code == 1 and "exited with 1" in again.output
