"""Typed records shared by every part of parity: requests, responses, pairs, differences.

Bodies stay raw bytes so that a comparison never depends on how a client library decoded
them; JSON is parsed lazily and cached on the response.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit


class _Absent:
    """Marks a value that is not there at all (distinct from JSON null)."""

    _instance: _Absent | None = None

    def __new__(cls) -> _Absent:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<absent>"

    def __bool__(self) -> bool:
        return False


ABSENT: Any = _Absent()


def normalise_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]] | None) -> dict:
    """Lower-case header names; repeated headers are joined with ', ' (RFC 9110)."""
    out: dict[str, str] = {}
    if headers is None:
        return out
    items = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in items:
        key = str(name).lower()
        out[key] = f"{out[key]}, {value}" if key in out else str(value)
    return out


def _query_pairs(query: Any) -> tuple[tuple[str, str], ...]:
    if query is None or query == "":
        return ()
    if isinstance(query, str):
        return tuple(parse_qsl(query.lstrip("?"), keep_blank_values=True))
    if isinstance(query, Mapping):
        pairs: list[tuple[str, str]] = []
        for key, value in query.items():
            if isinstance(value, list | tuple):
                pairs.extend((str(key), _qs_value(v)) for v in value)
            else:
                pairs.append((str(key), _qs_value(value)))
        return tuple(pairs)
    return tuple((str(k), _qs_value(v)) for k, v in query)


def _qs_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def encode_body(body: bytes) -> dict[str, str]:
    """JSON-safe form of a body: text when it is UTF-8, base64 otherwise."""
    if not body:
        return {}
    try:
        return {"body": body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"body_b64": base64.b64encode(body).decode("ascii")}


def decode_body(data: Mapping[str, Any]) -> bytes:
    if data.get("body_b64") is not None:
        return base64.b64decode(data["body_b64"])
    body = data.get("body")
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode("utf-8")
    return json.dumps(body).encode("utf-8")


@dataclass(frozen=True)
class Request:
    """One HTTP request to replay; `query` keeps order and repeated keys."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...] = ()
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def __post_init__(self) -> None:
        method = str(self.method).upper()
        if not method.isalpha():
            raise ValueError(f"method: not an HTTP method: {self.method!r}")
        object.__setattr__(self, "method", method)
        path = str(self.path)
        if "?" in path:
            path, _, qs = path.partition("?")
            object.__setattr__(self, "query", _query_pairs(qs) + _query_pairs(self.query))
        else:
            object.__setattr__(self, "query", _query_pairs(self.query))
        if not path.startswith("/"):
            raise ValueError(f"path: must start with '/': {self.path!r}")
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "headers", normalise_headers(self.headers))
        if isinstance(self.body, str):
            object.__setattr__(self, "body", self.body.encode("utf-8"))

    @classmethod
    def build(
        cls,
        method: str,
        path: str,
        *,
        query: Any = None,
        headers: Mapping[str, str] | None = None,
        json_body: Any = None,
        body: bytes | str = b"",
    ) -> Request:
        """Convenience constructor: `json_body` sets the body and the JSON content type."""
        hdrs = normalise_headers(headers)
        if json_body is not None:
            body = json.dumps(json_body).encode("utf-8")
            hdrs.setdefault("content-type", "application/json")
        return cls(method, path, _query_pairs(query), hdrs, body)

    @classmethod
    def parse(cls, line: str) -> Request:
        """Parse `"GET /products?page=2"` (method defaults to GET)."""
        parts = line.strip().split(None, 1)
        if not parts:
            raise ValueError("empty request line")
        if len(parts) == 1:
            return cls("GET", parts[0])
        return cls(parts[0], parts[1].strip())

    @property
    def query_string(self) -> str:
        return urlencode(self.query)

    @property
    def target(self) -> str:
        """Path plus query string, as written on a request line."""
        qs = self.query_string
        return f"{self.path}?{qs}" if qs else self.path

    def __str__(self) -> str:
        return f"{self.method} {self.target}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "method": self.method,
            "path": self.path,
            "query": [list(p) for p in self.query],
            "headers": dict(self.headers),
        }
        out.update(encode_body(self.body))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Request:
        path = data.get("path")
        if not isinstance(path, str):
            raise ValueError("request.path: missing or not a string")
        query = data.get("query") or ()
        if isinstance(query, Mapping):
            query = _query_pairs(query)
        elif isinstance(query, str):
            query = _query_pairs(query)
        else:
            query = tuple((str(k), str(v)) for k, v in query)
        return cls(
            str(data.get("method", "GET")),
            urlsplit(path).path or path,
            query + (_query_pairs(urlsplit(path).query) if "?" in path else ()),
            dict(data.get("headers") or {}),
            decode_body(data),
        )


@dataclass
class Response:
    """One HTTP response; `elapsed` is seconds spent waiting for it."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    elapsed: float = 0.0

    def __post_init__(self) -> None:
        self.headers = normalise_headers(self.headers)
        if isinstance(self.body, str):
            self.body = self.body.encode("utf-8")
        self._json: Any = ABSENT

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    @property
    def media_type(self) -> str:
        return self.content_type.split(";", 1)[0].strip().lower()

    @property
    def is_json(self) -> bool:
        mt = self.media_type
        return mt == "application/json" or mt.endswith("+json")

    def json(self) -> Any:
        """Parsed JSON body (cached); raises ValueError when the body is not JSON."""
        if self._json is ABSENT:
            self._json = json.loads(self.body)
        return self._json

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status,
            "headers": dict(self.headers),
            "elapsed": round(self.elapsed, 6),
        }
        out.update(encode_body(self.body))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Response:
        if not isinstance(data.get("status"), int):
            raise ValueError("response.status: missing or not an integer")
        return cls(
            int(data["status"]),
            dict(data.get("headers") or {}),
            decode_body(data),
            float(data.get("elapsed") or 0.0),
        )


@dataclass
class Exchange:
    """A request and the response one backend gave to it (what a recording holds)."""

    request: Request
    response: Response

    def to_dict(self) -> dict[str, Any]:
        return {"request": self.request.to_dict(), "response": self.response.to_dict()}


@dataclass
class Pair:
    """The same request answered by control and candidate (and optionally control again).

    `candidate` is None when the candidate failed; `candidate_error` then says why.
    `secondary` is the control's second answer, used for noise learning.
    """

    request: Request
    control: Response
    candidate: Response | None = None
    candidate_error: str | None = None
    secondary: Response | None = None
    endpoint: str | None = None


class DiffKind(StrEnum):
    STATUS = "status"
    HEADER = "header"
    BODY = "body"
    MISSING = "missing"  # in control, absent from candidate
    EXTRA = "extra"  # absent from control, present in candidate
    TYPE = "type"
    VALUE = "value"
    ORDER = "order"


@dataclass(frozen=True)
class Difference:
    """One divergence. A missing side is `ABSENT` (never confused with JSON null)."""

    kind: DiffKind
    path: str
    control: Any = ABSENT
    candidate: Any = ABSENT
    noise: bool = False

    def as_noise(self) -> Difference:
        return Difference(self.kind, self.path, self.control, self.candidate, True)

    def as_regression(self) -> Difference:
        return Difference(self.kind, self.path, self.control, self.candidate, False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": str(self.kind), "path": self.path}
        if self.control is not ABSENT:
            out["control"] = self.control
        if self.candidate is not ABSENT:
            out["candidate"] = self.candidate
        if self.noise:
            out["noise"] = True
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Difference:
        return cls(
            DiffKind(data["kind"]),
            str(data["path"]),
            data.get("control", ABSENT),
            data.get("candidate", ABSENT),
            bool(data.get("noise", False)),
        )

    def describe(self) -> str:
        """One readable line, e.g. `value at $.price.cents: 12999 != 13000`."""

        def show(v: Any) -> str:
            if v is ABSENT:
                return "<absent>"
            text = json.dumps(v, ensure_ascii=False, default=str)
            return text if len(text) <= 80 else text[:77] + "..."

        tag = " (noise)" if self.noise else ""
        return f"{self.kind} at {self.path}: control={show(self.control)} candidate={show(self.candidate)}{tag}"


class Outcome(StrEnum):
    MATCH = "match"
    MISMATCH = "mismatch"
    NOISE_ONLY = "noise-only"
    ERROR = "error"
    DENIED = "denied"  # both sides refused (401/403): agreement that proves nothing
    # differed, but a re-check of both sides a moment later agreed: CDC lag, not a regression
    LAGGED = "lagged"


DENIED_STATUSES = frozenset({401, 403})


def both_denied(control: Response | None, candidate: Response | None) -> bool:
    """True when monolith and service both refused the request (no credentials, or stale)."""
    return (
        control is not None
        and candidate is not None
        and control.status in DENIED_STATUSES
        and candidate.status in DENIED_STATUSES
    )


@dataclass
class ComparisonResult:
    """Verdict for one request: regressions and noise are kept apart; a pair both sides
    refused (`denied`) is never a match."""

    endpoint: str
    request: Request
    differences: list[Difference] = field(default_factory=list)
    error: str | None = None
    control: Response | None = None
    candidate: Response | None = None
    denied: bool = False
    lagged: bool = False  # a re-check of this (differing) request agreed: the copy lagged

    @property
    def regressions(self) -> list[Difference]:
        return [d for d in self.differences if not d.noise]

    @property
    def noise(self) -> list[Difference]:
        return [d for d in self.differences if d.noise]

    @property
    def outcome(self) -> Outcome:
        if self.lagged:
            return Outcome.LAGGED
        if self.error is not None:
            return Outcome.ERROR
        if any(not d.noise for d in self.differences):
            return Outcome.MISMATCH
        if self.denied:
            return Outcome.DENIED
        if self.differences:
            return Outcome.NOISE_ONLY
        return Outcome.MATCH

    def to_dict(self, *, include_bodies: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "endpoint": self.endpoint,
            "outcome": str(self.outcome),
            "request": {
                "method": self.request.method,
                "path": self.request.path,
                "query": [list(p) for p in self.request.query],
            },
            "differences": [d.to_dict() for d in self.differences],
        }
        if self.error is not None:
            out["error"] = self.error
        if include_bodies:
            for side in ("control", "candidate"):
                resp = getattr(self, side)
                if resp is not None:
                    out[side] = resp.to_dict()
        return out
