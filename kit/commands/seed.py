"""`kit seed`: fill the monolith database with deterministic shop data."""

from __future__ import annotations

import os
import sys
import time

import click
from sqlalchemy.exc import SQLAlchemyError

from kit import alembic_runner
from kitcore.db import make_engine
from migrations import shop_migrations
from monolith.seed import SeedError, SeedPlan, seed_database


@click.command("seed")
@click.option(
    "--scale", type=click.IntRange(min=1), default=1, show_default=True,
    help="1 ≈ 1k products, 500 customers, 2k orders; rows grow linearly.",
)  # fmt: skip
@click.option("--seed", "seed_value", type=int, default=42, show_default=True,
              help="Random seed: the same seed gives the same rows.")  # fmt: skip
@click.option("--url", help="Monolith database URL (default: $MONOLITH_DATABASE_URL or var/).")
@click.option("--batch-size", type=click.IntRange(min=1), default=5000, show_default=True)
@click.option("--replace", is_flag=True, help="Delete existing shop rows first.")
@click.option("--migrate/--no-migrate", default=True, show_default=True,
              help="Upgrade the schema to head before seeding.")  # fmt: skip
def cli(
    scale: int, seed_value: int, url: str | None, batch_size: int, replace: bool, migrate: bool
) -> None:
    """Seed the monolith database (deterministic; bounded memory at any scale)."""
    target = url or os.environ.get("MONOLITH_DATABASE_URL") or "sqlite:///var/monolith.db"
    plan = SeedPlan.from_scale(scale)
    started = time.monotonic()
    engine = make_engine(target)
    try:
        if migrate:
            alembic_runner.upgrade(shop_migrations("monolith"), target)
        with click.progressbar(
            length=plan.units, label="seeding", file=sys.stderr, show_eta=True
        ) as bar:
            counts = seed_database(
                engine, plan, seed_value, batch_size=batch_size, replace=replace,
                progress=bar.update,
            )  # fmt: skip
    except SeedError as error:
        raise click.ClickException(str(error)) from error
    except SQLAlchemyError as error:
        raise click.ClickException(f"database error: {error}") from error
    finally:
        engine.dispose()
    elapsed = time.monotonic() - started
    click.echo(f"{'table':<14}{'rows':>12}")
    for table, rows in counts.items():
        click.echo(f"{table:<14}{rows:>12,}")
    click.echo(f"{'total':<14}{sum(counts.values()):>12,}  ({elapsed:.1f}s, seed {seed_value})")
