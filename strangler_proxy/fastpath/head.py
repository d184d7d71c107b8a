"""The fast path's request-head parser: strict, byte-level, accepting a subset of what
`strangler_proxy.headcheck` passes (anything else is handed to the aiohttp path, whose parser
gives the shared verdicts).

Accepted: a request line `METHOD /origin-form HTTP/1.1` for the common methods, every header
line `token: value` with no control characters, at most one Content-Length made of digits,
no Transfer-Encoding/Upgrade/Expect, no percent-encoded or dot-segment path.
"""

from __future__ import annotations

import re

from strangler_proxy.headcheck import REQUEST_DROP, SMALL_BODY
from strangler_proxy.policy import Decision

_REQUEST_LINE = re.compile(rb"(GET|POST|PUT|PATCH|DELETE|OPTIONS) (/[!-\"$-~]*) HTTP/1\.1")
# One header line (after the CRLF that starts it): a token name, a colon, the value without
# surrounding blanks. The value may hold TAB, visible ASCII and obs-text, never another control
# character (NUL, bare CR or LF, ...), and the line must end at a CRLF (or the end of the head).
# With the request line regex, this validates every byte of a head: `findall` must match
# every line, or the head is refused. The value starts with a non-blank and the trailing
# blanks are only matched after a value, so the two `[ \t]*` never compete for one run of
# blanks and a refused line costs linear time (when they did, a value of blanks ending in a
# control character backtracked quadratically: seconds of CPU for a 16 KB head).
_HEADER_LINE = re.compile(
    rb"\r\n([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*"
    rb"(?:([^\x00-\x20\x7f](?:[^\x00-\x08\x0a-\x1f\x7f]*[^\x00-\x20\x7f])?)[ \t]*)?"
    rb"(?=\r\n|\Z)"
)
_DIGITS = re.compile(rb"[0-9]{1,18}")
# Request headers the fast path refuses to handle itself (they change framing or semantics).
_HANDOFF_HEADERS = frozenset({b"transfer-encoding", b"upgrade", b"expect", b"http2-settings"})
#: Request headers never copied as they came (the shared list, plus the framing we redo).
REQUEST_SKIP = frozenset(h.encode() for h in REQUEST_DROP) | {b"content-length"}
# Request headers parse_head looks at (everything else is only collected).
_SPECIAL_REQUEST = _HANDOFF_HEADERS | {
    b"content-length",
    b"host",
    b"connection",
    b"x-request-id",
    b"x-forwarded-for",
}
_NO_TOKENS: frozenset[bytes] = frozenset()


class ParsedRequest:
    """A validated request: everything the fast path needs, as bytes where cheap."""

    __slots__ = (
        "method",
        "target",
        "path",
        "headers",
        "length",
        "body",
        "keep_alive",
        "host",
        "request_id",
        "prior_xff",
        "tokens",
        "line",
        "id_line",
        "decision",
    )

    def __init__(
        self,
        method: str,
        target: bytes,
        path: str,
        headers: list[tuple[bytes, bytes, bytes]],
        length: int,
        keep_alive: bool,
        host: bytes | None,
        request_id: bytes | None,
        prior_xff: bytes | None,
        tokens: frozenset[bytes],
        line: bytes,
    ) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.headers = headers  # (lower-case name, name, value), in order
        self.length = length  # Content-Length (0 when absent)
        self.body = b""  # filled in once the whole body is in
        self.keep_alive = keep_alive
        self.host = host
        self.request_id = request_id  # an incoming X-Request-ID (forwarded as is)
        self.prior_xff = prior_xff
        self.tokens = tokens  # Connection tokens (lower-case)
        self.line = line  # the validated request line with its CRLF, forwarded verbatim
        self.id_line: bytes | None = None  # the X-Request-ID we generated (kept on retries)
        self.decision: Decision | None = None  # set by FastServer.plan for declared routes

    def header(self, lower_name: bytes) -> bytes | None:
        for lower, _name, value in self.headers:
            if lower == lower_name:
                return value
        return None


def parse_head(
    head: bytes,
    max_line: int,
    max_header_bytes: int,
    max_headers: int = 100,
    max_body: int = SMALL_BODY,
) -> ParsedRequest | None:
    """Strictly validate a request head (without the final CRLFCRLF); None means hand off.

    A declared body longer than `max_body` is handed off too: the full path reads big bodies
    (and answers 413 past the configured limit, as the shared validator says)."""
    crlf = head.count(b"\r\n")  # = the number of header lines
    if crlf > max_headers:
        return None
    line_end = head.find(b"\r\n") if crlf else len(head)
    first = _REQUEST_LINE.fullmatch(head, 0, line_end)
    if first is None:
        return None
    method, target = first.groups()
    if len(target) > max_line:
        return None
    raw_path = target.split(b"?", 1)[0]
    if b"%" in raw_path or b"/." in raw_path:
        return None
    if len(head) - line_end > max_header_bytes:
        return None
    pairs = _HEADER_LINE.findall(head, line_end) if crlf else []
    if len(pairs) != crlf:
        return None  # some line is not `token: value`, or holds a control character
    headers: list[tuple[bytes, bytes, bytes]] = []
    append = headers.append
    length: int | None = None
    host = request_id = prior_xff = None
    connection: list[bytes] | None = None
    special = _SPECIAL_REQUEST
    for name, value in pairs:
        lower = name.lower()
        if lower in special:
            if lower == b"host":
                if host is not None:
                    return None
                host = value
            elif lower == b"content-length":
                if length is not None or _DIGITS.fullmatch(value) is None:
                    return None
                length = int(value)
                if length > max_body:
                    return None
            elif lower == b"connection":
                if connection is None:
                    connection = []
                connection.append(value)
            elif lower == b"x-request-id":
                if request_id is None:
                    request_id = value
            elif lower == b"x-forwarded-for":
                if prior_xff is None:
                    prior_xff = value
            else:  # Transfer-Encoding, Upgrade, Expect, HTTP2-Settings
                return None
        append((lower, name, value))
    tokens = _NO_TOKENS
    keep_alive = True
    if connection:
        tokens = frozenset(
            t.strip().lower() for v in connection for t in v.split(b",") if t.strip()
        )
        if b"upgrade" in tokens:
            return None
        keep_alive = b"close" not in tokens
        if b"x-request-id" in tokens:
            request_id = None
        if b"x-forwarded-for" in tokens:
            prior_xff = None
    return ParsedRequest(
        method.decode(),
        target,
        raw_path.decode("ascii"),
        headers,
        length or 0,
        keep_alive,
        host,
        request_id,
        prior_xff,
        tokens,
        head[: line_end + 2] if crlf else head + b"\r\n",
    )
