"""The re-check against CDC lag, end to end: the real proxy in shadow mode between two tiny
HTTP apps, the candidate seeing the control's writes ~0.3 s late (as CDC would). Clients keep
writing and read right after: the differences are counted `lagged`, the parity gate passes;
a real regression still counts as a mismatch."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from proxy_helpers import ProxyThread, admin_client, base_config, wait_for
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from kit.playbook.guards import parity_rate
from kit.playbook.proxy import ParityJudge, ParityShadowSink
from parity.compare import Comparator
from parity.recording import MemoryStatsStore, PairSink
from parity.rules import RuleSet

LAG_S = 0.3
ITEMS = "GET /items/<int:id>"
PRICES = "GET /prices/<int:id>"


class Truth:
    """The monolith's rows, and what the service's CDC copy shows LAG_S later."""

    def __init__(self) -> None:
        self.history: dict[int, list[tuple[float, int]]] = defaultdict(lambda: [(0.0, 0)])
        self.lock = threading.Lock()

    def write(self, item: int) -> None:
        with self.lock:
            self.history[item].append((time.monotonic(), self.history[item][-1][1] + 1))

    def now(self, item: int) -> int:
        with self.lock:
            return self.history[item][-1][1]

    def lagged(self, item: int) -> int:
        cutoff = time.monotonic() - LAG_S
        with self.lock:
            return [v for t, v in self.history[item] if t <= cutoff][-1]


def app(truth: Truth, candidate: bool) -> Callable[..., Any]:
    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        req = Request(environ)
        kind, _, raw = req.path.strip("/").partition("/")
        item = int(raw) if raw.isdigit() else -1
        if kind == "items" and req.method == "POST" and not candidate:
            truth.write(item)
            body: dict[str, Any] = {"id": item, "stock": truth.now(item)}
        elif kind == "items":
            body = {"id": item, "stock": truth.lagged(item) if candidate else truth.now(item)}
        elif kind == "prices":
            body = {"id": item, "cents": 1001 if candidate else 1000}  # a real regression
        else:
            return Response("not found", 404)(environ, start_response)
        return Response(json.dumps(body), content_type="application/json")(environ, start_response)

    return wsgi


@pytest.fixture
def apps() -> Iterator[tuple[str, str]]:
    truth = Truth()
    servers = []
    for candidate in (False, True):
        server = make_server("127.0.0.1", 0, app(truth, candidate), threaded=True)
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        servers.append(server)
    yield tuple(f"http://127.0.0.1:{s.server_port}" for s in servers)  # type: ignore[misc]
    for server in servers:
        server.shutdown()
        server.server_close()


def test_lagging_copy_is_counted_lagged_and_a_regression_still_a_mismatch(
    tmp_path: Path, apps: tuple[str, str], proxy_factory: Callable[..., ProxyThread]
) -> None:
    control, candidate = apps
    stats = MemoryStatsStore()
    rules = RuleSet.from_dict({"endpoints": [{"endpoint": ITEMS}, {"endpoint": PRICES}]})
    pair_sink = PairSink(stats, Comparator(rules))
    sink = ParityShadowSink(pair_sink)
    config = base_config(
        tmp_path,
        {"monolith": control, "catalog": candidate},
        routes=[
            {"methods": ["GET", "POST"], "path": "/items/<int:id>", "service": "catalog"},
            {"methods": ["GET"], "path": "/prices/<int:id>", "service": "catalog"},
        ],
        shadow={  # as the [shadow] table of a proxy config file
            "jsonl_path": None,
            "recheck_after_s": 0.6,
            "recheck_max_in_flight": 64,
            "recheck_per_second": 50,
        },
    )
    proxy = proxy_factory(config, shadow_sink=sink, shadow_judge=ParityJudge(pair_sink))
    with admin_client(proxy) as admin:
        for path in ("/items/<int:id>", "/prices/<int:id>"):
            r = admin.put("/admin/routes", json={"method": "GET", "path": path, "mode": "shadow"})
            assert r.status_code == 200, r.text
    started = time.monotonic()
    with httpx.Client(base_url=proxy.url, trust_env=False, timeout=10) as client:
        for item in range(30):  # clients keep writing: every read follows its write at once
            assert client.post(f"/items/{item}").status_code == 200
            answer = client.get(f"/items/{item}")
            assert answer.json()["stock"] == 1  # the client always gets the monolith's answer
            client.get(f"/items/{100 + item}")  # never written: agrees at once
            if item % 6 == 0:
                client.get(f"/prices/{item}")
        assert time.monotonic() - started < 5  # no client waited for a re-check
        wait_for(
            lambda: stats.stats_for(ITEMS).requests >= 60 and stats.stats_for(PRICES).requests >= 5,
            timeout=15,
        )
    items, prices = stats.stats_for(ITEMS), stats.stats_for(PRICES)
    assert items.lagged >= 25, items  # reads right after a write: the copy lagged
    assert items.mismatches == 0 and items.errors == 0, items.last_mismatches
    assert items.matches + items.lagged == items.requests == 60
    samples, rate = parity_rate(items)
    assert samples == items.matches and rate == 0.0  # the zero-mismatch gate passes
    assert (prices.mismatches, prices.lagged) == (5, 0)  # the regression stands
    assert prices.last_mismatches[0]["differences"][0]["path"] == "$.cents"
    counters = proxy.runtime.core.stats.counters
    assert counters["shadow_lagged"] == items.lagged
    assert counters["shadow_recheck_mismatches"] == 5
    assert counters.get("shadow_recheck_dropped", 0) == 0
