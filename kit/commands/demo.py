"""`kit demo`: the whole migration live (kit/runtime/demo_flow.py), or `--tour` of the monolith.

`run_tour(base_url, echo)` is the reusable part: it drives the shop through HTTP only, checks
every answer, and raises `TourFailed` on the first misbehaving step. Later demos (proxy,
migration) reuse it against whatever base URL fronts the shop.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import httpx

from kit.appenv import app_variables
from kit.manifest import load_manifest
from kit.runtime.demo_manifest import repo_manifest
from kit.runtime.plan import gunicorn_argv
from kit.runtime.seeding import SeedFailed, seed_monolith
from kitcore.net import free_port, wait_http_ok

Echo = Callable[[str], None]


class TourFailed(Exception):
    """A tour step got an answer the contract does not allow."""


@dataclass
class _Client:
    http: httpx.Client
    echo: Echo
    steps: int = 0

    def call(self, method: str, path: str, expect: int, body: Any = None, note: str = "") -> Any:
        """One request: print it, check the status, print a summary, return the JSON."""
        self.steps += 1
        shown = f" {body}" if body is not None else ""
        self.echo(f"\n[{self.steps}] {note}" if note else f"\n[{self.steps}]")
        self.echo(f"  → {method} {path}{shown}")
        response = self.http.request(method, path, json=body)
        payload = response.json() if response.content else None
        self.echo(f"  ← {response.status_code} {summarize(payload)}")
        if response.status_code != expect:
            raise TourFailed(
                f"{method} {path}: expected {expect}, got {response.status_code}: {payload}"
            )
        return payload


def summarize(payload: Any) -> str:
    """A one-line summary of a response body, readable in a terminal."""
    if payload is None:
        return "(no body)"
    if isinstance(payload, dict) and "error" in payload:
        error = payload["error"]
        fields = f" fields={error['fields']}" if error.get("fields") else ""
        return f"error {error['code']}: {error['message']}{fields}"
    if isinstance(payload, dict) and "items" in payload:
        names = ", ".join(
            str(item.get("name", item.get("product_id", item.get("id"))))
            for item in payload["items"][:3]
        )
        return (
            f"page {payload['page']} of {payload['total']} total; first: {names}; "
            f"next={payload['next']}"
        )
    if isinstance(payload, dict) and "rows" in payload:
        top = "; ".join(
            f"{row.get('category_name', row.get('name'))}: {row['revenue']['cents'] / 100:.2f}"
            for row in payload["rows"][:3]
        )
        return f"{len(payload['rows'])} rows; top: {top}"
    if isinstance(payload, dict) and "status" in payload and "lines" in payload:
        return (
            f"order {payload['id']} {payload['status']}, {len(payload['lines'])} line(s), "
            f"total {payload['total']['cents'] / 100:.2f} {payload['total']['currency']}"
        )
    text = str(payload)
    return text if len(text) <= 160 else text[:157] + "..."


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise TourFailed(message)


def _stocked_products(client: _Client, count: int) -> list[tuple[int, int]]:
    """(product_id, available) of `count` active products with the most available stock."""
    page = client.call(
        "GET", "/inventory?sort=-available&per_page=50", 200, note="best-stocked products"
    )
    found: list[tuple[int, int]] = []
    for row in page["items"]:
        product = client.http.get(f"/products/{row['product_id']}")
        if product.status_code == 200 and product.json()["active"] and row["available"] > 3:
            found.append((row["product_id"], row["available"]))
        if len(found) == count:
            return found
    raise TourFailed("no active product with stock to order")


def run_tour(base_url: str, echo: Echo) -> int:
    """Drive the shop's API through HTTP, checking each answer; returns the number of requests."""
    with httpx.Client(base_url=base_url, timeout=10.0) as http:
        client = _Client(http, echo)
        first = client.call("GET", "/products?per_page=5", 200, note="list products, page 1")
        _check(len(first["items"]) == 5 and first["next"], "page 1 should be full with a next link")
        second = client.call("GET", first["next"], 200, note="follow the next link")
        _check(second["page"] == 2, "the next link should lead to page 2")
        _check(
            {p["id"] for p in first["items"]}.isdisjoint(p["id"] for p in second["items"]),
            "pages must not overlap",
        )
        filtered = client.call(
            "GET", "/products?category_id=3&active=true&sort=-price&per_page=3", 200,
            note="filter: category 3, active, most expensive first",
        )  # fmt: skip
        prices = [p["price"]["cents"] for p in filtered["items"]]
        _check(prices == sorted(prices, reverse=True), "prices should be descending")
        _check(all(p["category_id"] == 3 for p in filtered["items"]), "category filter ignored")

        suffix = time.time_ns() % 1_000_000_000
        customer = client.call(
            "POST", "/customers", 201,
            {"email": f"Tour.Guest{suffix}@Example.com", "name": "  Tour   Guest "},
            note="create a customer (name is stored stripped)",
        )  # fmt: skip
        _check(customer["name"] == "Tour   Guest", "name should be stripped")

        (product_id, available), (short_id, short_available) = _stocked_products(client, 2)
        order = client.call(
            "POST", "/orders", 201,
            {"customer_id": customer["id"], "lines": [{"product_id": product_id, "quantity": 2}]},
            note="place an order: priced from the catalog, stock reserved",
        )  # fmt: skip
        stock = client.call("GET", f"/inventory/{product_id}", 200, note="stock after the order")
        _check(stock["available"] == available - 2, "the order should reserve 2 units")

        orders_before = client.call("GET", "/orders?per_page=1", 200, note="count orders")["total"]
        refused = client.call(
            "POST", "/orders", 409,
            {
                "customer_id": customer["id"],
                "lines": [
                    {"product_id": product_id, "quantity": 1},
                    {"product_id": short_id, "quantity": min(short_available + 1, 10_000)},
                ],
            },
            note="an order one line of which is short: refused as a whole",
        )  # fmt: skip
        _check(refused["error"]["code"] == "insufficient_stock", "expected insufficient_stock")
        _check(str(short_id) in refused["error"]["fields"], "the short product must be named")
        after = client.call("GET", f"/inventory/{product_id}", 200, note="nothing was reserved")
        _check(after["available"] == available - 2, "a refused order must reserve nothing")
        orders_after = client.call("GET", "/orders?per_page=1", 200, note="no order was written")
        _check(orders_after["total"] == orders_before, "a refused order must not be stored")

        cancelled = client.call(
            "POST", f"/orders/{order['id']}/cancel", 200, note="cancel: releases the reservation"
        )
        _check(cancelled["status"] == "cancelled", "order should be cancelled")
        released = client.call("GET", f"/inventory/{product_id}", 200, note="stock released")
        _check(released["available"] == available, "cancellation should release the stock")
        client.call("POST", f"/orders/{order['id']}/pay", 409, note="paying a cancelled order: 409")

        report = client.call(
            "GET", "/reports/sales-by-category?from=2025-01-01&to=2026-12-31", 200,
            note="sales per category (orders joined with the catalog through services)",
        )  # fmt: skip
        _check(len(report["rows"]) > 0, "the seeded shop has sales")
        revenues = [row["revenue"]["cents"] for row in report["rows"]]
        _check(revenues == sorted(revenues, reverse=True), "rows sorted by revenue")

        invalid = client.call(
            "POST", "/products", 422, {"sku": "bad sku", "price": {"cents": -1}},
            note="invalid input: every bad field is named",
        )  # fmt: skip
        _check("sku" in invalid["error"]["fields"], "the bad sku should be named")
        client.call("GET", "/orders/999999999", 404, note="unknown id")
        return client.steps


# --- processes ------------------------------------------------------------------------------------


def start_gunicorn(
    app_spec: str,
    port: int,
    env: Mapping[str, str],
    workers: int = 2,
    log_path: Path | None = None,
    threads: int = 4,
    python: str = sys.executable,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start gunicorn on 127.0.0.1:`port` as a child process (stop it with `stop_process`);
    the same gthread + keep-alive command line as `kit up`."""
    command = gunicorn_argv(
        python, app_spec, f"127.0.0.1:{port}", workers, threads, "--graceful-timeout", "5"
    )
    output = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            command, env={**os.environ, **env}, cwd=cwd, stdout=output, stderr=subprocess.STDOUT
        )
    finally:
        if log_path:
            output.close()  # type: ignore[union-attr]


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM by pid (gunicorn stops its workers gracefully); SIGKILL if it does not exit."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout_s)


def prepare_monolith_db(url: str, scale: int = 1, seed: int = 42) -> str:
    """Migrate and seed a shop database through the repository manifest's `seed` command
    (in the monolith's environment); the command's last output line (its row total)."""
    m = load_manifest(repo_manifest())
    output = seed_monolith(
        m, ("--scale", str(scale), "--seed", str(seed)), database_url=url, capture=True
    )
    return (output.strip().splitlines() or [""])[-1]


def run_monolith_tour(workdir: str, scale: int) -> None:
    """The monolith alone under gunicorn, toured through its API (`kit demo --tour`)."""
    folder = Path(workdir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    database = folder / "monolith.db"
    for stale in (database, *(folder.glob("monolith.db-*"))):
        stale.unlink(missing_ok=True)
    url = f"sqlite:///{database}"
    click.echo(f"• database {database}: migrating and seeding (scale {scale})")
    try:
        click.echo("  " + prepare_monolith_db(url, scale))
    except SeedFailed as exc:
        raise click.ClickException(str(exc)) from None
    monolith = load_manifest(repo_manifest()).monolith
    rt = monolith.runtime
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = folder / "gunicorn.log"
    click.echo(
        f"• starting the monolith: gunicorn, 2 workers x 4 threads, {base_url} (log {log_path})"
    )
    process = start_gunicorn(
        monolith.app or "monolith.app:create_app()",
        port,
        app_variables(rt) | {monolith.database_variable: url},
        log_path=log_path,
        python=rt.python,
        cwd=rt.cwd,
    )
    try:
        wait_http_ok(f"{base_url}/readyz", timeout_s=30)
        click.echo(f"• up (pid {process.pid}); touring the API")
        steps = run_tour(base_url, click.echo)
    except (TourFailed, TimeoutError, httpx.HTTPError) as error:
        raise click.ClickException(f"demo failed: {error}") from error
    finally:
        stop_process(process)
        click.echo(f"\n• monolith stopped (pid {process.pid})")
    click.echo(f"• tour complete: {steps} requests, every answer as the contract says")


@click.command("demo")
@click.option("--dir", "workdir", default="var/demo", show_default=True, type=click.Path(),
              help="Fresh folder for the demo's manifest, databases, logs (emptied first).")  # fmt: skip
@click.option("--service", "services", multiple=True,
              help="Migrate only these services, in this order (default: catalog, customers).")  # fmt: skip
@click.option("--clients", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Concurrent client threads sending traffic through the proxy.")  # fmt: skip
@click.option("--kafka", "kafka_bootstrap", default=None, metavar="HOST:PORT",
              help="Use this Kafka instead of the embedded event log.")  # fmt: skip
@click.option("--database-url", "database_urls", multiple=True, metavar="NAME=URL",
              help="Database of monolith / catalog / customers (default: SQLite in --dir).")  # fmt: skip
@click.option("--tour", is_flag=True, help="Only boot the monolith and tour its API.")
@click.option("--scale", type=click.IntRange(min=1), default=1, show_default=True,
              help="Seed scale of --tour.")  # fmt: skip
def cli(
    workdir: str,
    services: tuple[str, ...],
    clients: int,
    kafka_bootstrap: str | None,
    database_urls: tuple[str, ...],
    tour: bool,
    scale: int,
) -> None:
    """A whole migration, live: traffic flows while catalog then customers move to services.

    Starts everything on free loopback ports in a fresh folder, sends continuous client
    traffic through the proxy, walks each service through every playbook step to `retire`
    narrating the evidence, prints a summary, stops everything. Exit code 0 only with zero
    failed client requests, every step done and a clean verifier.
    """
    if tour:
        run_monolith_tour(workdir, scale)
        return
    import warnings

    from kit.runtime.demo_flow import DemoConfig, format_summary, run_demo

    # SQLAlchemy notes it cannot reflect an expression index while a step drains CDC in
    # process; harmless, and noise in the middle of the narration.
    warnings.filterwarnings("ignore", message="Skipped unsupported reflection")

    urls: dict[str, str] = {}
    for item in database_urls:
        name, sep, url = item.partition("=")
        if not sep or not name or not url:
            raise click.BadParameter(
                f"expected NAME=URL, got {item!r}", param_hint="--database-url"
            )
        urls[name] = url
    try:
        config = DemoConfig(
            folder=Path(workdir),
            services=services or ("catalog", "customers"),
            clients=clients,
            kafka_bootstrap=kafka_bootstrap,
            database_urls=urls,
            echo=click.echo,
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    result = run_demo(config)
    for line in format_summary(result):
        click.echo(line)
    if not result.ok:
        raise SystemExit(1)
