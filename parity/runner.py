"""Replay requests against control and candidate, compare, aggregate per endpoint.

Backends are a small port with two adapters: HTTP (httpx, pooled connections) and an
in-process Flask test client. The control's answer is the served truth (Scientist's shape):
a candidate failure is recorded as an error, never raised. Write checks run only against
explicitly provided scratch targets that can be reset to a known data state.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from parity.compare import Comparator, diff_json
from parity.model import ComparisonResult, Difference, Outcome, Request, Response
from parity.noise import NoiseLearner
from parity.recording import Redactor
from parity.report import EndpointSummary, RunReport
from parity.rules import CompiledRules, EndpointRules


class BackendError(RuntimeError):
    """The backend could not produce a response (connection refused, timeout...)."""


class Backend(ABC):
    """Port: something that answers a Request."""

    name: str = "backend"

    @abstractmethod
    def send(self, request: Request) -> Response:
        """Send one request; raise BackendError when no response could be obtained."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HttpBackend(Backend):
    """A live server by base URL; one pooled httpx client shared by the runner's threads."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        max_connections: int = 32,
        headers: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> None:
        import httpx

        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url: must be an http(s) URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.name = name or self.base_url
        self._httpx = httpx
        self._client = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            headers=dict(headers or {}),
            follow_redirects=False,
        )

    def send(self, request: Request) -> Response:
        headers = {k: v for k, v in request.headers.items() if k not in ("host", "content-length")}
        t0 = time.perf_counter()
        try:
            r = self._client.request(
                request.method,
                request.path,
                params=list(request.query) or None,
                headers=headers,
                content=request.body or None,
            )
        except self._httpx.HTTPError as exc:
            raise BackendError(f"{self.name}: {type(exc).__name__}: {exc}") from exc
        return Response(r.status_code, r.headers.multi_items(), r.content, time.perf_counter() - t0)

    def close(self) -> None:
        self._client.close()


class FlaskBackend(Backend):
    """An in-process Flask app through its test client (one client per thread)."""

    def __init__(self, app: Any, *, name: str | None = None) -> None:
        if not hasattr(app, "test_client"):
            raise TypeError("FlaskBackend needs a Flask app (an object with test_client())")
        self.app = app
        self.name = name or f"flask:{getattr(app, 'name', 'app')}"
        self._local = threading.local()

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self.app.test_client()
            self._local.client = client
        return client

    def send(self, request: Request) -> Response:
        t0 = time.perf_counter()
        try:
            r = self._client().open(
                request.path,
                method=request.method,
                query_string=request.query_string,
                headers=list(request.headers.items()),
                data=request.body or None,
            )
        except Exception as exc:  # noqa: BLE001 - an app crash is the backend's failure
            raise BackendError(f"{self.name}: {type(exc).__name__}: {exc}") from exc
        body = r.get_data()
        return Response(r.status_code, list(r.headers.items()), body, time.perf_counter() - t0)


def as_backend(target: Any, *, name: str | None = None, **http_options: Any) -> Backend:
    """A Backend from a Backend, a URL string, or a Flask app."""
    if isinstance(target, Backend):
        return target
    if isinstance(target, str):
        return HttpBackend(target, name=name, **http_options)
    if hasattr(target, "test_client"):
        return FlaskBackend(target, name=name)
    raise TypeError(f"cannot make a backend from {type(target).__name__}")


# ---------------------------------------------------------------- the runner

ProgressFn = Callable[[int, "int | None", Counter], None]


class Runner:
    """Replays requests with N worker threads and builds a RunReport.

    With `learn_noise`, each request also goes to the control a second time; paths where the
    control disagrees with itself become noise for the endpoint, and every result is
    re-classified against the final learned noise at the end of the run.
    """

    def __init__(
        self,
        control: Backend,
        candidate: Backend,
        comparator: Comparator | None = None,
        *,
        concurrency: int = 4,
        learn_noise: bool = False,
        noise: NoiseLearner | None = None,
        progress: ProgressFn | None = None,
        redactor: Redactor | None = None,
        keep_bodies: int = 20,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency: must be >= 1, got {concurrency}")
        self.control = control
        self.candidate = candidate
        self.comparator = comparator or Comparator()
        self.concurrency = concurrency
        self.learn_noise = learn_noise
        self.noise = noise or (NoiseLearner(self.comparator) if learn_noise else None)
        self.progress = progress
        self.redactor = redactor or Redactor()
        self.keep_bodies = keep_bodies
        self._side_pool: ThreadPoolExecutor | None = None

    def compare_one(self, request: Request) -> ComparisonResult:
        """Send one request to both sides (and the control again when learning noise)."""
        endpoint = self.comparator.endpoint_of(request)
        # both sides at once (as Diffy does): a pair costs the slower side's latency, not the sum
        side = self._side_pool
        pending = side.submit(self.candidate.send, request) if side is not None else None
        try:
            control = self.control.send(request)
        except Exception as exc:  # noqa: BLE001
            if pending is not None:
                pending.exception()  # wait for it: nothing is left running
            return ComparisonResult(endpoint, request, error=f"control failed: {exc}")
        candidate: Response | None
        error = None
        try:
            candidate = pending.result() if pending is not None else self.candidate.send(request)
        except Exception as exc:  # noqa: BLE001 - candidate failures are data, not exceptions
            candidate, error = None, f"candidate failed: {exc}"
        if self.learn_noise and self.noise is not None:
            try:
                secondary = self.control.send(request)
            except Exception:  # noqa: BLE001 - no secondary: learn nothing from this one
                secondary = None
            if secondary is not None:
                self.noise.observe(endpoint, control, secondary)
        learned = self.noise.noise_for(endpoint) if self.noise is not None else ()
        return self.comparator.compare(
            request, control, candidate, candidate_error=error, noise=learned, endpoint=endpoint
        )

    def _dispatch(
        self, requests: Iterable[Request], absorb: Callable[[ComparisonResult], None]
    ) -> None:
        if self.concurrency == 1:
            for req in requests:
                absorb(self.compare_one(req))
            return
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="parity") as pool:
            inflight: deque[Future[ComparisonResult]] = deque()
            for req in requests:
                inflight.append(pool.submit(self.compare_one, req))
                if len(inflight) >= self.concurrency * 2:
                    finished, _ = wait(inflight, return_when=FIRST_COMPLETED)
                    for f in finished:
                        inflight.remove(f)
                        absorb(f.result())
            for f in inflight:
                absorb(f.result())

    def run(self, requests: Iterable[Request], *, total: int | None = None) -> RunReport:
        if total is None and isinstance(requests, Sequence):
            total = len(requests)
        started = time.time()
        t0 = time.perf_counter()
        counts: dict[str, Counter] = defaultdict(Counter)
        kept: list[ComparisonResult] = []
        bodies_kept: Counter = Counter()
        overall: Counter = Counter()
        latency: dict[str, list[float]] = {"control": [], "candidate": []}
        done = 0

        def absorb(result: ComparisonResult) -> None:
            nonlocal done
            done += 1
            counts[result.endpoint][result.outcome] += 1
            overall[result.outcome] += 1
            if result.control is not None:
                latency["control"].append(result.control.elapsed)
            if result.candidate is not None:
                latency["candidate"].append(result.candidate.elapsed)
            if result.outcome is not Outcome.MATCH:
                if bodies_kept[result.endpoint] >= self.keep_bodies:
                    result.control = result.candidate = None
                else:
                    bodies_kept[result.endpoint] += 1
                kept.append(result)
            if self.progress is not None:
                self.progress(done, total, overall)

        self._side_pool = ThreadPoolExecutor(
            max_workers=self.concurrency, thread_name_prefix="parity-candidate"
        )
        try:
            self._dispatch(requests, absorb)
        finally:
            self._side_pool.shutdown(wait=True)
            self._side_pool = None

        if self.noise is not None:
            # re-classify with everything learned during the run
            for result in kept:
                if result.outcome is Outcome.MISMATCH:
                    before = result.outcome
                    result.differences = self.comparator.classify(
                        result.differences, result.endpoint, self.noise.noise_for(result.endpoint)
                    )
                    if result.outcome is not before:
                        counts[result.endpoint][before] -= 1
                        counts[result.endpoint][result.outcome] += 1
        duration = time.perf_counter() - t0
        summaries = [
            EndpointSummary(
                endpoint=e,
                requests=sum(c.values()),
                matches=c[Outcome.MATCH],
                mismatches=c[Outcome.MISMATCH],
                noise=c[Outcome.NOISE_ONLY],
                errors=c[Outcome.ERROR],
            )
            for e, c in sorted(counts.items())
        ]
        return RunReport(
            control=self.control.name,
            candidate=self.candidate.name,
            started_at=started,
            duration=duration,
            endpoints=summaries,
            results=[self.redactor.result(r) for r in kept],
            noise=self.noise.as_mapping() if self.noise is not None else {},
            latency={k: _latency_summary(v) for k, v in latency.items()},
        )


def _latency_summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    s = sorted(values)
    return {
        "mean_ms": round(1000 * sum(s) / len(s), 3),
        "p50_ms": round(1000 * s[len(s) // 2], 3),
        "p95_ms": round(1000 * s[min(len(s) - 1, int(len(s) * 0.95))], 3),
    }


# ---------------------------------------------------------------- write checks

Rows = Mapping[str, Sequence[Mapping[str, Any]]]


@dataclass
class ScratchTarget:
    """A backend whose data may be destroyed: `reset()` brings it to the seeded state (e.g. a
    fresh database), `fetch_rows()` returns {table: [row, ...]} after the scenario."""

    backend: Backend
    reset: Callable[[], None]
    fetch_rows: Callable[[], Rows]
    label: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.backend, Backend):
            raise TypeError("ScratchTarget.backend: must be a Backend")
        if not callable(self.reset) or not callable(self.fetch_rows):
            raise TypeError("ScratchTarget: reset and fetch_rows must be callables")
        self.label = self.label or self.backend.name


@dataclass
class WriteResult:
    scenario: str
    steps: list[ComparisonResult] = field(default_factory=list)
    row_differences: list[Difference] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.row_differences and all(
            s.outcome in (Outcome.MATCH, Outcome.NOISE_ONLY) for s in self.steps
        )

    def describe(self) -> str:
        lines = [f"write scenario {self.scenario}: {'ok' if self.ok else 'DIFFERENT'}"]
        for s in self.steps:
            if s.outcome not in (Outcome.MATCH, Outcome.NOISE_ONLY):
                lines.append(f"  {s.request}: {s.outcome} {s.error or ''}".rstrip())
                lines.extend(f"    {d.describe()}" for d in s.regressions)
        lines.extend(f"  rows: {d.describe()}" for d in self.row_differences)
        return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value.normalize())
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


@dataclass
class WriteScenario:
    """The same write sequence applied to two scratch targets started from the same state.

    `map_rows` turns the control's rows into the candidate's shape (e.g. through the mapping
    spec); rows are matched per table by `keys` (default `id`); `ignore_columns` names
    columns not compared (e.g. server-set timestamps).
    """

    name: str
    steps: Sequence[Request]
    map_rows: Callable[[Rows], Rows] | None = None
    keys: Mapping[str, Sequence[str]] = field(default_factory=dict)
    ignore_columns: Mapping[str, Sequence[str]] = field(default_factory=dict)
    response_rules: EndpointRules | None = None

    def run(
        self,
        control: ScratchTarget,
        candidate: ScratchTarget,
        comparator: Comparator | None = None,
    ) -> WriteResult:
        if not isinstance(control, ScratchTarget) or not isinstance(candidate, ScratchTarget):
            raise TypeError(
                "write checks run only against ScratchTarget objects (never live backends)"
            )
        if control is candidate or control.backend is candidate.backend:
            raise ValueError("write checks need two separate scratch targets")
        comparator = comparator or Comparator()
        control.reset()
        candidate.reset()
        result = WriteResult(self.name)
        for req in self.steps:
            endpoint = comparator.endpoint_of(req)
            c = control.backend.send(req)
            try:
                d: Response | None = candidate.backend.send(req)
                err = None
            except Exception as exc:  # noqa: BLE001
                d, err = None, f"candidate failed: {exc}"
            result.steps.append(
                comparator.compare(req, c, d, candidate_error=err, endpoint=endpoint)
            )
        expected = control.fetch_rows()
        if self.map_rows is not None:
            expected = self.map_rows(expected)
        actual = candidate.fetch_rows()
        result.row_differences = diff_json(
            self._keyed(expected), self._keyed(actual), self._row_rules()
        )
        return result

    def _keyed(self, rows: Rows) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for table, table_rows in rows.items():
            key_cols = list(self.keys.get(table, ["id"]))
            keyed: dict[str, Any] = {}
            for row in table_rows:
                row = _jsonable(dict(row))
                key = "|".join(str(row.get(k)) for k in key_cols)
                keyed[key] = row
            out[table] = dict(sorted(keyed.items()))
        return out

    def _row_rules(self) -> CompiledRules | None:
        patterns = [
            f"$['{table}'].*['{col}']"
            for table, cols in self.ignore_columns.items()
            for col in cols
        ]
        if not patterns:
            return None
        return CompiledRules(EndpointRules(ignore=patterns))
