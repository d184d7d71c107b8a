"""A small real shop for playbook tests: a manifest in a temp folder, a seeded SQLite monolith,
and the monolith and services served by in-process WSGI servers on free loopback ports.

Nothing is faked: the playbook talks to real databases, the real embedded log and real
HTTP servers. Threads are stopped by `Shop.close()` (fixtures call it even on failure).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from werkzeug.serving import make_server

from kitcore.net import free_port

ROOT = Path(__file__).resolve().parent.parent

MANIFEST = """
[kit]
var_dir = "var"
state_url = "sqlite:///var/kit.db"

[monolith]
url = "http://127.0.0.1:{mono}"
database_url = "sqlite:///var/monolith.db"
app = "monolith.app:create_app()"
cwd = "{root}"
metadata = "monolith.schema:metadata()"

[monolith.migrations]
script_location = "{migrations}/monolith"
version_table = "alembic_version_monolith"

[proxy]
listen = "127.0.0.1:{listen}"
admin = "127.0.0.1:{admin}"
store_url = "sqlite:///var/routes.db"
token_file = "var/admin-token"

[transport]
kind = "embedded"
log_dir = "var/cdc-log"
topic_prefix = "shop"
partitions = 2

[parity]
stats_url = "sqlite:///var/parity-stats.db"

[guards]
parity_min_samples = {min_samples}
parity_max_mismatch_rate = 0.0
cdc_max_lag_seconds = {max_lag}
canary_stages = [10, 50]
verify_attempts = 3
drain_timeout_seconds = 30

[services.catalog]
url = "http://127.0.0.1:{catalog}"
app = "extracted.catalog.app:create_app()"
cwd = "{root}"
metadata = "extracted.catalog.models:Base.metadata"
database_url = "sqlite:///var/catalog.db"
mapping = "{root}/extracted/catalog/mapping.toml"
tables = ["categories", "products"]
stop_reverse_cdc_on_retire = {stop_reverse}
endpoints = [
  {{ methods = ["GET"], path = "/categories", kind = "read" }},
  {{ methods = ["GET"], path = "/categories/<int:id>", kind = "read" }},
  {{ methods = ["GET"], path = "/products", kind = "read" }},
  {{ methods = ["GET"], path = "/products/<int:id>", kind = "read" }},
  {{ methods = ["POST"], path = "/categories", kind = "write" }},
  {{ methods = ["POST"], path = "/products", kind = "write" }},
  {{ methods = ["PATCH", "DELETE"], path = "/products/<int:id>", kind = "write" }},
]

[services.catalog.migrations]
script_location = "{migrations}/catalog"
version_table = "alembic_version_catalog"

[services.customers]
url = "http://127.0.0.1:{customers}"
app = "extracted.customers.app:create_app()"
cwd = "{root}"
metadata = "extracted.customers.models:Base.metadata"
database_url = "sqlite:///var/customers.db"
mapping = "{root}/extracted/customers/mapping.toml"
tables = ["customers"]
endpoints = [
  {{ methods = ["GET"], path = "/customers", kind = "read" }},
  {{ methods = ["GET"], path = "/customers/<int:id>", kind = "read" }},
  {{ methods = ["POST"], path = "/customers", kind = "write" }},
  {{ methods = ["PATCH", "DELETE"], path = "/customers/<int:id>", kind = "write" }},
]

[services.customers.migrations]
script_location = "{migrations}/customers"
version_table = "alembic_version_customers"
"""


def write_manifest(
    folder: Path,
    *,
    min_samples: int = 0,
    stop_reverse: bool = False,
    max_lag: float = 5.0,
    migrations: Path = ROOT / "migrations",
) -> Path:
    """The shop's manifest in `folder` (Alembic folders under `migrations`)."""
    ports = {n: free_port() for n in ("mono", "listen", "admin", "catalog", "customers")}
    text = MANIFEST.format(
        root=ROOT,
        migrations=migrations,
        min_samples=min_samples,
        max_lag=max_lag,
        stop_reverse="true" if stop_reverse else "false",
        **ports,
    )
    path = folder / "kit.toml"
    path.write_text(text)
    (folder / "var").mkdir(exist_ok=True)
    return path


def seed_monolith(url: str) -> None:
    """A small deterministic shop (50 products, 30 customers, 40 orders)."""
    from kit import alembic_runner
    from kitcore.db import make_engine
    from migrations import shop_migrations
    from monolith.seed import SeedPlan, seed_database

    alembic_runner.upgrade(shop_migrations("monolith"), url)
    small = SeedPlan(products=50, customers=30, orders=40, categories=6)
    engine = make_engine(url)
    try:
        seed_database(engine, small, 42)
    finally:
        engine.dispose()


@dataclass
class Shop:
    manifest_path: Path
    manifest: Any
    servers: list[Any] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def serve(self, name: str) -> None:
        """Start the monolith or a service app on its manifest URL."""
        from urllib.parse import urlsplit

        m = self.manifest
        if name == "monolith":
            from monolith.app import create_app
            from monolith.config import MonolithConfig

            app, url = create_app(MonolithConfig(m.monolith.database_url)), m.monolith.url
        elif name == "catalog":
            from extracted.catalog.app import create_app
            from extracted.catalog.config import CatalogConfig

            s = m.services["catalog"]
            app, url = create_app(CatalogConfig(s.database_url)), s.url
        else:
            from extracted.customers.app import create_app
            from extracted.customers.config import CustomersConfig

            s = m.services["customers"]
            app, url = create_app(CustomersConfig(s.database_url)), s.url
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        parts = urlsplit(url)
        server = make_server(parts.hostname, parts.port, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True, name=f"wsgi-{name}")
        thread.start()
        self.servers.append(server)
        self.threads.append(thread)

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()
        for thread in self.threads:
            thread.join(timeout=5)


def make_shop(folder: Path, *, serve: bool = True, **options: Any) -> Shop:
    from kit.manifest import load_manifest

    path = write_manifest(folder, **options)
    m = load_manifest(path)
    seed_monolith(m.monolith.database_url)
    shop = Shop(path, m)
    if serve:
        for name in ("monolith", "catalog", "customers"):
            shop.serve(name)
    return shop
