"""Replay requests against control and candidate, compare, aggregate per endpoint.

Backends are a small port with two adapters: HTTP (a lean keep-alive client on httptools) and an
in-process Flask test client. The control's answer is the served truth (Scientist's shape):
a candidate failure is recorded as an error, never raised. Write checks run only against
explicitly provided scratch targets that can be reset to a known data state.
"""

from __future__ import annotations

import re
import select
import socket
import ssl
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
from urllib.parse import quote, urlsplit

import httptools

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


class _Reader:
    """httptools callbacks collecting one response."""

    __slots__ = ("headers", "body", "headers_done", "complete", "keep_alive", "parser")

    def __init__(self) -> None:
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.parser: Any = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        # asked here: llhttp resets its connection flags once the message is complete
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, data: bytes) -> None:
        self.body.append(data)

    def on_message_complete(self) -> None:
        self.complete = True


class _StaleConnection(ConnectionError):
    """A kept-alive connection the server had closed: nothing of an answer was received."""


class _Connection:
    """One keep-alive socket to the backend."""

    __slots__ = ("sock", "used")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.used = False

    def close(self) -> None:
        self.sock.close()


class HttpBackend(Backend):
    """A live server by base URL, over a pool of keep-alive connections.

    A replay pays the client's CPU twice per pair, on the same machine as the backends, so
    this is a lean HTTP/1.1 client: sockets from a pool, the request written in one send,
    the answer parsed by httptools (llhttp, as the proxy does). httpx cost ~530 us of CPU per
    request here, http.client ~150 us, this ~50 us (bench/parity_bench.py has the replay).
    Redirects are not followed (a redirect is an answer to compare); the request's own
    Accept-Encoding is replaced by `identity` so both sides' bodies compare decoded.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        max_connections: int = 32,
        headers: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url: must be an http(s) URL, got {base_url!r}")
        if timeout <= 0:
            raise ValueError(f"timeout: must be > 0, got {timeout}")
        if max_connections < 1:
            raise ValueError(f"max_connections: must be >= 1, got {max_connections}")
        self.base_url = base_url.rstrip("/")
        self.name = name or self.base_url
        self._tls = ssl.create_default_context() if parts.scheme == "https" else None
        self._host = parts.hostname
        self._port = parts.port or (443 if self._tls else 80)
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout
        host = parts.netloc.rpartition("@")[2]  # never user:password@ in a Host header
        self._fixed = _header_lines([("Host", host), *(headers or {}).items()])
        self._max_connections = max_connections
        self._idle: list[_Connection] = []
        self._count = 0
        self._available = threading.Condition()
        self._closed = False

    # -- the pool

    def _acquire(self) -> _Connection:
        """An idle pooled connection, else a new one (within max_connections)."""
        deadline = time.monotonic() + self._timeout
        with self._available:
            while True:
                if self._closed:
                    raise BackendError(f"{self.name}: backend is closed")
                while self._idle:
                    conn = self._idle.pop()
                    if not _peer_closed(conn.sock):
                        return conn
                    conn.close()  # the server closed it while idle: reconnect, do not fail
                    self._count -= 1
                if self._count < self._max_connections:
                    self._count += 1
                    break
                left = deadline - time.monotonic()
                if left <= 0 or not self._available.wait(left):
                    raise BackendError(f"{self.name}: no free connection within {self._timeout}s")
        try:
            sock = socket.create_connection((self._host, self._port), timeout=self._timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self._host)
        except BaseException:
            self._release(None)
            raise
        return _Connection(sock)

    def _release(self, conn: _Connection | None, *, reuse: bool = False) -> None:
        with self._available:
            if conn is not None and reuse and not self._closed:
                conn.used = True
                self._idle.append(conn)
            else:
                if conn is not None:
                    conn.close()
                self._count -= 1
            self._available.notify()

    # -- one exchange

    def _head(self, request: Request) -> bytes:
        target = self._prefix + request.target
        if not _TARGET.fullmatch(target):
            target = quote(target, safe=_TARGET_SAFE)
        lines = [f"{request.method} {target} HTTP/1.1\r\n".encode("ascii"), self._fixed]
        forwarded = [(k, v) for k, v in request.headers.items() if k not in _NOT_FORWARDED]
        if request.body or request.method in _BODY_METHODS:
            forwarded.append(("Content-Length", str(len(request.body))))
        forwarded.append(("Accept-Encoding", "identity"))
        lines.append(_header_lines(forwarded))
        lines.append(b"\r\n")
        return b"".join(lines)

    def _exchange(self, conn: _Connection, request: Request) -> tuple[int, list, bytes, bool]:
        sock = conn.sock
        try:
            sock.sendall(self._head(request) + request.body)
        except (BrokenPipeError, ConnectionResetError) as exc:
            if conn.used:
                raise _StaleConnection(str(exc)) from exc
            raise
        reader = _Reader()
        parser = reader.parser = httptools.HttpResponseParser(reader)
        no_body = request.method == "HEAD"
        received = False
        while not reader.complete:
            try:
                data = sock.recv(65536)
            except ConnectionResetError as exc:
                if conn.used and not received:
                    raise _StaleConnection(str(exc)) from exc
                raise
            if not data:
                if reader.headers_done and _close_delimited(reader.headers):
                    break  # a body delimited by the connection's end
                if conn.used and not received:
                    raise _StaleConnection("the server closed the kept-alive connection")
                raise ConnectionError("the server closed the connection mid-answer")
            received = True
            parser.feed_data(data)
            if no_body and reader.headers_done:
                break
        status = parser.get_status_code()
        if 100 <= status < 200:
            raise httptools.HttpParserError(f"interim {status} answers are not supported")
        keep = reader.keep_alive and (reader.complete or no_body)
        return status, reader.headers, b"".join(reader.body), keep

    def send(self, request: Request) -> Response:
        t0 = time.perf_counter()
        retry = request.method in IDEMPOTENT
        while True:
            conn = self._acquire()
            try:
                status, headers, body, keep = self._exchange(conn, request)
            except _StaleConnection as exc:
                self._release(conn)
                if retry:
                    retry = False  # closed by the server between our check and our send: once
                    continue
                raise BackendError(f"{self.name}: stale connection: {exc}") from exc
            except (OSError, ValueError, httptools.HttpParserError) as exc:
                self._release(conn)
                raise BackendError(f"{self.name}: {type(exc).__name__}: {exc}") from exc
            self._release(conn, reuse=keep)
            return Response(status, headers, body, time.perf_counter() - t0)

    def close(self) -> None:
        with self._available:
            self._closed = True
            idle, self._idle = self._idle, []
            self._count -= len(idle)
            self._available.notify_all()
        for conn in idle:
            conn.close()


def _header_lines(pairs: Iterable[tuple[str, str]]) -> bytes:
    """`Name: value` lines; a name or value that could split the head is refused."""
    out = []
    for name, value in pairs:
        if not _TOKEN.fullmatch(name) or any(c in value for c in "\r\n\0"):
            raise ValueError(f"header {name!r}: not a valid header name or value")
        out.append(f"{name}: {value}\r\n")
    return "".join(out).encode("latin-1")


def _close_delimited(headers: list[tuple[str, str]]) -> bool:
    """True when the answer's body runs to the connection's end: neither a Content-Length
    nor a Transfer-Encoding frames it (a framed body cut short is an error, not an answer)."""
    return not any(name.lower() in _FRAMING for name, _ in headers)


def _peer_closed(sock: socket.socket) -> bool:
    """True when an idle keep-alive socket is readable: the server closed it (or broke it)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


_NOT_FORWARDED = frozenset({"host", "content-length", "accept-encoding", "connection"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_FRAMING = frozenset({"content-length", "transfer-encoding"})
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET_SAFE = "/?&=%:@!$'()*+,;~-._"
_TARGET = re.compile(r"[!-~]+")


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
                denied=c[Outcome.DENIED],
                lagged=c[Outcome.LAGGED],
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
