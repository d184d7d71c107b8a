"""Deterministic seed data for the shop: same seed → same rows, byte for byte.

Every value (timestamps included) comes from one `random.Random(seed)` stream and a fixed base
time, and rows get explicit ids, so two runs with the same seed and plan produce identical
tables. Rows are written in batches of Core inserts (default 5,000) and only two small
per-product integer arrays are kept, so `--scale 1000` (millions of rows) runs in bounded
memory.
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Table, func, select, text

from monolith.schema import metadata

BASE_TIME = datetime(2026, 1, 1)
CURRENCY = "EUR"
CATEGORY_NAMES = (
    "Garden", "Kitchen", "Furniture", "Lighting", "Tools", "Toys", "Books", "Outdoor",
    "Garden Seating", "Planters", "Cookware", "Tableware", "Office Chairs", "Shelving",
    "Lamps", "Power Tools", "Hand Tools", "Board Games", "Fiction", "Camping",
)  # fmt: skip
# Sub-categories: index → parent index (the first eight are top level).
CATEGORY_PARENTS = {
    8: 0, 9: 0, 10: 1, 11: 1, 12: 2, 13: 2, 14: 3, 15: 4, 16: 4, 17: 5, 18: 6, 19: 7,
}  # fmt: skip
ADJECTIVES = (
    "Oak", "Rustic", "Compact", "Deluxe", "Classic", "Modern", "Vintage", "Sturdy", "Light",
    "Folding", "Nordic", "Copper", "Granite", "Bamboo", "Velvet", "Solar",
)  # fmt: skip
NOUNS = (
    "Bench", "Lamp", "Pan", "Chair", "Shelf", "Hammer", "Kettle", "Planter", "Table", "Tent",
    "Drill", "Puzzle", "Novel", "Mug", "Stool", "Lantern", "Rake", "Bowl",
)  # fmt: skip
FIRST_NAMES = (
    "Ada", "Alan", "Grace", "Linus", "Margaret", "Edsger", "Barbara", "Donald", "Frances",
    "John", "Mary Ann", "Jean Luc", "Katherine", "Tim", "Radia", "Ken", "Hedy", "Claude",
)  # fmt: skip
LAST_NAMES = (
    "Lovelace", "Turing", "Hopper", "Torvalds", "Hamilton", "Dijkstra", "Liskov", "Knuth",
    "Allen", "von Neumann", "de la Cruz", "Johnson", "Berners-Lee", "Perlman", "Thompson",
    "Lamarr", "Shannon", "van Rossum",
)  # fmt: skip
MONONYMS = ("Cher", "Prince", "Madonna", "Pelé", "Zendaya", "Björk", "Sting", "Adele")
DOMAINS = ("example.com", "Example.org", "MAIL.example.net", "shop.Example.com")
# (status, weight, reservation status)
ORDER_STATUS_MIX = (
    ("shipped", 50, "committed"),
    ("paid", 15, "held"),
    ("pending", 20, "held"),
    ("cancelled", 15, "released"),
)
SEED_TABLES = (
    "categories",
    "products",
    "customers",
    "orders",
    "order_lines",
    "reservations",
    "stock",
)


class SeedError(Exception):
    """Seeding cannot proceed (e.g. the tables already hold rows)."""


@dataclass(frozen=True)
class SeedPlan:
    """How many rows of each kind to create."""

    products: int = 1000
    customers: int = 500
    orders: int = 2000
    categories: int = len(CATEGORY_NAMES)

    def __post_init__(self) -> None:
        for name in ("products", "customers", "orders", "categories"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1")
        if self.categories > len(CATEGORY_NAMES):
            raise ValueError(f"categories: at most {len(CATEGORY_NAMES)}")

    @classmethod
    def from_scale(cls, scale: int) -> SeedPlan:
        """Scale 1 ≈ 1k products, 500 customers, 2k orders (with ~5k lines)."""
        if scale < 1:
            raise ValueError("scale: must be at least 1")
        return cls(products=1000 * scale, customers=500 * scale, orders=2000 * scale)

    @property
    def units(self) -> int:
        """Progress units: one per category, product, customer, order and stock row."""
        return self.categories + 2 * self.products + self.customers + self.orders


Progress = Callable[[int], None]


def _table(name: str) -> Table:
    return metadata().tables[name]


def _when(rng: random.Random, days_back: int, start: datetime = BASE_TIME) -> datetime:
    """A deterministic timestamp within `days_back` days before `start` (µs precision)."""
    return start - timedelta(microseconds=rng.randrange(days_back * 86_400_000_000))


def _customer_name(rng: random.Random) -> tuple[str, str]:
    roll = rng.random()
    if roll < 0.08:
        name = rng.choice(MONONYMS)
        return name, name
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    return f"{first} {last}", f"{first.split()[0]}.{last.replace(' ', '')}"


class _Writer:
    """Buffers rows per table and writes them in batches, one transaction per batch."""

    def __init__(self, engine: Engine, batch_size: int) -> None:
        self.engine = engine
        self.batch_size = batch_size
        self.buffers: dict[str, list[dict[str, Any]]] = {}
        self.counts: dict[str, int] = dict.fromkeys(SEED_TABLES, 0)

    def add(self, table: str, row: dict[str, Any]) -> None:
        buffer = self.buffers.setdefault(table, [])
        buffer.append(row)
        if len(buffer) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        pending = {name: rows for name, rows in self.buffers.items() if rows}
        if not pending:
            return
        with self.engine.begin() as connection:
            for name in SEED_TABLES:  # parents before children (order_lines → orders FK)
                rows = pending.get(name)
                if rows:
                    connection.execute(_table(name).insert(), rows)
                    self.counts[name] += len(rows)
        self.buffers = {}


def table_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            name: int(connection.scalar(select(func.count()).select_from(_table(name))) or 0)
            for name in SEED_TABLES
        }


def clear(engine: Engine) -> None:
    """Delete every row of the shop's tables (children first)."""
    with engine.begin() as connection:
        for name in reversed(SEED_TABLES):
            connection.execute(_table(name).delete())


def seed_database(
    engine: Engine,
    plan: SeedPlan | None = None,
    seed: int = 42,
    *,
    batch_size: int = 5000,
    replace: bool = False,
    progress: Progress | None = None,
) -> dict[str, int]:
    """Fill an empty (migrated) monolith database; returns rows written per table."""
    plan = plan or SeedPlan()
    if batch_size < 1:
        raise ValueError("batch_size: must be at least 1")
    existing = table_counts(engine)
    if any(existing.values()):
        if not replace:
            filled = ", ".join(f"{k}={v}" for k, v in existing.items() if v)
            raise SeedError(f"the database already holds rows ({filled}); use replace to clear")
        clear(engine)
    tick = progress or (lambda _n: None)
    rng = random.Random(seed)
    writer = _Writer(engine, batch_size)

    for chunk in _categories(rng, plan, writer):
        tick(chunk)
    prices = array("i", bytes(4 * (plan.products + 1)))
    for chunk in _products(rng, plan, writer, prices):
        tick(chunk)
    for chunk in _customers(rng, plan, writer):
        tick(chunk)
    reserved = array("i", bytes(4 * (plan.products + 1)))
    for chunk in _orders(rng, plan, writer, prices, reserved):
        tick(chunk)
    for chunk in _stock(rng, plan, writer, reserved):
        tick(chunk)
    writer.flush()
    _reset_sequences(engine)
    return dict(writer.counts)


def _every(index: int, batch: int = 1000) -> bool:
    return index % batch == 0


def _categories(rng: random.Random, plan: SeedPlan, writer: _Writer) -> Iterator[int]:
    start = BASE_TIME - timedelta(days=800)
    for index in range(plan.categories):
        parent = CATEGORY_PARENTS.get(index)
        writer.add(
            "categories",
            {
                "id": index + 1,
                "name": CATEGORY_NAMES[index],
                "parent_id": parent + 1
                if parent is not None and parent < plan.categories
                else None,
                "created_at": start + timedelta(minutes=index, microseconds=rng.randrange(10**6)),
            },
        )
    writer.flush()  # products reference categories
    yield plan.categories


def _products(
    rng: random.Random, plan: SeedPlan, writer: _Writer, prices: array[int]
) -> Iterator[int]:
    done = 0
    for product_id in range(1, plan.products + 1):
        name = f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
        created = _when(rng, 700, BASE_TIME - timedelta(days=365))
        price = rng.randrange(199, 100_000)
        prices[product_id] = price
        writer.add(
            "products",
            {
                "id": product_id,
                "sku": f"SKU-{product_id:06d}",
                "name": f"{name} {product_id}",
                "description": f"A {name.lower()} from the seed catalogue.",
                "category_id": rng.randrange(plan.categories) + 1,
                "price_cents": price,
                "currency": CURRENCY,
                "active": rng.random() >= 0.05,
                "created_at": created,
                "updated_at": created + timedelta(seconds=rng.randrange(86_400 * 30)),
            },
        )
        done += 1
        if _every(product_id):
            yield done
            done = 0
    yield done


def _customers(rng: random.Random, plan: SeedPlan, writer: _Writer) -> Iterator[int]:
    done = 0
    for customer_id in range(1, plan.customers + 1):
        full_name, local = _customer_name(rng)
        created = _when(rng, 700)
        has_phone = rng.random() < 0.7
        phone = f"+44 20 7946 {rng.randrange(10_000):04d}" if has_phone else None
        writer.add(
            "customers",
            {
                "id": customer_id,
                "email": f"{local}{customer_id}@{rng.choice(DOMAINS)}",
                "full_name": full_name,
                "phone": phone,
                "created_at": created,
                "updated_at": created + timedelta(seconds=rng.randrange(86_400)),
            },
        )
        done += 1
        if _every(customer_id):
            yield done
            done = 0
    yield done


def _orders(
    rng: random.Random,
    plan: SeedPlan,
    writer: _Writer,
    prices: array[int],
    reserved: array[int],
) -> Iterator[int]:
    statuses = [status for status, _, _ in ORDER_STATUS_MIX]
    weights = [weight for _, weight, _ in ORDER_STATUS_MIX]
    holds = {status: hold for status, _, hold in ORDER_STATUS_MIX}
    span_us = 365 * 86_400_000_000
    start = BASE_TIME - timedelta(days=365)
    line_id = 0
    done = 0
    for order_id in range(1, plan.orders + 1):
        # Increasing with the id (plus jitter), the way real orders arrive.
        created = start + timedelta(
            microseconds=span_us * (order_id - 1) // plan.orders + rng.randrange(60_000_000)
        )
        status = rng.choices(statuses, weights)[0]
        count = min(rng.randint(1, 4), plan.products)
        products = sorted(rng.sample(range(1, plan.products + 1), count))
        hold = holds[status]
        changed = created + timedelta(seconds=rng.randrange(1, 86_400 * 3))
        lines = [(product_id, rng.randint(1, 3)) for product_id in products]
        # The order row goes first: a batch flush must never write lines without their order.
        writer.add(
            "orders",
            {
                "id": order_id,
                "customer_id": rng.randrange(plan.customers) + 1,
                "status": status,
                "total_cents": sum(prices[p] * q for p, q in lines),
                "currency": CURRENCY,
                "created_at": created,
                "updated_at": created if status == "pending" else changed,
            },
        )
        for product_id, quantity in lines:
            line_id += 1
            writer.add(
                "order_lines",
                {
                    "id": line_id,
                    "order_id": order_id,
                    "product_id": product_id,
                    "quantity": quantity,
                    "unit_price_cents": prices[product_id],
                    "line_total_cents": prices[product_id] * quantity,
                },
            )
            if hold == "held":
                reserved[product_id] += quantity
            writer.add(
                "reservations",
                {
                    "id": line_id,
                    "order_id": order_id,
                    "product_id": product_id,
                    "quantity": quantity,
                    "status": hold,
                    "created_at": created,
                    "updated_at": created if hold == "held" else changed,
                },
            )
        done += 1
        if _every(order_id):
            yield done
            done = 0
    yield done


def _stock(
    rng: random.Random, plan: SeedPlan, writer: _Writer, reserved: array[int]
) -> Iterator[int]:
    done = 0
    for product_id in range(1, plan.products + 1):
        writer.add(
            "stock",
            {
                "product_id": product_id,
                "on_hand": reserved[product_id] + rng.randrange(0, 200),
                "reserved": reserved[product_id],
                "updated_at": BASE_TIME - timedelta(seconds=rng.randrange(86_400 * 30)),
            },
        )
        done += 1
        if _every(product_id):
            yield done
            done = 0
    yield done


def _reset_sequences(engine: Engine) -> None:
    """PostgreSQL: move id sequences past the explicit ids the seed wrote."""
    if engine.dialect.name != "postgresql":
        return
    with engine.begin() as connection:
        for name in SEED_TABLES:
            if name == "stock":
                continue
            connection.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                    f"COALESCE((SELECT max(id) FROM {name}), 0) + 1, false)"
                )
            )


def main(argv: list[str] | None = None) -> int:
    """`python -m monolith.seed`: what the shop's manifest names as its `seed` command (the
    kit runs it in the monolith's environment; it never imports this module itself)."""
    import argparse
    import dataclasses
    import os
    import sys
    import time

    from shoplib.db import make_engine

    parser = argparse.ArgumentParser(prog="python -m monolith.seed", description=__doc__)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("MONOLITH_DATABASE_URL"),
        help="the migrated monolith database (default: $MONOLITH_DATABASE_URL)",
    )
    parser.add_argument("--scale", type=int, default=1, help="1 ≈ 1k products, 500 customers")
    for kind in ("products", "customers", "orders"):
        parser.add_argument(f"--{kind}", type=int, help=f"exactly this many {kind} (over --scale)")
    parser.add_argument("--seed", type=int, default=42, help="same seed, same rows")
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--replace", action="store_true", help="delete existing shop rows first")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("--database-url is required (or set MONOLITH_DATABASE_URL)")
    try:
        plan = SeedPlan.from_scale(args.scale)
        sizes = {k: getattr(args, k) for k in ("products", "customers", "orders")}
        plan = dataclasses.replace(plan, **{k: v for k, v in sizes.items() if v is not None})
    except ValueError as exc:
        parser.error(f"--{exc}")
    started = time.monotonic()
    engine = make_engine(args.database_url)
    try:
        counts = seed_database(
            engine, plan, args.seed, batch_size=args.batch_size, replace=args.replace
        )
    except SeedError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"{'table':<14}{'rows':>12}")
    for table, rows in counts.items():
        print(f"{table:<14}{rows:>12,}")
    elapsed = time.monotonic() - started
    print(f"{'total':<14}{sum(counts.values()):>12,}  ({elapsed:.1f}s, seed {args.seed})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
