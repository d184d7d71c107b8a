"""Small synthetic source/target schemas and a mapping for the CDC tests (no shop code)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, text

from cdc.mapping import MappingSpec, load_mapping
from kitcore.db import make_engine

SOURCE_DDL = [
    """CREATE TABLE products (
        id INTEGER PRIMARY KEY, sku TEXT, name TEXT NOT NULL, price_cents INTEGER NOT NULL,
        currency TEXT NOT NULL DEFAULT 'EUR', active INTEGER NOT NULL DEFAULT 1,
        created_at DATETIME, updated_at DATETIME)""",
    """CREATE TABLE customers (
        id INTEGER PRIMARY KEY, email TEXT NOT NULL, full_name TEXT, created_at DATETIME)""",
]

TARGET_DDL = [
    """CREATE TABLE catalog_product (
        id INTEGER PRIMARY KEY, sku VARCHAR(64) NOT NULL, title VARCHAR(200) NOT NULL,
        slug VARCHAR(250), price_amount NUMERIC(12, 2) NOT NULL, currency VARCHAR(3),
        is_listed BOOLEAN NOT NULL, created_at TIMESTAMP)""",
    """CREATE TABLE customer_account (
        id INTEGER PRIMARY KEY, email VARCHAR(200) NOT NULL UNIQUE, first_name VARCHAR(100),
        last_name VARCHAR(100), joined_at TIMESTAMP)""",
]

MAPPING_TOML = """
service = "shopfront"

[[tables]]
source = "products"
target = "catalog_product"
key = ["id"]
drop = ["updated_at"]
filter = [ { column = "sku", op = "not_null" } ]

[tables.columns]
id = "id"
sku = "sku"
title = "name"
currency = "currency"
is_listed = { from = "active", transform = "bool" }
price_amount = { from = "price_cents", transform = "scale", args = { exp = -2 } }
slug = { from = ["name", "id"], transform = "slug" }
created_at = "created_at"

[tables.reverse]
price_cents = { from = "price_amount", transform = "scale", args = { exp = 2 } }
name = "title"
active = { from = "is_listed", transform = "bool" }

[[tables]]
source = "customers"
target = "customer_account"
key = ["id"]
strict = true

[tables.columns]
id = "id"
email = { from = "email", transform = "lower" }
first_name = { from = "full_name", transform = "split", args = { sep = " ", part = 0 } }
last_name = { from = "full_name", transform = "split", args = { sep = " ", part = 1 } }
joined_at = "created_at"
"""


def make_source(path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        for ddl in SOURCE_DDL:
            conn.exec_driver_sql(ddl)
    return engine


def make_target(url_or_path: Path | str) -> Engine:
    url = url_or_path if isinstance(url_or_path, str) else f"sqlite:///{url_or_path}"
    engine = make_engine(url)
    with engine.begin() as conn:
        for ddl in TARGET_DDL:
            conn.exec_driver_sql(ddl)
    return engine


def write_mapping(path: Path) -> MappingSpec:
    path.write_text(MAPPING_TOML)
    return load_mapping(path)


def insert_product(engine: Engine, pid: int, **overrides: object) -> None:
    row = {
        "id": pid,
        "sku": f"SKU-{pid}",
        "name": f"Oak Bench {pid}",
        "price_cents": 1000 + pid,
        "currency": "EUR",
        "active": 1,
        "created_at": "2024-01-02 03:04:05.000000",
        "updated_at": "2024-01-02 03:04:05.000000",
    }
    row.update(overrides)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO products (id, sku, name, price_cents, currency, active, created_at, "
                "updated_at) VALUES (:id, :sku, :name, :price_cents, :currency, :active, "
                ":created_at, :updated_at)"
            ),
            row,
        )


class Pipeline:
    """Source + embedded log + capture worker + sink + target, all in one process."""

    def __init__(
        self,
        root: Path,
        *,
        partitions: int = 2,
        chunk: int = 5000,
        batch: int = 1000,
        create_source: bool = True,
    ) -> None:
        from cdc.capture.sqlite import CaptureConfig, CaptureWorker
        from cdc.events import topic_name
        from cdc.sink import Sink, SinkConfig
        from cdc.transport.embedded import EmbeddedLog, EmbeddedLogConfig

        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.source = (
            make_source(root / "src.db")
            if create_source
            else make_engine(f"sqlite:///{root / 'src.db'}")
        )
        self.target = make_target(root / "tgt.db")
        self.mapping = write_mapping(root / "mapping.toml")
        self.log = EmbeddedLog(EmbeddedLogConfig(root / "log", partitions=partitions))
        self.topics = tuple(topic_name("mono", "main", t) for t in self.mapping.source_tables)
        self.capture_config = CaptureConfig(
            topic_prefix="mono", snapshot_chunk=chunk, batch_size=batch
        )
        self._capture_cls = CaptureWorker
        self.capture = CaptureWorker(self.source, self.log, self.capture_config)
        self.sink = Sink(
            self.target, self.mapping, self.log, SinkConfig("g", self.topics, batch_size=batch)
        )
        self._sink_cls, self._sink_cfg = Sink, SinkConfig

    def new_sink(self, group: str = "g"):
        self.sink.close()
        self.sink = self._sink_cls(
            self.target, self.mapping, self.log, self._sink_cfg(group, self.topics)
        )
        return self.sink

    def new_capture(self):
        self.capture.close()
        self.capture = self._capture_cls(self.source, self.log, self.capture_config)
        return self.capture

    def drain(self) -> None:
        while self.capture.run_once():
            pass
        self.sink.drain(idle_polls=1)

    def verify(self):
        from cdc.verify import verify

        return verify(self.source, self.target, self.mapping, chunk=7)

    def target_rows(self, table: str = "catalog_product") -> list[tuple]:
        with self.target.connect() as conn:
            return [tuple(r) for r in conn.execute(text(f"SELECT * FROM {table} ORDER BY id"))]

    def close(self) -> None:
        self.capture.close()
        self.sink.close()
        self.source.dispose()
        self.target.dispose()
