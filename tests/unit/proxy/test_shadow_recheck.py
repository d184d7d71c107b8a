"""The shadow dispatcher's re-check policy, with a fake transport (the injected session
factory), a fake judge and a collecting sink: lag is told apart from a regression, unsafe
methods are never re-sent, and re-checks are bounded (dropped and counted over the limits)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from multidict import CIMultiDict
from yarl import URL

from strangler_proxy.config import ProxyConfig, ShadowSettings
from strangler_proxy.shadow import (
    RECHECK_DROPPED,
    RECHECK_LAGGED,
    RECHECK_MISMATCH,
    RecordedRequest,
    RecordedResponse,
    ShadowJudge,
    ShadowPair,
    ShadowSink,
)
from strangler_proxy.shadow_dispatch import RECHECK_HEADER, ShadowDispatcher, ShadowJob
from strangler_proxy.stats import Stats

MONO = "http://mono.test"
SVC = "http://svc.test"


class FakeResponse:
    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body
        self.headers = CIMultiDict({"Content-Type": "application/json"})
        self.content = self

    async def iter_chunked(self, _size: int) -> AsyncIterator[bytes]:
        yield self.body

    async def __aenter__(self) -> FakeResponse:
        return self

    async def __aexit__(self, *_exc: Any) -> None:
        return None


class FakeSession:
    """Answers each side from a script: a list of bodies per base URL, consumed in order
    (the last one repeats). Records every request sent."""

    def __init__(self, script: dict[str, list[bytes]]) -> None:
        self.script = {k: list(v) for k, v in script.items()}
        self.sent: list[tuple[str, str, dict[str, str]]] = []

    def request(self, method: str, url: URL, **kwargs: Any) -> FakeResponse:
        base = f"{url.scheme}://{url.host}"
        self.sent.append((method, base, dict(kwargs.get("headers") or {})))
        bodies = self.script[base]
        body = bodies.pop(0) if len(bodies) > 1 else bodies[0]
        return FakeResponse(200, body)

    def to(self, base: str) -> list[tuple[str, str, dict[str, str]]]:
        return [s for s in self.sent if s[1] == base]

    async def close(self) -> None:
        return None


class BodiesDiffer(ShadowJudge):
    def __init__(self) -> None:
        self.asked = 0

    def differs(self, pair: ShadowPair) -> bool:
        self.asked += 1
        assert pair.service_response is not None
        return pair.monolith.body != pair.service_response.body


class Collect(ShadowSink):
    def __init__(self) -> None:
        self.pairs: list[ShadowPair] = []

    def record(self, pair: ShadowPair) -> None:
        self.pairs.append(pair)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def dispatcher(
    session: FakeSession,
    judge: ShadowJudge | None = None,
    clock: Callable[[], float] | None = None,
    **shadow: Any,
) -> tuple[ShadowDispatcher, Collect, Stats]:
    settings = ShadowSettings(jsonl_path=None, **{"recheck_after_s": 0.05, **shadow})
    config = ProxyConfig(upstreams={"monolith": MONO, "catalog": SVC}, shadow=settings)
    sink, stats = Collect(), Stats()
    extra = {"clock": clock} if clock is not None else {}
    d = ShadowDispatcher(config, sink, stats, lambda: session, judge, **extra)  # type: ignore[arg-type,return-value]
    return d, sink, stats


def job(d: ShadowDispatcher, method: str = "GET", monolith_body: bytes = b'{"v":2}') -> ShadowJob:
    path = "/products/1"
    return ShadowJob(
        URL(SVC + path),
        method,
        CIMultiDict({"X-Request-ID": "r1"}),
        b"",
        "catalog",
        {
            "request_id": "r1",
            "route": f"{method} /products/<int:id>",
            "at": 0.0,
            "request": RecordedRequest(method, path, [], b""),
            "monolith": RecordedResponse(200, [], monolith_body, 1.0),
        },
        control=(URL(MONO + path), CIMultiDict()) if d.wants_recheck(method) else None,
    )


async def until(done: Callable[[], bool], timeout: float = 2.0) -> None:
    """Wait (bounded) until `done()`; the assertions that follow say what was expected."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not done() and loop.time() < deadline:
        await asyncio.sleep(0.005)


async def settle(d: ShadowDispatcher, sink: Collect, want: int, timeout: float = 3.0) -> None:
    await until(lambda: len(sink.pairs) >= want, timeout)
    await d.stop()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def one_pair(
    session: FakeSession, judge: ShadowJudge | None, **settings: Any
) -> tuple[list[ShadowPair], Stats, ShadowDispatcher]:
    """One shadowed GET through a dispatcher, run until its pair is recorded and stopped."""

    async def go() -> tuple[list[ShadowPair], Stats, ShadowDispatcher]:
        d, sink, stats = dispatcher(session, judge, **settings)
        await d.start()
        assert d.submit(job(d))
        await settle(d, sink, 1)
        return sink.pairs, stats, d

    return run(go())


def test_first_pair_differs_second_agrees_is_lagged() -> None:
    # the service copy lags: its first answer is stale, the re-check sees the new value
    session = FakeSession({SVC: [b'{"v":1}', b'{"v":2}'], MONO: [b'{"v":2}']})
    (pair,), stats, d = one_pair(session, BodiesDiffer())
    assert pair.extra["recheck"] == RECHECK_LAGGED
    assert pair.service_response is not None and pair.service_response.body == b'{"v":1}'
    second = pair.extra["recheck_pair"]
    assert second.monolith.body == second.service_response.body == b'{"v":2}'
    assert stats.counters["shadow_lagged"] == 1
    assert stats.counters["shadow_rechecks"] == 1
    assert d.rechecks_in_flight == 0
    assert len(session.to(SVC)) == 2 and len(session.to(MONO)) == 1  # BOTH sides re-sent
    assert all(RECHECK_HEADER in h for _, _, h in session.sent[1:])


def test_second_pair_differs_too_mismatch_stands_with_evidence() -> None:
    session = FakeSession({SVC: [b'{"v":1}', b'{"v":9}'], MONO: [b'{"v":3}']})
    (pair,), stats, _ = one_pair(session, BodiesDiffer())
    assert pair.extra["recheck"] == RECHECK_MISMATCH
    second = pair.extra["recheck_pair"]
    assert (second.monolith.body, second.service_response.body) == (b'{"v":3}', b'{"v":9}')
    assert stats.counters["shadow_recheck_mismatches"] == 1
    assert "shadow_lagged" not in stats.counters


def test_matching_pair_is_recorded_at_once_without_judge_or_recheck() -> None:
    session = FakeSession({SVC: [b'{"v":2}'], MONO: [b'{"v":2}']})
    judge = BodiesDiffer()
    (pair,), _, _ = one_pair(session, judge)
    assert "recheck" not in pair.extra
    assert judge.asked == 0  # byte-identical: no comparison needed
    assert session.to(MONO) == []


def test_unsafe_method_is_never_resent() -> None:
    session = FakeSession({SVC: [b'{"v":1}'], MONO: [b'{"v":2}']})
    judge = BodiesDiffer()

    async def go() -> None:
        d, sink, stats = dispatcher(session, judge)
        await d.start()
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            j = job(d, method)
            assert j.control is None
            # even handed a control target, an unsafe request is not re-checked
            j.control = (URL(MONO + "/products/1"), CIMultiDict())
            d.submit(j)
        await settle(d, sink, 4)
        assert len(sink.pairs) == 4
        assert all("recheck" not in p.extra for p in sink.pairs)
        assert "shadow_rechecks" not in stats.counters

    run(go())
    assert judge.asked == 0
    assert session.to(MONO) == [] and len(session.to(SVC)) == 4


def test_without_judge_or_with_zero_delay_nothing_is_rechecked() -> None:
    for judge, after in ((None, 1.0), (BodiesDiffer(), 0.0)):
        session = FakeSession({SVC: [b'{"v":1}'], MONO: [b'{"v":2}']})
        (pair,), _, d = one_pair(session, judge, recheck_after_s=after)
        assert not d.wants_recheck("GET")
        assert "recheck" not in pair.extra
        assert session.to(MONO) == []


def test_over_in_flight_limit_dropped_counted_and_recorded_without_verdict() -> None:
    session = FakeSession({SVC: [b'{"v":1}'], MONO: [b'{"v":2}']})

    async def go() -> None:
        d, sink, stats = dispatcher(
            session, BodiesDiffer(), recheck_after_s=0.2, recheck_max_in_flight=2
        )
        await d.start()
        for _ in range(5):
            d.submit(job(d))
        # three over the limit are recorded at once, marked dropped (no verdict)
        await until(lambda: len(sink.pairs) >= 3)
        assert len(sink.pairs) == 3 and d.rechecks_in_flight == 2
        assert [p.extra["recheck"] for p in sink.pairs] == [RECHECK_DROPPED] * 3
        assert stats.counters["shadow_recheck_dropped"] == 3
        await settle(d, sink, 5)
        assert [p.extra.get("recheck") for p in sink.pairs[3:]] == [RECHECK_MISMATCH] * 2

    run(go())
    assert len(session.to(MONO)) == 2  # only the admitted re-checks reached the monolith


def test_over_per_second_limit_dropped_until_the_next_second() -> None:
    session = FakeSession({SVC: [b'{"v":1}'], MONO: [b'{"v":2}']})
    clock = Clock()

    async def go() -> None:
        d, sink, stats = dispatcher(
            session, BodiesDiffer(), clock, recheck_after_s=0.01, recheck_per_second=2
        )
        await d.start()
        for _ in range(3):
            d.submit(job(d))
        await until(lambda: len(sink.pairs) >= 3)
        assert stats.counters["shadow_recheck_dropped"] == 1
        clock.now += 1.0
        d.submit(job(d))
        await settle(d, sink, 4)
        assert stats.counters["shadow_rechecks"] == 3
        assert stats.counters["shadow_recheck_dropped"] == 1

    run(go())


def test_failed_candidate_on_recheck_never_clears_a_pair() -> None:
    class FailingSecond(FakeSession):
        def request(self, method: str, url: URL, **kwargs: Any) -> FakeResponse:
            if url.host == "svc.test" and len(self.to(SVC)) >= 1:
                self.sent.append((method, SVC, {}))
                raise OSError("connection refused")
            return super().request(method, url, **kwargs)

    session = FailingSecond({SVC: [b'{"v":1}'], MONO: [b'{"v":2}']})

    (pair,), _, _ = one_pair(session, BodiesDiffer())
    assert pair.extra["recheck"] == RECHECK_MISMATCH


def test_judge_failure_records_the_pair_as_it_is() -> None:
    class Broken(ShadowJudge):
        def differs(self, pair: ShadowPair) -> bool:
            raise RuntimeError("boom")

    session = FakeSession({SVC: [b'{"v":1}'], MONO: [b'{"v":2}']})

    (pair,), _, _ = one_pair(session, Broken())
    assert "recheck" not in pair.extra
    assert session.to(MONO) == []


def test_a_recheck_still_waiting_when_the_proxy_stops_is_recorded_dropped() -> None:
    session = FakeSession({SVC: [b'{"v":1}'], MONO: [b'{"v":2}']})

    async def go() -> None:
        d, sink, stats = dispatcher(session, BodiesDiffer(), recheck_after_s=30)
        await d.start()
        d.submit(job(d))
        await until(lambda: d.rechecks_in_flight > 0)
        await asyncio.wait_for(d.stop(drain_timeout=0.1), 2)
        assert [p.extra["recheck"] for p in sink.pairs] == [RECHECK_DROPPED]
        assert stats.counters["shadow_recheck_dropped"] == 1 and d.rechecks_in_flight == 0

    run(go())
    assert session.to(MONO) == []
