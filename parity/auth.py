"""Credentials for parity requests: fixed headers and an `auth` hook command.

A comparison of two 401 answers proves nothing, so every request source (generated,
recorded, hand-written, the pytest plugin) sends the same credentials to monolith and
service. The hook is a command whose standard output gives headers — `Name: value` lines or
one JSON object — run at the start and again whenever a backend answers 401, so a long run
outlives a token's expiry. Credential values live in memory only: they are never part of an
error message, a `repr`, a recording or a report.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from parity.model import Request, Response
from parity.recording import REDACTED
from parity.runner import Backend

HOOK_TIMEOUT = 30.0


class AuthError(RuntimeError):
    """Credentials cannot be obtained or a replay cannot be authenticated; says why."""


def parse_header_option(text: str) -> tuple[str, str]:
    """`Name: value` or `Name:value` (what `--header` takes) → (name, value)."""
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name or any(c.isspace() for c in name):
        raise ValueError(f"expected NAME:VALUE, got a value starting {text[:12]!r}")
    return name, value.strip()


def parse_hook_output(text: str) -> dict[str, str]:
    """Headers from an auth hook's output: a JSON object, or `Name: value` lines."""
    stripped = text.strip()
    if not stripped:
        raise AuthError("auth hook printed nothing (expected 'Name: value' lines or a JSON object)")
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except ValueError:
            raise AuthError("auth hook output starts with '{' but is not a JSON object") from None
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise AuthError("auth hook JSON output must map header names to string values")
        return dict(data)
    out: dict[str, str] = {}
    for n, line in enumerate(stripped.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            name, value = parse_header_option(line)
        except ValueError:
            raise AuthError(f"auth hook output line {n}: expected 'Name: value'") from None
        out[name] = value
    return out


class Credentials:
    """Headers sent with every request to both sides; refreshed through the hook on 401.

    Thread-safe: concurrent 401s refresh once (a refresh is skipped when another thread
    already refreshed since the caller's headers were taken)."""

    def __init__(
        self,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        hook: str | Sequence[str] | None = None,
        *,
        timeout: float = HOOK_TIMEOUT,
    ) -> None:
        items = headers.items() if isinstance(headers, Mapping) else headers
        self._fixed = {str(k).lower(): str(v) for k, v in items}
        if isinstance(hook, str):
            hook = shlex.split(hook)
        self.hook: tuple[str, ...] | None = tuple(hook) if hook else None
        self.timeout = timeout
        self._lock = threading.Lock()
        self._from_hook: dict[str, str] | None = None
        self.version = 0
        self.refreshes = 0

    def __repr__(self) -> str:  # never the values
        return f"Credentials(headers={sorted(self.names())}, hook={self.hook is not None})"

    def __bool__(self) -> bool:
        return bool(self._fixed) or self.hook is not None

    def names(self) -> set[str]:
        """Lower-case names of the headers sent (the hook's once it has run)."""
        return set(self._fixed) | set(self._from_hook or ())

    def current(self) -> tuple[int, dict[str, str]]:
        """(version, headers); runs the hook the first time."""
        with self._lock:
            if self.hook is not None and self._from_hook is None:
                self._run_hook()
            return self.version, {**(self._from_hook or {}), **self._fixed}

    def refresh(self, seen: int) -> bool:
        """Run the hook again unless someone did since version `seen`; False without a hook."""
        if self.hook is None:
            return False
        with self._lock:
            if self.version == seen:
                self._run_hook()
                self.refreshes += 1
            return True

    def _run_hook(self) -> None:
        assert self.hook is not None
        what = f"auth hook {self.hook[0]!r}"
        try:
            done = subprocess.run(  # noqa: S603 - the user's own configured command
                list(self.hook),
                stdout=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                timeout=self.timeout,
                check=False,
            )
        except FileNotFoundError:
            raise AuthError(f"{what}: command not found") from None
        except subprocess.TimeoutExpired:
            raise AuthError(f"{what}: no answer within {self.timeout:g}s") from None
        if done.returncode != 0:
            raise AuthError(f"{what} exited with status {done.returncode}")
        headers = parse_hook_output(done.stdout.decode("utf-8", "replace"))
        self._from_hook = {k.lower(): v for k, v in headers.items()}
        self.version += 1

    def apply(self, request: Request, headers: Mapping[str, str]) -> Request:
        """`request` with `headers` set (they win) and no redacted placeholder left."""
        merged = {k: v for k, v in request.headers.items() if v != REDACTED}
        merged.update(headers)
        return Request(request.method, request.path, request.query, merged, request.body)


class AuthenticatedBackend(Backend):
    """A backend that sends the credentials and, on a 401, refreshes them once and retries."""

    def __init__(self, inner: Backend, credentials: Credentials) -> None:
        self.inner = inner
        self.credentials = credentials
        self.name = inner.name

    retries = 2  # fresh credentials per 401: concurrent requests may use a new token up

    def send(self, request: Request) -> Response:
        version, headers = self.credentials.current()
        response = self.inner.send(self.credentials.apply(request, headers))
        for _ in range(self.retries):
            if response.status != 401 or not self.credentials.refresh(version):
                break
            version, headers = self.credentials.current()
            response = self.inner.send(self.credentials.apply(request, headers))
        return response

    def close(self) -> None:
        self.inner.close()


def authenticated(backend: Backend, credentials: Credentials | None) -> Backend:
    """`backend` sending `credentials` (itself when there are none)."""
    if not credentials:
        return backend
    return AuthenticatedBackend(backend, credentials)


def as_credentials(value: Any) -> Credentials | None:
    """Credentials from Credentials, a header mapping, or None (the pytest plugin's input)."""
    if value is None or isinstance(value, Credentials):
        return value
    if isinstance(value, Mapping):
        return Credentials(value)
    raise TypeError(
        f"credentials: expected Credentials or a header mapping, got {type(value).__name__}"
    )


def redacted_headers(requests: Iterable[Request]) -> dict[str, int]:
    """Header name → how many requests carry it as a redaction placeholder."""
    counts: dict[str, int] = {}
    for req in requests:
        for name, value in req.headers.items():
            if value == REDACTED:
                counts[name] = counts.get(name, 0) + 1
    return counts


_PATH_MARKS = (REDACTED, quote(REDACTED))  # as recorded, and percent-encoded


def holds_redacted_data(request: Request) -> bool:
    """True when the request's path holds a redaction placeholder (an e-mail in
    `/users/by-email/<address>`): replayed, both sides would answer for a resource that does
    not exist (a 404 pair that matches and proves nothing). Placeholders in a query or body
    stay: they are usually credentials, which `--header` / the auth hook supply."""
    return any(mark in request.path for mark in _PATH_MARKS)


def replayable(requests: Sequence[Request]) -> tuple[list[Request], int]:
    """(the requests a replay can send, how many `holds_redacted_data` left out)."""
    kept = [r for r in requests if not holds_redacted_data(r)]
    return kept, len(requests) - len(kept)


def check_replayable(
    requests: Sequence[Request], credentials: Credentials | None, *, source: str = "recording"
) -> None:
    """Refuse to replay requests whose credentials were redacted when recorded, unless
    credentials are given: both sides would answer 401 and the run would prove nothing."""
    redacted = redacted_headers(requests)
    if not redacted or credentials:
        return
    names = ", ".join(sorted(redacted))
    count = max(redacted.values())
    raise AuthError(
        f"{source}: {count} request(s) carried credentials ({names}) that were redacted when "
        "recorded; replayed as they are, monolith and service would both refuse them (401) "
        "and the run would prove nothing. Give credentials: --header 'Authorization: Bearer "
        "...', or an auth hook (`auth = \"command\"` in the manifest's [parity] section, "
        "whose output gives the headers)."
    )
