"""Shadow pairs and the `ShadowSink` port they are recorded to.

The port is deliberately tiny - `record(pair)` - so that the parity comparator can be plugged
in later without knowing anything about the proxy. Secrets never leave the proxy: the
Authorization, Cookie and Set-Cookie headers (and Proxy-Authorization) are redacted before a
pair is built.
"""

from __future__ import annotations

import base64
import json
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kitcore.redact import TextScrubber

REDACTED = "[redacted]"
SENSITIVE_HEADERS = frozenset({"authorization", "cookie", "set-cookie", "proxy-authorization"})


def redact_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Copy headers, replacing credentials with a marker (the header's presence is kept)."""
    return [(k, REDACTED if k.lower() in SENSITIVE_HEADERS else v) for k, v in headers]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # raw path including the query string
    headers: list[tuple[str, str]]
    body: bytes
    body_truncated: bool = False


@dataclass(frozen=True)
class RecordedResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    latency_ms: float
    body_truncated: bool = False


@dataclass(frozen=True)
class ShadowPair:
    """One shadowed request with the monolith's answer and the service's answer or error."""

    request_id: str
    route: str
    service: str
    at: float  # unix time the client request arrived
    request: RecordedRequest
    monolith: RecordedResponse
    service_response: RecordedResponse | None = None
    service_error: str | None = None
    service_latency_ms: float | None = None
    extra: Mapping[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form (bodies as text when UTF-8, else base64)."""
        return {
            "request_id": self.request_id,
            "route": self.route,
            "service": self.service,
            "at": self.at,
            "request": {
                "method": self.request.method,
                "path": self.request.path,
                "headers": self.request.headers,
                **_body(self.request.body, self.request.body_truncated),
            },
            "monolith": _response(self.monolith),
            "service_response": _response(self.service_response) if self.service_response else None,
            "service_error": self.service_error,
            "service_latency_ms": self.service_latency_ms,
            **({"recheck": self.extra["recheck"]} if "recheck" in self.extra else {}),
        }


def _body(body: bytes, truncated: bool) -> dict[str, object]:
    try:
        return {"body": body.decode("utf-8"), "body_truncated": truncated}
    except UnicodeDecodeError:
        return {"body_b64": base64.b64encode(body).decode("ascii"), "body_truncated": truncated}


def _response(resp: RecordedResponse) -> dict[str, object]:
    return {
        "status": resp.status,
        "headers": resp.headers,
        "latency_ms": round(resp.latency_ms, 3),
        **_body(resp.body, resp.body_truncated),
    }


class ShadowSink(ABC):
    """Port: receives every completed shadow pair. Must be quick and must not raise."""

    @abstractmethod
    def record(self, pair: ShadowPair) -> None:
        """Store or forward one pair."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (files); default does nothing."""


class ShadowJudge(ABC):
    """Port: does a pair differ in a way that matters (a regression, not noise)? The proxy asks
    it only to decide whether to re-check a safe request (the kit wires the parity comparator;
    the proxy knows nothing of parity). Called on a worker thread, never on the event loop."""

    @abstractmethod
    def differs(self, pair: ShadowPair) -> bool:
        """True when the pair is a mismatch; must not raise for a well-formed pair."""


RECHECK_LAGGED = "lagged"  # pair.extra["recheck"]: differed, the re-check agreed (CDC lag)
RECHECK_MISMATCH = "mismatch"  # differed, and the re-check differed too: the mismatch stands
# differed, but no re-check was made (over the bounds, or the proxy stopped): no verdict, so
# parity leaves it out (as it does a dropped shadow copy); the admitted re-checks still show
# a regression
RECHECK_DROPPED = "dropped"


class RingBufferSink(ShadowSink):
    """Keeps the most recent pairs in memory for the admin API."""

    def __init__(self, size: int = 200) -> None:
        self._pairs: deque[ShadowPair] = deque(maxlen=size)
        self._lock = threading.Lock()
        self.total = 0

    def record(self, pair: ShadowPair) -> None:
        with self._lock:
            self._pairs.append(pair)
            self.total += 1

    def recent(self, limit: int | None = None) -> list[ShadowPair]:
        """Newest first."""
        with self._lock:
            pairs = list(self._pairs)
        pairs.reverse()
        return pairs[:limit] if limit is not None else pairs


def scrub_record(record: dict[str, object], scrub: TextScrubber) -> dict[str, object]:
    """Personal data (e-mails, phone and card numbers, tokens) out of a pair's text: its path,
    header values and text bodies (base64 bodies are binary and left as they are)."""
    out = dict(record)
    for side in ("request", "monolith", "service_response"):
        part = out.get(side)
        if not isinstance(part, dict):
            continue
        part = dict(part)
        if isinstance(part.get("path"), str):
            part["path"] = scrub(part["path"])
        part["headers"] = [(k, scrub(v)) for k, v in part.get("headers") or []]
        if isinstance(part.get("body"), str):
            part["body"] = scrub(part["body"])
        out[side] = part
    return out


class JsonLinesSink(ShadowSink):
    """Appends one JSON object per pair to a file (the default recording for later replay);
    personal data found by pattern (kitcore.redact) is replaced before it is written."""

    def __init__(self, path: str | Path, scrub: TextScrubber | None = None) -> None:
        self.scrub = scrub if scrub is not None else TextScrubber()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def record(self, pair: ShadowPair) -> None:
        line = json.dumps(scrub_record(pair.to_dict(), self.scrub), separators=(",", ":"))
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


class MultiSink(ShadowSink):
    """Fans a pair out to several sinks; one failing sink does not starve the others."""

    def __init__(self, sinks: Iterable[ShadowSink]) -> None:
        self.sinks = list(sinks)
        self.failures = 0

    def record(self, pair: ShadowPair) -> None:
        for sink in self.sinks:
            try:
                sink.record(pair)
            except Exception:  # noqa: BLE001 - a sink must never break the proxy
                self.failures += 1

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
