"""Dashboard sign-in sessions: signed cookies, a server-side session list, CSRF tokens.

A cookie is `<payload>.<signature>`: the payload is base64url JSON `{"sid", "exp"}` and the
signature HMAC-SHA256 over it with a per-process secret, compared with
`hmac.compare_digest`. The session id must also still be in the server-side list, so
signing out (or a proxy restart, which makes a new secret) really ends the session even if
someone kept a copy of the cookie. The CSRF token is derived from the session id with the
same secret (HMAC with a different label): per session, nothing extra to store, checked in
constant time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

COOKIE_NAME = "strangler_dashboard"
DEFAULT_TTL = 12 * 3600.0
MAX_SESSIONS = 1000


@dataclass(frozen=True)
class Session:
    """A signed-in browser: its id, CSRF token and expiry (unix time)."""

    sid: str
    csrf: str
    expires: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionManager:
    """Issues, verifies and revokes sessions; thread-safe, bounded in memory."""

    def __init__(
        self,
        secret: bytes | None = None,
        *,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.time,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        if len(self._secret) < 16:
            raise ValueError("secret must be at least 16 bytes")
        self.ttl = ttl
        self._clock = clock
        self._max = max_sessions
        self._live: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def _sign(self, label: bytes, data: bytes) -> bytes:
        return hmac.new(self._secret, label + b"|" + data, hashlib.sha256).digest()

    def csrf_for(self, sid: str) -> str:
        return _b64(self._sign(b"csrf", sid.encode()))

    def issue(self) -> tuple[str, Session]:
        """A new session and the cookie value that carries it."""
        sid = secrets.token_urlsafe(24)
        expires = self._clock() + self.ttl
        payload = _b64(json.dumps({"sid": sid, "exp": int(expires)}).encode())
        cookie = f"{payload}.{_b64(self._sign(b'cookie', payload.encode()))}"
        with self._lock:
            self._prune()
            self._live[sid] = expires
            while len(self._live) > self._max:
                self._live.popitem(last=False)
        return cookie, Session(sid, self.csrf_for(sid), expires)

    def verify(self, cookie: str | None) -> Session | None:
        """The session for a cookie value, or None if forged, expired or signed out."""
        if not cookie or not cookie.isascii() or cookie.count(".") != 1:
            return None
        payload, _, signature = cookie.partition(".")
        try:
            given = _unb64(signature)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(given, self._sign(b"cookie", payload.encode())):
            return None
        try:
            data = json.loads(_unb64(payload))
            sid, exp = str(data["sid"]), float(data["exp"])
        except (binascii.Error, ValueError, KeyError, TypeError):
            return None
        now = self._clock()
        if exp < now:
            return None
        with self._lock:
            live = self._live.get(sid)
        if live is None or live < now:
            return None
        return Session(sid, self.csrf_for(sid), live)

    def check_csrf(self, session: Session, given: str | None) -> bool:
        """Constant-time comparison of a submitted CSRF token with the session's."""
        if not given or not given.isascii():
            return False
        return hmac.compare_digest(given.encode(), session.csrf.encode())

    def revoke(self, sid: str) -> None:
        with self._lock:
            self._live.pop(sid, None)

    @property
    def active(self) -> int:
        with self._lock:
            self._prune()
            return len(self._live)

    def _prune(self) -> None:
        now = self._clock()
        for sid in [s for s, exp in self._live.items() if exp < now]:
            del self._live[sid]


class LoginThrottle:
    """At most `limit` failed sign-ins per `window` seconds per client address, then refuse
    that address for a while (others still sign in). Remembers at most `max_clients`.

    The admin port is loopback-only, so this is a brake on scripted guessing, not a lockout.
    """

    def __init__(
        self,
        limit: int = 10,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 10_000,
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._max = max_clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, client: str = "") -> float:
        """Seconds `client` waits before another attempt is accepted (0 when allowed now)."""
        with self._lock:
            failures = self._expire(client)
            if len(failures) < self.limit:
                return 0.0
            return max(0.0, failures[0] + self.window - self._clock())

    def failed(self, client: str = "") -> None:
        with self._lock:
            self._expire(client).append(self._clock())
            self._failures.move_to_end(client)
            while len(self._failures) > self._max:
                self._failures.popitem(last=False)

    def succeeded(self, client: str = "") -> None:
        with self._lock:
            self._failures.pop(client, None)

    def _expire(self, client: str) -> deque[float]:
        failures = self._failures.setdefault(client, deque())
        cutoff = self._clock() - self.window
        while failures and failures[0] <= cutoff:
            failures.popleft()
        return failures
