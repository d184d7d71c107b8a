"""The routing decision: which side answers a request. One pure function both request paths call.

Why one function: the fast path and the aiohttp path used to decide separately and drifted
(a header one path stripped reached the upstream on the other). Both now hand `decide` the
matched route, the method and a *header getter over raw bytes*, so the same request bytes give
the same decision whichever path reads them.

Inputs beyond the route table:

- the **client key** (`ClientKeySpec`, config `client_key`): a header, a cookie, or a hash of a
  header (e.g. `Authorization`; the value itself is never kept), else the client address. A
  route's own `sticky_header` / `sticky_cookie` wins for its canary.
- **read-your-writes pins** (`RywPins`, config `ryw_window_s` per service): after a client's
  write to any route of service S, that client's reads of S's routes go to the side that took
  the write for the window, so a read never lands on the side that has not replicated it yet.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from strangler_proxy.routes import (
    IDEMPOTENT_METHODS,
    MODE_CANARY,
    MODE_EXTRACTED,
    MODE_HELD,
    MODE_SHADOW,
    MONOLITH,
    SAFE_METHODS,
    Match,
    Route,
)

#: Reads a request header's raw value by lower-case name (the first one), or None.
HeaderGetter = Callable[[bytes], bytes | None]

CLIENT_KEY_KINDS = ("header", "cookie", "hash_header")


def canary_bucket(key: str) -> int:
    """Deterministic bucket 0..9999 for a sticky key (stable across processes and restarts)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 10000


def cookie_value(header: bytes | None, name: str) -> bytes | None:
    """The value of cookie `name` in a raw `Cookie` header (first wins, quotes stripped).

    Both paths read cookies with this, never with their own cookie parsers, so a malformed
    cookie header cannot split one client across two canary buckets.
    """
    if not header:
        return None
    wanted = name.encode("utf-8", "surrogateescape")
    for part in header.split(b";"):
        key, sep, value = part.partition(b"=")
        if sep and key.strip() == wanted:
            value = value.strip()
            if len(value) >= 2 and value[:1] == value[-1:] == b'"':
                value = value[1:-1]
            return value
    return None


def _text(raw: bytes) -> str:
    # Decoded as aiohttp decodes header values, so keys read the same on both paths.
    return raw.decode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class ClientKeySpec:
    """Where a client's identity comes from: `header`, `cookie` or `hash_header` + a name."""

    kind: str
    name: str

    def __post_init__(self) -> None:
        if self.kind not in CLIENT_KEY_KINDS:
            raise ValueError(
                f'client_key must be one of {{header|cookie|hash_header = "<name>"}}, '
                f"got {self.kind!r}"
            )
        if not isinstance(self.name, str) or not self.name.strip() or not self.name.isascii():
            raise ValueError(f"client_key.{self.kind} must be a non-empty ASCII name")

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> ClientKeySpec:
        if not isinstance(data, Mapping) or len(data) != 1:
            raise ValueError(
                'client_key must be one table entry: {header = "X-Client-Id"}, '
                '{cookie = "sid"} or {hash_header = "Authorization"}'
            )
        ((kind, name),) = data.items()
        return cls(str(kind), name)  # type: ignore[arg-type]

    def read(self, header: HeaderGetter) -> str | None:
        """The key this spec finds in a request, or None when the request does not carry it."""
        if self.kind == "cookie":
            raw = cookie_value(header(b"cookie"), self.name)
        else:
            raw = header(self.name.lower().encode())
        if not raw:
            return None
        if self.kind == "hash_header":
            return hashlib.blake2b(raw, digest_size=12).hexdigest()
        return _text(raw)


def client_key(spec: ClientKeySpec | None, header: HeaderGetter, remote: str) -> str:
    """The configured client key of a request, else its client address."""
    if spec is not None:
        key = spec.read(header)
        if key:
            return key
    return remote


def sticky_source(
    route: Route, spec: ClientKeySpec | None, header: HeaderGetter, remote: str
) -> tuple[str, bool]:
    """The canary's sticky key (the route's own header/cookie first, then the client key,
    else the client address) and whether it is the client address."""
    raw: bytes | None = None
    if route.sticky_header:
        raw = header(route.sticky_header.lower().encode())
    elif route.sticky_cookie:
        raw = cookie_value(header(b"cookie"), route.sticky_cookie)
    if raw:
        return _text(raw), False
    key = client_key(spec, header, remote)
    return key, key is remote


def sticky_key(route: Route, spec: ClientKeySpec | None, header: HeaderGetter, remote: str) -> str:
    """The canary's sticky key: the route's own header/cookie first, then the client key."""
    return sticky_source(route, spec, header, remote)[0]


def sticky_name(route: Route, spec: ClientKeySpec | None) -> str | None:
    """The configured key a canary reads before the client address, as a user names it
    (`header X-Client-Id`, `cookie sid`, `hash_header Authorization`), or None."""
    if route.sticky_header:
        return f"header {route.sticky_header}"
    if route.sticky_cookie:
        return f"cookie {route.sticky_cookie}"
    if spec is not None:
        return f"{spec.kind} {spec.name}"
    return None


class RywPins:
    """Per (service, client key): the side that took the client's last write, until when.

    Bounded: at most `capacity` entries, least recently written first out (an evicted client
    merely loses its pin early). Lookups drop expired entries.
    """

    def __init__(self, windows: Mapping[str, float], capacity: int = 100_000) -> None:
        self.windows = {name: float(w) for name, w in windows.items() if w > 0}
        self.capacity = capacity
        self._pins: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pins)

    def window(self, service: str) -> float:
        return self.windows.get(service, 0.0)

    def side(self, service: str, key: str, now: float) -> str | None:
        entry = self._pins.get((service, key))
        if entry is None:
            return None
        side, until = entry
        if until <= now:
            del self._pins[(service, key)]
            return None
        return side

    def record(self, service: str, key: str, side: str, now: float) -> None:
        window = self.windows.get(service)
        if not window:
            return
        pins = self._pins
        pins[(service, key)] = (side, now + window)
        pins.move_to_end((service, key))
        while len(pins) > self.capacity:
            pins.popitem(last=False)


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a request goes.

    `target`: the side that answers first (MONOLITH or a service name, which may be a service
    this proxy has no upstream for: the caller answers 502). `fallback`: on the service's
    failure or 5xx, the monolith answers instead (idempotent methods only). `shadow`: the monolith answers and a copy goes
    to the route's service. `pin_key`: set for a write to a service with a read-your-writes
    window; the caller records the side that served it under this key. `pinned`: this read
    went to the side of the client's last write. `bucket`: a canary route's sticky-key
    bucket (0..9999; -1 for any other mode) and `by_address`: that key was the client
    address, for the proxy's observed-split statistics.
    """

    target: str
    fallback: bool = False
    shadow: bool = False
    shadow_skipped: bool = False
    pin_key: str | None = None
    pinned: bool = False
    held: bool = False
    bucket: int = -1
    by_address: bool = False


TO_MONOLITH = Decision(MONOLITH)


def decide(
    match: Match,
    method: str,
    header: HeaderGetter,
    remote: str,
    spec: ClientKeySpec | None = None,
    pins: RywPins | None = None,
    now: float = 0.0,
) -> Decision:
    """The routing decision for one request (pure: reads `pins`, never writes them)."""
    route = match.route
    if route is None:
        return TO_MONOLITH
    service = route.service
    kind = route.mode.kind
    if kind == MODE_HELD:
        return Decision(service, held=True)
    if kind == MODE_SHADOW:
        copy = method in SAFE_METHODS or route.shadow_writes
        first = Decision(MONOLITH, shadow=copy, shadow_skipped=not copy)
    elif kind == MODE_EXTRACTED:
        first = Decision(service, fallback=route.fallback and method in IDEMPOTENT_METHODS)
    elif kind == MODE_CANARY:
        key, by_address = sticky_source(route, spec, header, remote)
        bucket = canary_bucket(key)
        if bucket < match.mode.threshold:
            fallback = route.fallback and method in IDEMPOTENT_METHODS
            first = Decision(service, fallback, bucket=bucket, by_address=by_address)
        else:
            first = Decision(MONOLITH, bucket=bucket, by_address=by_address)
    else:
        first = TO_MONOLITH
    if pins is None or service == MONOLITH or not pins.window(service):
        return first
    key = client_key(spec, header, remote)
    if method not in SAFE_METHODS:
        return Decision(
            first.target,
            first.fallback,
            first.shadow,
            first.shadow_skipped,
            pin_key=key,
            bucket=first.bucket,
            by_address=first.by_address,
        )
    side = pins.side(service, key, now)
    if side is None:
        return first
    return Decision(side, pinned=True, bucket=first.bucket, by_address=first.by_address)
