"""Client traffic: N concurrent shop clients sending a realistic mix through the proxy.

Every operation states the statuses a correct shop answers it with; anything else — a
connection error, a 5xx, or an unexpected 4xx — is a *failed* request. The mix is built so
that correct behaviour never produces an unexpected status during a live migration:

- reads target rows that nobody deletes (seeded products, categories and customers);
- orders use seeded, active, well-stocked products and are cancelled right after, so stock
  never runs out;
- a client reads or patches a row it created only once that row is `settle_s` old, the time
  CDC needs to carry it to the other side of the proxy;
- writes to a resource are only sent once `enable_writes(resource)` was called: the demo
  turns product and customer writes on after their write cut-over, so shadow parity of the
  read endpoints is not blurred by rows still in flight.

Canary routes are sticky per client (a header, else the client address). Each client
thread therefore acts for `users_per_client` virtual users, each with its own connection
from its own loopback source address (127.0.<client>.<user>) and its own `X-Client-Id`, so
a canary share is spread over many users as it would be in production.
"""

from __future__ import annotations

import math
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

STICKY_HEADER = "X-Client-Id"
RESOURCES = ("products", "customers")
WRITE_OPS = frozenset({"create_product", "patch_product", "create_customer", "patch_customer"})
_LATENCY_CAP = 200_000


@dataclass(frozen=True)
class TrafficConfig:
    """How much traffic to send: clients, bounds (time and/or count) and pacing."""

    base_url: str
    clients: int = 4
    duration_s: float | None = None
    max_requests: int | None = None
    think_s: float = 0.02
    timeout_s: float = 15.0
    settle_s: float = 3.0
    seed: int = 7
    writes: tuple[str, ...] = ()
    users_per_client: int = 16
    spread_addresses: bool = True

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {self.base_url!r}")
        if not 1 <= self.clients <= 250:
            raise ValueError("clients must be between 1 and 250")
        if not 1 <= self.users_per_client <= 250:
            raise ValueError("users_per_client must be between 1 and 250")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError("duration_s must be positive")
        if self.max_requests is not None and self.max_requests < 1:
            raise ValueError("max_requests must be at least 1")
        if self.think_s < 0 or self.timeout_s <= 0 or self.settle_s < 0:
            raise ValueError("think_s and settle_s must be >= 0, timeout_s > 0")
        unknown = set(self.writes) - set(RESOURCES)
        if unknown:
            raise ValueError(f"writes: unknown resource(s) {sorted(unknown)}; know {RESOURCES}")


@dataclass(frozen=True)
class Failure:
    """One failed request, kept for the report (the latest few only)."""

    at: float
    op: str
    method: str
    path: str
    status: int | None
    detail: str


@dataclass
class TrafficReport:
    """Counts and latency percentiles (milliseconds) of the traffic so far."""

    sent: int
    ok: int
    failed: int
    elapsed_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    by_op: dict[str, int]
    failures: list[Failure]

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def line(self) -> str:
        """One line for progress output."""
        p = "-" if self.p50_ms is None else f"{self.p50_ms:.1f}/{self.p99_ms:.1f} ms p50/p99"
        return f"{self.sent} sent, {self.failed} failed, {self.rate:.0f} req/s, {p}"


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of `values` (q in 0..100); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


class _Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = 0
        self.failed = 0
        self.by_op: dict[str, int] = {}
        self.latencies: list[float] = []
        self.failures: list[Failure] = []

    def add(self, op: str, latency_s: float, failure: Failure | None) -> int:
        with self.lock:
            self.sent += 1
            self.by_op[op] = self.by_op.get(op, 0) + 1
            if len(self.latencies) < _LATENCY_CAP:
                self.latencies.append(latency_s * 1000)
            else:  # reservoir: keep a uniform sample once the cap is reached
                slot = random.randrange(self.sent)
                if slot < _LATENCY_CAP:
                    self.latencies[slot] = latency_s * 1000
            if failure is not None:
                self.failed += 1
                self.failures.append(failure)
                del self.failures[:-50]
            return self.sent


@dataclass
class _World:
    """What the clients know about the shop: ids safe to read, order, or patch."""

    products: list[int]
    stocked: list[int]
    categories: list[int]
    customers: list[int]
    product_total: int


@dataclass
class _Own:
    """Rows one client created, with the time they were created."""

    products: list[tuple[int, float]] = field(default_factory=list)
    customers: list[tuple[int, float]] = field(default_factory=list)
    orders: list[int] = field(default_factory=list)


class TrafficError(Exception):
    """The shop could not even be explored (no products, customers or stock to use)."""


Op = Callable[["_Client"], None]


class _Client:
    def __init__(self, traffic: Traffic, index: int) -> None:
        self.traffic = traffic
        self.index = index
        self.rng = random.Random(traffic.config.seed * 1000 + index)
        self.own = _Own()
        self.next_link: str | None = None
        config = traffic.config
        count = 1 if index < 0 else config.users_per_client
        self.users = [self._user_client(index, user) for user in range(count)]
        self.http = self.users[0]

    def _user_client(self, index: int, user: int) -> httpx.Client:
        config = self.traffic.config
        transport = None
        loopback = (urlsplit(config.base_url).hostname or "").startswith("127.")
        if config.spread_addresses and loopback and index >= 0:
            transport = httpx.HTTPTransport(local_address=f"127.0.{index + 1}.{user + 2}")
        return httpx.Client(
            base_url=config.base_url,
            timeout=config.timeout_s,
            headers={STICKY_HEADER: f"user-{index}-{user}"},
            transport=transport,
        )

    def close(self) -> None:
        for client in self.users:
            client.close()

    # -- one request ---------------------------------------------------------------------
    def call(
        self, op: str, method: str, path: str, expect: tuple[int, ...], body: Any = None
    ) -> Any:
        """Send one request, classify it, return its JSON body (None on failure/no body)."""
        started = time.monotonic()
        status: int | None = None
        detail = ""
        payload: Any = None
        try:
            response = self.rng.choice(self.users).request(method, path, json=body)
            status = response.status_code
            if response.content:
                try:
                    payload = response.json()
                except ValueError:
                    payload = None
            if status not in expect:
                detail = response.text[:300]
        except httpx.HTTPError as error:
            detail = f"{type(error).__name__}: {error}"
        latency = time.monotonic() - started
        failed = status is None or status not in expect
        failure = (
            Failure(time.time(), op, method, path, status, detail) if failed else None
        )  # fmt: skip
        self.traffic._stats.add(op, latency, failure)
        return None if failed else payload

    def settled(self, rows: list[tuple[int, float]]) -> int | None:
        """A random own row old enough to have reached both sides, or None."""
        cutoff = time.monotonic() - self.traffic.config.settle_s
        ready = [row_id for row_id, created in rows if created <= cutoff]
        return self.rng.choice(ready) if ready else None

    # -- operations ----------------------------------------------------------------------
    def list_products(self) -> None:
        world = self.traffic.world
        per_page = self.rng.choice((5, 10, 20, 50))
        pages = max(1, min(5, world.product_total // per_page))
        query: dict[str, Any] = {
            "page": self.rng.randint(1, pages),
            "per_page": per_page,
            "sort": self.rng.choice(("id", "name", "price", "-price", "-created_at", "-id")),
        }
        roll = self.rng.random()
        if roll < 0.3:
            query["category_id"] = self.rng.choice(world.categories)
        elif roll < 0.45:
            query["active"] = self.rng.choice(("true", "false"))
        elif roll < 0.6:
            low = self.rng.randint(0, 5000)
            query.update(min_price=low, max_price=low + self.rng.randint(100, 20000))
        elif roll < 0.7:
            query["q"] = self.rng.choice(("an", "oak", "e", "steel", "lamp"))
        path = "/products?" + "&".join(f"{k}={v}" for k, v in query.items())
        page = self.call("list_products", "GET", path, (200,))
        if isinstance(page, dict):
            self.next_link = page.get("next")

    def follow_next(self) -> None:
        if not self.next_link:
            return self.list_products()
        link, self.next_link = self.next_link, None
        page = self.call("follow_next", "GET", link, (200,))
        if isinstance(page, dict):
            self.next_link = page.get("next")

    def get_product(self) -> None:
        product_id = self.rng.choice(self.traffic.world.products)
        self.call("get_product", "GET", f"/products/{product_id}", (200,))

    def get_missing_product(self) -> None:
        missing = 2_000_000_000 + self.rng.randint(0, 1000)
        self.call("get_missing", "GET", f"/products/{missing}", (404,))

    def list_categories(self) -> None:
        if self.rng.random() < 0.5:
            self.call("list_categories", "GET", "/categories?per_page=50", (200,))
        else:
            category = self.rng.choice(self.traffic.world.categories)
            self.call("get_category", "GET", f"/categories/{category}", (200,))

    def get_customer(self) -> None:
        customer_id = self.rng.choice(self.traffic.world.customers)
        self.call("get_customer", "GET", f"/customers/{customer_id}", (200,))

    def list_customers(self) -> None:
        query = f"per_page={self.rng.choice((10, 20))}&sort={self.rng.choice(('id', 'name'))}"
        if self.rng.random() < 0.4:
            query += "&q=" + self.rng.choice(("a", "son", "li", "e"))
        self.call("list_customers", "GET", f"/customers?{query}", (200,))

    def place_order(self) -> None:
        world = self.traffic.world
        count = self.rng.randint(1, min(3, len(world.stocked)))
        products = self.rng.sample(world.stocked, count)
        body = {
            "customer_id": self.rng.choice(world.customers),
            "lines": [{"product_id": p, "quantity": 1} for p in products],
        }
        order = self.call("place_order", "POST", "/orders", (201,), body)
        if isinstance(order, dict):
            self.own.orders.append(order["id"])
            self.call("get_order", "GET", f"/orders/{order['id']}", (200,))
            # cancelling releases the reservation: stock stays where it was
            self.call("cancel_order", "POST", f"/orders/{order['id']}/cancel", (200,))

    def invalid_product(self) -> None:
        body = {"sku": "bad sku", "name": "", "price": {"cents": -1, "currency": "EUR"}}
        self.call("invalid_write", "POST", "/products", (422,), body)

    def create_product(self) -> None:
        serial = self.traffic.serial()
        body = {
            "sku": f"TRAFFIC-{self.traffic.run_id}-{serial}",
            "name": f"Traffic item {serial}",
            "description": "made by the traffic generator",
            "category_id": self.rng.choice(self.traffic.world.categories),
            "price": {"cents": self.rng.randint(100, 50_000), "currency": "EUR"},
            "active": True,
        }
        created = self.call("create_product", "POST", "/products", (201,), body)
        if isinstance(created, dict):
            self.own.products.append((created["id"], time.monotonic()))

    def touch_product(self) -> None:
        product_id = self.settled(self.own.products)
        if product_id is None:
            return self.create_product()
        if self.rng.random() < 0.5:
            self.call("get_own_product", "GET", f"/products/{product_id}", (200,))
        else:
            body = {
                "name": f"Traffic item {product_id} v{self.rng.randint(2, 99)}",
                "price": {"cents": self.rng.randint(100, 50_000), "currency": "EUR"},
            }
            self.call("patch_product", "PATCH", f"/products/{product_id}", (200,), body)

    def create_customer(self) -> None:
        serial = self.traffic.serial()
        body = {
            "email": f"traffic.{self.traffic.run_id}.{serial}@example.com",
            "name": f"Traffic Client {serial}",
            "phone": "+44 20 7946 0000",
        }
        created = self.call("create_customer", "POST", "/customers", (201,), body)
        if isinstance(created, dict):
            self.own.customers.append((created["id"], time.monotonic()))

    def touch_customer(self) -> None:
        customer_id = self.settled(self.own.customers)
        if customer_id is None:
            return self.create_customer()
        if self.rng.random() < 0.5:
            self.call("get_own_customer", "GET", f"/customers/{customer_id}", (200,))
        else:
            body = {"name": f"Traffic Client {customer_id} v{self.rng.randint(2, 99)}"}
            self.call("patch_customer", "PATCH", f"/customers/{customer_id}", (200,), body)

    # -- loop ----------------------------------------------------------------------------
    def step(self) -> None:
        mix = list(_READ_MIX)
        writes = self.traffic.writes_enabled()
        if "products" in writes:
            mix += _PRODUCT_WRITES
        if "customers" in writes:
            mix += _CUSTOMER_WRITES
        ops, weights = zip(*mix, strict=True)
        self.rng.choices(ops, weights)[0](self)

    def run(self) -> None:
        traffic = self.traffic
        try:
            while not traffic._stop.is_set():
                if traffic._budget_exhausted():
                    break
                self.step()
                if traffic.config.think_s:
                    traffic._stop.wait(self.rng.uniform(0.5, 1.5) * traffic.config.think_s)
        finally:
            self.close()


_READ_MIX: list[tuple[Op, float]] = [
    (_Client.list_products, 20),
    (_Client.follow_next, 6),
    (_Client.get_product, 25),
    (_Client.get_missing_product, 2),
    (_Client.list_categories, 6),
    (_Client.get_customer, 12),
    (_Client.list_customers, 6),
    (_Client.place_order, 4),
    (_Client.invalid_product, 1),
]
_PRODUCT_WRITES: list[tuple[Op, float]] = [
    (_Client.create_product, 4),
    (_Client.touch_product, 6),
]
_CUSTOMER_WRITES: list[tuple[Op, float]] = [
    (_Client.create_customer, 4),
    (_Client.touch_customer, 6),
]


class Traffic:
    """Runs `config.clients` client threads until stopped or a bound is reached."""

    def __init__(self, config: TrafficConfig) -> None:
        self.config = config
        self.run_id = uuid.uuid4().hex[:8].upper()
        self.world: _World = _World([], [], [], [], 0)
        self._stats = _Stats()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._writes: set[str] = set(config.writes)
        self._lock = threading.Lock()
        self._serial = 0
        self._started = 0.0
        self._ended: float | None = None

    # -- control -------------------------------------------------------------------------
    def enable_writes(self, resource: str) -> None:
        """Start sending creates/patches of `resource` ("products" or "customers")."""
        if resource not in RESOURCES:
            raise ValueError(f"unknown resource {resource!r}; know {RESOURCES}")
        with self._lock:
            self._writes.add(resource)

    def disable_writes(self, resource: str) -> None:
        with self._lock:
            self._writes.discard(resource)

    def writes_enabled(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._writes)

    def serial(self) -> int:
        with self._lock:
            self._serial += 1
            return self._serial

    def _budget_exhausted(self) -> bool:
        config = self.config
        if config.max_requests is not None and self._stats.sent >= config.max_requests:
            return True
        return (
            config.duration_s is not None and time.monotonic() - self._started >= config.duration_s
        )

    def explore(self) -> _World:
        """Learn which seeded ids are safe to use (counted as traffic like any other request)."""
        probe = _Client(self, -1)
        try:
            products = probe.call(
                "explore", "GET", "/products?active=true&per_page=100&sort=id", (200,)
            )
            stock = probe.call("explore", "GET", "/inventory?sort=-available&per_page=100", (200,))
            categories = probe.call("explore", "GET", "/categories?per_page=100", (200,))
            customers = probe.call("explore", "GET", "/customers?per_page=100&sort=id", (200,))
        finally:
            probe.close()
        if not all(isinstance(x, dict) for x in (products, stock, categories, customers)):
            raise TrafficError("could not explore the shop: " + self.report().line())
        active = {p["id"] for p in products["items"]}
        need = max(20, 4 * self.config.clients)
        stocked = [s["product_id"] for s in stock["items"] if s["available"] >= need]
        world = _World(
            products=sorted(active),
            stocked=[p for p in stocked if p in active][:20],
            categories=[c["id"] for c in categories["items"]],
            customers=[c["id"] for c in customers["items"]],
            product_total=int(products["total"]),
        )
        if not (world.products and world.stocked and world.categories and world.customers):
            raise TrafficError(
                "the shop has nothing to exercise (need active, stocked products, "
                "categories and customers): seed it first"
            )
        return world

    def start(self) -> None:
        """Explore the shop, then start the client threads (returns at once)."""
        if self._threads:
            raise RuntimeError("traffic already started")
        self._started = time.monotonic()
        self.world = self.explore()
        for index in range(self.config.clients):
            client = _Client(self, index)
            thread = threading.Thread(target=client.run, name=f"traffic-{index}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait for the clients to finish on their own bounds; True when all finished."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for thread in self._threads:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)
        done = not any(t.is_alive() for t in self._threads)
        if done and self._ended is None:
            self._ended = time.monotonic()
        return done

    def stop(self, timeout_s: float | None = None) -> TrafficReport:
        """Ask every client to stop after its current request; wait; return the final report."""
        self._stop.set()
        wait = timeout_s if timeout_s is not None else self.config.timeout_s + 5
        self.wait(wait)
        return self.report()

    def run(self) -> TrafficReport:
        """Blocking: start, run until the configured bound, report."""
        if self.config.duration_s is None and self.config.max_requests is None:
            raise ValueError("run() needs duration_s or max_requests; use start()/stop()")
        self.start()
        self.wait()
        return self.stop()

    def report(self) -> TrafficReport:
        stats = self._stats
        with stats.lock:
            latencies = list(stats.latencies)
            sent, failed = stats.sent, stats.failed
            by_op = dict(stats.by_op)
            failures = list(stats.failures)
        end = self._ended if self._ended is not None else time.monotonic()
        return TrafficReport(
            sent=sent,
            ok=sent - failed,
            failed=failed,
            elapsed_s=max(0.0, end - self._started) if self._started else 0.0,
            p50_ms=percentile(latencies, 50),
            p95_ms=percentile(latencies, 95),
            p99_ms=percentile(latencies, 99),
            max_ms=max(latencies) if latencies else None,
            by_op=by_op,
            failures=failures,
        )
