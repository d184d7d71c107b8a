"""Config loading/validation, circuit breaker state machine, canary buckets, stats, sinks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from strangler_proxy.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from strangler_proxy.config import BreakerSettings, config_from_mapping, load_config
from strangler_proxy.policy import canary_bucket
from strangler_proxy.server import UpstreamFailure
from strangler_proxy.shadow import (
    REDACTED,
    JsonLinesSink,
    RecordedRequest,
    RecordedResponse,
    RingBufferSink,
    ShadowPair,
    redact_headers,
)
from strangler_proxy.stats import Stats

TOML = """
[proxy]
listen_port = 9000
admin_token = "0123456789abcdef0123"
store_url = "sqlite:///var/x.db"

[proxy.upstreams]
monolith = "http://127.0.0.1:5000/"
catalog = "http://127.0.0.1:5001"

[proxy.timeouts]
connect = 0.5
total = 3

[[proxy.routes]]
methods = ["GET", "HEAD"]
path = "/products/<int:id>"
service = "catalog"
sticky_cookie = "session"
"""


def test_toml_config_loads_with_routes_expanded_per_method(tmp_path: Path) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text(TOML)
    config = load_config(path, env={})
    assert config.listen_port == 9000
    assert config.upstreams["monolith"] == "http://127.0.0.1:5000"
    assert config.timeouts.total == 3
    assert [(r.method, r.sticky_cookie) for r in config.routes] == [
        ("GET", "session"),
        ("HEAD", "session"),
    ]


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text(TOML)
    config = load_config(
        path,
        env={
            "KIT_PROXY_LISTEN_PORT": "9100",
            "KIT_PROXY_TIMEOUTS_TOTAL": "7.5",
            "KIT_PROXY_SERVED_BY_HEADER": "true",
            "KIT_PROXY_UPSTREAM_CUSTOMERS": "http://127.0.0.1:5002",
        },
    )
    assert config.listen_port == 9100
    assert config.timeouts.total == 7.5
    assert config.served_by_header is True
    assert config.upstreams["customers"] == "http://127.0.0.1:5002"


def test_environment_alone_can_configure_the_proxy() -> None:
    config = load_config(None, env={"KIT_PROXY_UPSTREAM_MONOLITH": "http://127.0.0.1:5000"})
    assert config.upstreams == {"monolith": "http://127.0.0.1:5000"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"upstreams": {"catalog": "http://x"}}, "monolith"),
        ({"upstreams": {"monolith": "ftp://x"}}, "upstreams.monolith must be an http"),
        ({"upstreams": {"monolith": "http://x"}, "listen_port": 70000}, "listen_port"),
        ({"upstreams": {"monolith": "http://x"}, "admin_token": "short"}, "admin_token"),
        ({"upstreams": {"monolith": "http://x"}, "timeouts": {"total": 0}}, "timeouts.total"),
        (
            {"upstreams": {"monolith": "http://x"}, "limits": {"max_body_bytes": -1}},
            "limits.max_body_bytes",
        ),
        ({"upstreams": {"monolith": "http://x"}, "bogus": 1}, "unknown configuration key"),
        ({"upstreams": {"monolith": "http://x"}, "poll_interval": 2}, "poll_interval"),
        (
            {
                "upstreams": {"monolith": "http://x"},
                "routes": [{"path": "/a", "service": "catalog"}],
            },
            "unknown service 'catalog'",
        ),
        (
            {
                "upstreams": {"monolith": "http://x", "c": "http://y"},
                "routes": [{"path": "/a", "service": "c", "mode": "canary:150"}],
            },
            "routes\\[0\\]: canary percent must be between 0 and 100",
        ),
    ],
)
def test_bad_configuration_fails_up_front_naming_the_field(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config_from_mapping(data)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_threshold_then_half_opens_and_recovers() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerSettings(failure_threshold=3, open_seconds=5), clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state == CLOSED
    breaker.record_failure()
    assert breaker.state == OPEN and not breaker.allow()
    clock.now += 5
    assert breaker.allow() and breaker.state == HALF_OPEN
    assert not breaker.allow()  # only one probe at a time
    breaker.record_failure()
    assert breaker.state == OPEN
    clock.now += 5
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == CLOSED and breaker.allow()


def test_canary_buckets_are_deterministic_and_spread_evenly() -> None:
    assert canary_bucket("client-1") == canary_bucket("client-1")
    buckets = [canary_bucket(f"client-{i}") for i in range(20000)]
    assert all(0 <= b < 10000 for b in buckets)
    share = sum(b < 2500 for b in buckets) / len(buckets)
    assert 0.23 < share < 0.27


@pytest.mark.parametrize(
    ("exc", "in_body", "timeout", "detail"),
    [
        (TimeoutError(), False, True, "catalog did not answer in time"),
        (ConnectionRefusedError(), False, False, "catalog unreachable: ConnectionRefusedError"),
        (TimeoutError(), True, True, "catalog timed out while sending its body"),
        (
            ConnectionResetError(),
            True,
            False,
            "catalog failed while sending its body: ConnectionResetError",
        ),
    ],
)
def test_an_upstream_failure_says_which_service_failed_how_and_when(
    exc: BaseException, in_body: bool, timeout: bool, detail: str
) -> None:
    # Both proxy paths (fast and aiohttp) word their 502/504 messages with it.
    failure = UpstreamFailure.of("catalog", exc, in_body=in_body)
    assert (failure.timeout, failure.detail, str(failure)) == (timeout, detail, detail)


def test_stats_report_percentiles_and_prometheus_text() -> None:
    stats = Stats()
    for ms in range(1, 101):
        stats.observe(
            "/p/<int:id>", "catalog", 200 if ms < 100 else 502, float(ms), proxy_error=ms == 100
        )
    row = stats.snapshot()["series"][0]
    assert row["requests"] == 100 and row["errors"] == 1 and row["proxy_errors"] == 1
    assert row["latency_ms"]["p50"] in (50.0, 51.0)
    text = stats.prometheus(
        [("g", "help", {"service": "a"}, 1.0), ("g", "help", {"service": "b"}, 2)]
    )
    assert 'strangler_proxy_requests_total{route="/p/<int:id>",target="catalog"} 100' in text
    assert 'le="+Inf"} 100' in text
    assert text.count("# TYPE g gauge") == 1


def _pair() -> ShadowPair:
    headers = [("Authorization", "Bearer s3cret"), ("Cookie", "a=b"), ("X-Ok", "1")]
    return ShadowPair(
        request_id="r1",
        route="GET /p",
        service="catalog",
        at=1.0,
        request=RecordedRequest("GET", "/p", redact_headers(headers), b""),
        monolith=RecordedResponse(200, redact_headers([("Set-Cookie", "s=1")]), b"{}", 1.0),
        service_response=RecordedResponse(200, [], b"\xff", 2.0),
    )


def test_sinks_record_pairs_with_credentials_redacted(tmp_path: Path) -> None:
    ring = RingBufferSink(2)
    jsonl = JsonLinesSink(tmp_path / "pairs.jsonl")
    for _ in range(3):
        ring.record(_pair())
        jsonl.record(_pair())
    jsonl.close()
    assert len(ring.recent()) == 2 and ring.total == 3
    lines = (tmp_path / "pairs.jsonl").read_text().splitlines()
    assert len(lines) == 3
    data = json.loads(lines[0])
    assert dict(data["request"]["headers"])["Authorization"] == REDACTED
    assert dict(data["request"]["headers"])["Cookie"] == REDACTED
    assert dict(data["monolith"]["headers"])["Set-Cookie"] == REDACTED
    assert "s3cret" not in lines[0]
    assert data["service_response"]["body_b64"] == "/w=="


def test_the_shadow_log_holds_no_personal_data(tmp_path: Path) -> None:
    body = b'{"email": "ada@example.org", "phone": "+44 20 7946 0958", "card": "4111111111111111"}'
    pair = ShadowPair(
        request_id="r1",
        route="GET /u",
        service="customers",
        at=1.0,
        request=RecordedRequest(
            "GET", "/u?email=bob@example.org", [("X-Me", "c@example.org")], b""
        ),
        monolith=RecordedResponse(200, [], body, 1.0),
        service_response=RecordedResponse(200, [], body, 2.0),
    )
    jsonl = JsonLinesSink(tmp_path / "pairs.jsonl")
    jsonl.record(pair)
    jsonl.close()
    text = (tmp_path / "pairs.jsonl").read_text()
    for personal in ("example.org", "7946", "4111111111111111"):
        assert personal not in text
    assert json.loads(text)["monolith"]["body"].count("[REDACTED]") == 3
