"""The one request-head validator: its verdicts are what both request paths answer.

The fast path accepts only heads it parsed strictly (a subset of what passes here) and hands
every other connection to the aiohttp path, whose parser (`StrictRequestParser`) calls these
checks on the raw request line and header lines before anything is routed. So a request line
such as `GET /x` (HTTP/0.9), `GET /x HTTP/2.0` or `GET  /x HTTP/1.1` gets one answer, a 400,
as gunicorn gives, whichever path read it.

Also here: the header names the proxy recomputes or drops, shared by both paths.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from strangler_proxy.config import Limits

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
#: Request headers the proxy computes itself: a client's own values never reach an upstream
#: (but a prior X-Forwarded-For is kept as the start of the chain).
FORWARDED = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"})
#: Request headers never copied as they came (the upstream gets its own Host unless
#: preserve_host; `Expect` is answered by the proxy itself).
REQUEST_DROP = HOP_BY_HOP | FORWARDED | {"host", "expect"}
SMALL_BODY = 64 * 1024  # request bodies up to this are read whole (cheaper than streaming)

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([!-~]+) HTTP/([0-9])\.([0-9])")
_HEADER_NAME = re.compile(_TOKEN)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A 4xx the proxy answers itself, before routing (the message never echoes the input)."""

    status: int
    code: str
    message: str


def check_line(line: bytes, limits: Limits) -> Refusal | None:
    """Verdict on a raw request line (without its CRLF)."""
    found = REQUEST_LINE.fullmatch(line)
    if found is None:
        parts = line.split(b" ")
        if len(parts) == 2 and all(parts):
            return Refusal(400, "bad_request", "HTTP/0.9 requests are not supported")
        return Refusal(
            400,
            "bad_request",
            "malformed request line: expected METHOD /target HTTP/1.1, single spaces",
        )
    method, target, major, minor = found.groups()
    if major != b"1" or minor not in (b"0", b"1"):
        return Refusal(
            400,
            "bad_request",
            f"HTTP/{major.decode()}.{minor.decode()} is not supported: HTTP/1.0 or 1.1 only",
        )
    if method == b"CONNECT":
        return Refusal(400, "bad_request", "CONNECT is not supported: this is not a forward proxy")
    if not target.startswith(b"/"):
        return Refusal(
            400,
            "bad_request",
            "only origin-form request targets (/path?query) are accepted; "
            "absolute-form and authority-form targets are refused",
        )
    if len(target) > limits.max_line_bytes:
        return Refusal(
            414, "uri_too_long", f"request target longer than {limits.max_line_bytes} bytes"
        )
    return None


def check_headers(headers: Iterable[tuple[bytes, bytes]], limits: Limits) -> Refusal | None:
    """Verdict on the raw header (name, value) pairs of a request whose line passed."""
    count = size = 0
    length: bytes | None = None
    expect: bytes | None = None
    for name, value in headers:
        count += 1
        size += len(name) + len(value) + 4
        lower = name.lower()
        if lower == b"content-length":
            length = value
        elif lower == b"expect":
            expect = value
    if count > limits.max_headers:
        return Refusal(431, "headers_too_large", f"more than {limits.max_headers} request headers")
    if size > limits.max_header_bytes:
        return Refusal(
            431, "headers_too_large", f"request headers larger than {limits.max_header_bytes} bytes"
        )
    if length is not None and length.strip().isdigit() and int(length) > limits.max_body_bytes:
        return too_large(limits)
    if expect is not None and expect.strip().lower() != b"100-continue":
        return Refusal(417, "expectation_failed", "only Expect: 100-continue is supported")
    return None


def too_large(limits: Limits) -> Refusal:
    return Refusal(
        413, "payload_too_large", f"request body larger than {limits.max_body_bytes} bytes"
    )


def check_head(head: bytes, limits: Limits) -> Refusal | None:
    """Verdict on a whole raw head (request line + header lines, CRLF-separated)."""
    line, _, rest = head.partition(b"\r\n")
    refusal = check_line(line, limits)
    if refusal is not None:
        return refusal
    pairs = []
    for raw in rest.split(b"\r\n") if rest else ():
        name, sep, value = raw.partition(b":")
        if not sep or _HEADER_NAME.fullmatch(name) is None:
            return Refusal(400, "bad_request", "malformed header line")
        pairs.append((name, value.strip(b" \t")))
    return check_headers(pairs, limits)
