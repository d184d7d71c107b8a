"""Recording store, redaction, live shadow-pair sink and per-endpoint statistics.

Redaction happens before anything is written (recording lines, statistics, reports):
credentials in headers, configured JSON fields (by name at any depth, or by path) and query
parameters of the same names. The proxy hands shadow pairs to `PairSink.record`; the sink
compares them, updates the per-endpoint statistics the playbook uses as a gate, and samples
them into the recording store.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import re
import threading
import time
from abc import ABC, abstractmethod
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from kitcore.redact import DEFAULT_PATTERNS, MARK, TextScrubber
from parity.compare import Comparator
from parity.model import (
    ABSENT,
    ComparisonResult,
    Difference,
    Outcome,
    Pair,
    Request,
    Response,
    decode_body,
)
from parity.paths import PathMatcher, PathSyntaxError, Segment, parse_concrete
from parity.report import EndpointSummary

log = logging.getLogger(__name__)

REDACTED = MARK
DEFAULT_REDACTED_HEADERS = frozenset(
    {"authorization", "cookie", "set-cookie", "proxy-authorization"}
)
DEFAULT_REDACTED_FIELDS = (
    "password",
    "token",
    "secret",
    "access_token",
    "refresh_token",
    "id_token",
    "api_key",
    "client_secret",
    "email",
    "phone",
    "phone_number",
    "telephone",
    "mobile",
    "card_number",
    "cvv",
    "cvc",
    "iban",
    "ssn",
)
# a field whose name ends so is a secret whatever its prefix (`resetToken`, `db_password`)
_SECRET_SUFFIXES = ("token", "secret", "password", "apikey")
_JSON_MEMBER = re.compile(r'"((?:[^"\\]|\\.){1,200})"(\s*:\s*)("(?:[^"\\]|\\.)*"|-?\d[\d.eE+-]*)')


_JSON_KEY = re.compile(r'"((?:[^"\\]|\\.)*)"\s*:')


def _secret_name(name: str) -> bool:
    return name.lower().replace("_", "").replace("-", "").endswith(_SECRET_SUFFIXES)


class Redactor:
    """Removes secrets and personal data from requests, responses, JSON values, differences.

    `fields` holds names (matched case-insensitively at any depth of a JSON body, and as
    query/form parameter names; names ending in token/secret/password/apikey always are)
    and `$`-paths (e.g. `$.card.number`, wildcards allowed). `patterns` (kitcore.redact:
    e-mail, phone, card, token, or regexes) are replaced inside every other string: JSON
    values, text bodies, paths, query values and header values.
    """

    def __init__(
        self,
        headers: Iterable[str] = (),
        fields: Iterable[str] = DEFAULT_REDACTED_FIELDS,
        patterns: Iterable[str] = DEFAULT_PATTERNS,
    ) -> None:
        self.header_names = DEFAULT_REDACTED_HEADERS | {h.lower() for h in headers}
        fields = list(fields)
        self.fields = tuple(fields)
        self.patterns = tuple(patterns)
        self.field_names = frozenset(f.lower() for f in fields if not f.startswith("$"))
        paths = [f for f in fields if f.startswith("$")]
        try:
            self.matcher = PathMatcher.compile(paths) if paths else None
        except PathSyntaxError as exc:
            raise ValueError(f"redact fields: {exc}") from None
        self.text = TextScrubber(patterns)

    def sensitive(self, name: str) -> bool:
        """True when a field or parameter of this name is always redacted."""
        return name.lower() in self.field_names or _secret_name(name)

    # ---------------------------------------------------------------- pieces
    def headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        return {
            k: (REDACTED if k.lower() in self.header_names else self.text(v))
            for k, v in headers.items()
        }

    def query(self, pairs: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
        return tuple((k, REDACTED if self.sensitive(k) else self.text(v)) for k, v in pairs)

    def json_value(self, value: Any, base: tuple[Segment, ...] = ()) -> Any:
        """A copy of `value` (found at path `base`) with redacted fields replaced."""
        state: Any = None
        if self.matcher is not None:
            state, accepted = self.matcher.start()
            for seg in base:
                if state is None:
                    break
                state, accepted = self.matcher.step(state, seg)
            if base and accepted:
                return REDACTED
        if base and isinstance(base[-1], str) and self.sensitive(base[-1]):
            return REDACTED
        return self._walk(value, state)

    def _walk(self, value: Any, state: Any) -> Any:
        """The redacted copy, built with an explicit stack (no nesting depth breaks it)."""
        root: list[Any] = [None]
        stack: list[tuple[Any, Any, Any, Any]] = [(value, state, root, 0)]
        step = self.matcher.step if self.matcher is not None else None
        while stack:
            node, st, parent, slot = stack.pop()
            if isinstance(node, dict):
                out: dict[str, Any] = {}
                parent[slot] = out
                for k, v in node.items():
                    cst, acc = step(st, k) if st is not None and step else (None, ())
                    if acc or self.sensitive(k):
                        out[k] = REDACTED
                    else:
                        out[k] = None
                        stack.append((v, cst, out, k))
            elif isinstance(node, list):
                items: list[Any] = [None] * len(node)
                parent[slot] = items
                for i, v in enumerate(node):
                    cst, acc = step(st, i) if st is not None and step else (None, ())
                    if acc:
                        items[i] = REDACTED
                    else:
                        stack.append((v, cst, items, i))
            elif isinstance(node, str):
                parent[slot] = self.text(node)
            else:
                parent[slot] = node
        return root[0]

    def free_text(self, text: str) -> str:
        """Text that may be JSON nobody could parse: secret members, then the patterns."""

        def member(m: re.Match[str]) -> str:
            if self.sensitive(m.group(1)):
                return f'"{m.group(1)}"{m.group(2)}"{REDACTED}"'
            return m.group(0)

        return self.text(_JSON_MEMBER.sub(member, text))

    def body(self, body: bytes, content_type: str = "") -> bytes:
        if not body:
            return body
        ct = content_type.lower()
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return body
        if "x-www-form-urlencoded" in ct:
            pairs = parse_qsl(text, keep_blank_values=True)
            return urlencode(self.query(pairs)).encode("utf-8")
        if self._nothing_to_redact(text):
            return body  # a big clean body is not parsed and re-written for nothing
        try:
            doc = json.loads(text)
        except RecursionError:
            return self.free_text(text).encode("utf-8")
        except ValueError:
            return self.text(text).encode("utf-8")
        try:
            return json.dumps(self.json_value(doc), ensure_ascii=False).encode("utf-8")
        except RecursionError:
            return self.free_text(text).encode("utf-8")

    def _nothing_to_redact(self, text: str) -> bool:
        """True when no redaction rule can apply to JSON `text`, decided by regex scans
        alone (no parse): no path rule, no secret key among its distinct keys, no pattern
        match. Anything doubtful says False (the full parse and walk then decide)."""
        if self.matcher is not None:
            return False
        for key in set(_JSON_KEY.findall(text)):
            if "\\" in key or self.sensitive(key):
                return False
        return self.text(text) == text

    # ---------------------------------------------------------------- records
    def request(self, request: Request) -> Request:
        return Request(
            request.method,
            self.text(request.path),
            self.query(request.query),
            self.headers(request.headers),
            self.body(request.body, request.headers.get("content-type", "")),
        )

    def response(self, response: Response) -> Response:
        return Response(
            response.status,
            self.headers(response.headers),
            self.body(response.body, response.content_type),
            response.elapsed,
        )

    def difference(self, diff: Difference) -> Difference:
        if not diff.path.startswith("$"):
            if diff.path.startswith("headers.") and diff.path[8:] in self.header_names:
                return Difference(
                    diff.kind, diff.path, _mask(diff.control), _mask(diff.candidate), diff.noise
                )
            return Difference(
                diff.kind,
                diff.path,
                self._scalar(diff.control),
                self._scalar(diff.candidate),
                diff.noise,
            )
        try:
            base = parse_concrete(diff.path)
        except PathSyntaxError:
            base = ()
        return Difference(
            diff.kind,
            self.text(diff.path),
            diff.control if diff.control is ABSENT else self.json_value(diff.control, base),
            diff.candidate if diff.candidate is ABSENT else self.json_value(diff.candidate, base),
            diff.noise,
        )

    def _scalar(self, value: Any) -> Any:
        return self.free_text(value) if isinstance(value, str) else value

    def result(self, result: ComparisonResult) -> ComparisonResult:
        return ComparisonResult(
            result.endpoint,
            self.request(result.request),
            [self.difference(d) for d in result.differences],
            self._scalar(result.error) if result.error is not None else None,
            self.response(result.control) if result.control is not None else None,
            self.response(result.candidate) if result.candidate is not None else None,
            result.denied,
            result.lagged,
        )


def _mask(value: Any) -> Any:
    return value if value is ABSENT else REDACTED


# ---------------------------------------------------------------- shadow pairs


@dataclass
class ShadowPair:
    """What the proxy knows about one shadowed request: plain values only.

    Latencies are seconds. `candidate_status` is None (and `candidate_error` set) when the
    candidate failed or timed out.
    """

    method: str
    path: str
    query: Any = ""
    request_headers: Mapping[str, str] = field(default_factory=dict)
    request_body: bytes = b""
    control_status: int = 0
    control_headers: Mapping[str, str] = field(default_factory=dict)
    control_body: bytes = b""
    control_latency: float = 0.0
    candidate_status: int | None = None
    candidate_headers: Mapping[str, str] = field(default_factory=dict)
    candidate_body: bytes = b""
    candidate_latency: float = 0.0
    candidate_error: str | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ShadowPair:
        """Accept the flat field names, or nested `control`/`candidate` {status, headers, body}."""
        flat = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for side in ("control", "candidate"):
            nested = data.get(side)
            if isinstance(nested, Mapping):
                flat.setdefault(f"{side}_status", nested.get("status"))
                flat.setdefault(f"{side}_headers", nested.get("headers") or {})
                body = nested.get("body", b"")
                flat.setdefault(
                    f"{side}_body", body if isinstance(body, bytes) else decode_body(nested)
                )
                if "elapsed" in nested:
                    flat.setdefault(f"{side}_latency", float(nested["elapsed"]))
        if "method" not in flat or "path" not in flat:
            raise ValueError("shadow pair: 'method' and 'path' are required")
        return cls(**flat)

    def to_pair(self) -> Pair:
        request = Request(
            self.method,
            self.path,
            self.query,
            dict(self.request_headers),
            _bytes(self.request_body),
        )
        control = Response(
            int(self.control_status),
            dict(self.control_headers),
            _bytes(self.control_body),
            self.control_latency,
        )
        candidate = None
        if self.candidate_status is not None and self.candidate_error is None:
            candidate = Response(
                int(self.candidate_status),
                dict(self.candidate_headers),
                _bytes(self.candidate_body),
                self.candidate_latency,
            )
        return Pair(
            request,
            control,
            candidate,
            self.candidate_error or (None if candidate else "no candidate response"),
        )


def _bytes(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return json.dumps(value).encode("utf-8")


# ---------------------------------------------------------------- recording store


class RecordingStore:
    """Append-only JSON Lines file of exchanges, sampled, redacted, rotated by size.

    Rotation renames `x.jsonl` to `x.jsonl.1` (older ones shift up to `backups`).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        sample_rate: float = 1.0,
        max_bytes: int = 64 * 1024 * 1024,
        backups: int = 5,
        redactor: Redactor | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"sample_rate: must be within [0, 1], got {sample_rate}")
        if max_bytes <= 0:
            raise ValueError(f"max_bytes: must be positive, got {max_bytes}")
        if backups < 0:
            raise ValueError(f"backups: must be >= 0, got {backups}")
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.max_bytes = max_bytes
        self.backups = backups
        self.redactor = redactor or Redactor()
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self.written = 0
        self.skipped = 0

    def sampled(self) -> bool:
        """One sampling decision (callers may sample before doing any work)."""
        if self.sample_rate >= 1.0:
            return True
        with self._lock:
            return self._rng.random() < self.sample_rate

    def record_exchange(
        self,
        request: Request,
        control: Response,
        *,
        candidate: Response | None = None,
        candidate_error: str | None = None,
        endpoint: str | None = None,
        outcome: str | None = None,
        force: bool = False,
    ) -> bool:
        """Redact and append one exchange (or pair); returns False when not sampled."""
        if not force and not self.sampled():
            with self._lock:
                self.skipped += 1
            return False
        r = self.redactor
        line: dict[str, Any] = {
            "ts": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "request": r.request(request).to_dict(),
            "control": r.response(control).to_dict(),
        }
        if endpoint:
            line["endpoint"] = endpoint
        if candidate is not None:
            line["candidate"] = r.response(candidate).to_dict()
        if candidate_error is not None:
            line["candidate_error"] = candidate_error
        if outcome is not None:
            line["outcome"] = outcome
        self._append(json.dumps(line, ensure_ascii=False) + "\n")
        return True

    def _append(self, text: str) -> None:
        data = text.encode("utf-8")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                size = 0
            if size and size + len(data) > self.max_bytes:
                self._rotate()
            with open(self.path, "ab") as fh:
                fh.write(data)
            self.written += 1

    def _rotate(self) -> None:
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
            return
        for n in range(self.backups, 0, -1):
            src = self.path if n == 1 else self.path.with_name(f"{self.path.name}.{n - 1}")
            dst = self.path.with_name(f"{self.path.name}.{n}")
            if src.exists():
                os.replace(src, dst)

    def files(self) -> list[Path]:
        """Recording files oldest first (rotated backups, then the live file)."""
        return recording_files(self.path)


def recording_files(path: str | Path) -> list[Path]:
    p = Path(path)
    backups = sorted(
        (q for q in p.parent.glob(p.name + ".*") if q.suffix[1:].isdigit()),
        key=lambda q: -int(q.suffix[1:]),
    )
    return [*backups, *([p] if p.exists() else [])]


def read_recording(path: str | Path, *, include_rotated: bool = True) -> Iterator[dict[str, Any]]:
    """Yield recorded lines; a malformed line raises ValueError naming file and line."""
    files = recording_files(path) if include_rotated else [Path(path)]
    if not files:
        raise FileNotFoundError(f"recording {path}: no such file")
    for f in files:
        with open(f, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"recording {f}:{n}: not JSON ({exc.msg})") from None
                if not isinstance(data, dict) or "request" not in data:
                    raise ValueError(f"recording {f}:{n}: missing 'request'")
                yield data


# ---------------------------------------------------------------- statistics


@dataclass
class EndpointStats(EndpointSummary):
    """Live counters for one endpoint plus its latest mismatches (newest first)."""

    last_mismatches: list[dict[str, Any]] = field(default_factory=list)
    updated_at: float | None = None

    @property
    def agreement(self) -> float:
        """Share of compared requests without regressions (1.0 when nothing seen yet); pairs
        both sides refused (401/403) compared nothing and are left out, and so are pairs that
        differed but agreed on a re-check (`lagged`: CDC lag, no verdict either way)."""
        compared = self.requests - self.errors - self.denied - self.lagged
        return 1.0 if compared <= 0 else (self.matches + self.noise) / compared

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "agreement": round(self.agreement, 6),
            "last_mismatches": self.last_mismatches,
            "updated_at": self.updated_at,
        }


_COUNTER = {
    Outcome.MATCH: "matches",
    Outcome.MISMATCH: "mismatches",
    Outcome.NOISE_ONLY: "noise",
    Outcome.ERROR: "errors",
    Outcome.DENIED: "denied",
    Outcome.LAGGED: "lagged",
}
# counters added after the first release: an older statistics database gets the column
_LATER_COUNTERS = ("denied", "lagged")


def _detail(result: ComparisonResult, limit: int = 50) -> dict[str, Any]:
    d = result.to_dict()
    d["differences"] = d["differences"][:limit]
    d["at"] = time.time()
    return d


class StatsStore(ABC):
    """Port: per-endpoint parity statistics (the playbook's shadow gate reads them)."""

    keep_last: int = 20

    @abstractmethod
    def add(self, result: ComparisonResult) -> None:
        """Count one (already redacted) result."""

    @abstractmethod
    def stats_for(self, endpoint: str) -> EndpointStats: ...

    @abstractmethod
    def endpoints(self) -> list[str]: ...

    @abstractmethod
    def reset(self, endpoint: str | None = None) -> None: ...

    def all_stats(self) -> list[EndpointStats]:
        return [self.stats_for(e) for e in self.endpoints()]


class MemoryStatsStore(StatsStore):
    """In-process statistics (tests, one-off runs)."""

    def __init__(self, keep_last: int = 20) -> None:
        self.keep_last = keep_last
        self._stats: dict[str, EndpointStats] = {}
        self._last: dict[str, deque[dict[str, Any]]] = defaultdict(
            lambda: deque(maxlen=self.keep_last)
        )
        self._lock = threading.Lock()

    def add(self, result: ComparisonResult) -> None:
        with self._lock:
            s = self._stats.setdefault(result.endpoint, EndpointStats(result.endpoint))
            s.requests += 1
            attr = _COUNTER[result.outcome]
            setattr(s, attr, getattr(s, attr) + 1)
            s.updated_at = time.time()
            if result.outcome in (Outcome.MISMATCH, Outcome.ERROR):
                self._last[result.endpoint].appendleft(_detail(result))

    def stats_for(self, endpoint: str) -> EndpointStats:
        with self._lock:
            s = self._stats.get(endpoint)
            if s is None:
                return EndpointStats(endpoint)
            return dataclasses.replace(s, last_mismatches=list(self._last.get(endpoint, ())))

    def endpoints(self) -> list[str]:
        with self._lock:
            return sorted(self._stats)

    def reset(self, endpoint: str | None = None) -> None:
        with self._lock:
            if endpoint is None:
                self._stats.clear()
                self._last.clear()
            else:
                self._stats.pop(endpoint, None)
                self._last.pop(endpoint, None)


class SqlStatsStore(StatsStore):
    """Statistics in a SQL database (SQLite file by default, PostgreSQL by URL) so several
    proxy workers and the playbook share them."""

    def __init__(self, url: str, keep_last: int = 20) -> None:
        import sqlalchemy as sa

        from kitcore.db import make_engine

        self.keep_last = keep_last
        self._sa = sa
        self.engine = make_engine(url)  # the product's one engine policy (SQLite WAL, timeout)

        md = sa.MetaData()
        self.counts = sa.Table(
            "parity_endpoint_stats",
            md,
            sa.Column("endpoint", sa.String(400), primary_key=True),
            sa.Column("requests", sa.Integer, nullable=False, default=0),
            sa.Column("matches", sa.Integer, nullable=False, default=0),
            sa.Column("mismatches", sa.Integer, nullable=False, default=0),
            sa.Column("noise", sa.Integer, nullable=False, default=0),
            sa.Column("errors", sa.Integer, nullable=False, default=0),
            sa.Column("denied", sa.Integer, nullable=False, default=0, server_default="0"),
            sa.Column("lagged", sa.Integer, nullable=False, default=0, server_default="0"),
            sa.Column("updated_at", sa.Float),
        )
        self.recent = sa.Table(
            "parity_recent_mismatches",
            md,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("endpoint", sa.String(400), nullable=False, index=True),
            sa.Column("detail", sa.Text, nullable=False),
        )
        md.create_all(self.engine)
        self._add_counter_columns()
        self._lock = threading.Lock()

    def _add_counter_columns(self) -> None:
        """A statistics database from before the `denied` or `lagged` counter gets the column."""
        sa = self._sa
        columns = {c["name"] for c in sa.inspect(self.engine).get_columns(self.counts.name)}
        for name in _LATER_COUNTERS:
            if name not in columns:
                with self.engine.begin() as conn:
                    conn.execute(
                        sa.text(
                            f"ALTER TABLE {self.counts.name} "
                            f"ADD COLUMN {name} INTEGER NOT NULL DEFAULT 0"
                        )
                    )

    def add(self, result: ComparisonResult) -> None:
        sa = self._sa
        attr = _COUNTER[result.outcome]
        now = time.time()
        t = self.counts
        with self._lock, self.engine.begin() as conn:
            if self.engine.dialect.name in ("sqlite", "postgresql"):
                if self.engine.dialect.name == "sqlite":
                    from sqlalchemy.dialects.sqlite import insert
                else:
                    from sqlalchemy.dialects.postgresql import insert
                values = {c: 0 for c in _COUNTER.values()}
                values["requests"] = 0
                values.update({"requests": 1, attr: 1})
                stmt = insert(t).values(endpoint=result.endpoint, updated_at=now, **values)
                stmt = stmt.on_conflict_do_update(
                    index_elements=[t.c.endpoint],
                    set_={
                        "requests": t.c.requests + 1,
                        attr: t.c[attr] + 1,
                        "updated_at": now,
                    },
                )
                conn.execute(stmt)
            else:
                updated = conn.execute(
                    t.update()
                    .where(t.c.endpoint == result.endpoint)
                    .values(requests=t.c.requests + 1, updated_at=now, **{attr: t.c[attr] + 1})
                ).rowcount
                if not updated:
                    conn.execute(
                        t.insert().values(
                            endpoint=result.endpoint,
                            requests=1,
                            matches=0,
                            mismatches=0,
                            noise=0,
                            errors=0,
                            denied=0,
                            lagged=0,
                            updated_at=now,
                            **{attr: 1},
                        )
                    )
            if result.outcome in (Outcome.MISMATCH, Outcome.ERROR):
                r = self.recent
                conn.execute(
                    r.insert().values(
                        endpoint=result.endpoint, detail=json.dumps(_detail(result), default=str)
                    )
                )
                ids = [
                    row[0]
                    for row in conn.execute(
                        sa.select(r.c.id)
                        .where(r.c.endpoint == result.endpoint)
                        .order_by(r.c.id.desc())
                        .limit(self.keep_last)
                    )
                ]
                conn.execute(r.delete().where(r.c.endpoint == result.endpoint, r.c.id.not_in(ids)))

    def stats_for(self, endpoint: str) -> EndpointStats:
        sa = self._sa
        with self.engine.connect() as conn:
            row = (
                conn.execute(sa.select(self.counts).where(self.counts.c.endpoint == endpoint))
                .mappings()
                .first()
            )
            if row is None:
                return EndpointStats(endpoint)
            r = self.recent
            details = [
                json.loads(d)
                for (d,) in conn.execute(
                    sa.select(r.c.detail)
                    .where(r.c.endpoint == endpoint)
                    .order_by(r.c.id.desc())
                    .limit(self.keep_last)
                )
            ]
        return EndpointStats(
            endpoint,
            **{name: row[name] for name in ("requests", *_COUNTER.values())},
            last_mismatches=details,
            updated_at=row["updated_at"],
        )

    def endpoints(self) -> list[str]:
        sa = self._sa
        with self.engine.connect() as conn:
            return [
                e
                for (e,) in conn.execute(
                    sa.select(self.counts.c.endpoint).order_by(self.counts.c.endpoint)
                )
            ]

    def reset(self, endpoint: str | None = None) -> None:
        with self.engine.begin() as conn:
            for table in (self.counts, self.recent):
                stmt = table.delete()
                if endpoint is not None:
                    stmt = stmt.where(table.c.endpoint == endpoint)
                conn.execute(stmt)

    def close(self) -> None:
        self.engine.dispose()


def open_stats_store(url_or_path: str | Path | None) -> StatsStore:
    """`None` → memory; a path → SQLite file; a URL (`sqlite:///`, `postgresql://`) as is."""
    if url_or_path is None:
        return MemoryStatsStore()
    text = str(url_or_path)
    if "://" not in text:
        text = f"sqlite:///{Path(text).resolve()}"
    return SqlStatsStore(text)


# ---------------------------------------------------------------- the sink


class PairSink:
    """Where the proxy drops shadow pairs: compare, count, sample to recordings.

    `record` never raises (the proxy must not fail because parity did); failures are logged
    and counted as errors of the endpoint when it can be named.
    """

    def __init__(
        self,
        stats: StatsStore,
        comparator: Comparator | None = None,
        *,
        recorder: RecordingStore | None = None,
        redactor: Redactor | None = None,
        noise: Any = None,
    ) -> None:
        self.stats = stats
        self.comparator = comparator or Comparator()
        self.recorder = recorder
        self.redactor = redactor or (recorder.redactor if recorder is not None else Redactor())
        self.noise = noise  # optional NoiseLearner (learned noise applied to live pairs)

    def _compare(self, shadow: ShadowPair) -> tuple[Pair, ComparisonResult]:
        p = shadow.to_pair()
        endpoint = self.comparator.endpoint_of(p.request)
        learned = self.noise.noise_for(endpoint) if self.noise is not None else ()
        result = self.comparator.compare(
            p.request,
            p.control,
            p.candidate,
            candidate_error=p.candidate_error,
            noise=learned,
            endpoint=endpoint,
        )
        return p, result

    def compare(self, pair: ShadowPair | Mapping[str, Any]) -> ComparisonResult:
        """The verdict on one pair without counting or recording it (the proxy's re-check
        asks this to tell a lagging copy from a regression); raises on a malformed pair."""
        shadow = pair if isinstance(pair, ShadowPair) else ShadowPair.from_mapping(pair)
        return self._compare(shadow)[1]

    def record(
        self, pair: ShadowPair | Mapping[str, Any], *, lagged: bool = False
    ) -> ComparisonResult | None:
        """Compare, count and sample one pair. `lagged=True`: the pair differed but a re-check
        of both sides agreed a moment later, so it is counted as `lagged` (CDC lag), neither
        as a match nor as a mismatch."""
        try:
            shadow = pair if isinstance(pair, ShadowPair) else ShadowPair.from_mapping(pair)
            p, result = self._compare(shadow)
            result.lagged = lagged
            endpoint = result.endpoint
            safe = self.redactor.result(result)
            self.stats.add(safe)
            if self.recorder is not None:
                self.recorder.record_exchange(
                    p.request,
                    p.control,
                    candidate=p.candidate,
                    candidate_error=p.candidate_error,
                    endpoint=endpoint,
                    outcome=str(result.outcome),
                )
            return result
        except Exception:  # noqa: BLE001 - the proxy's request must never fail because of parity
            log.exception("parity: could not record shadow pair")
            return None

    def stats_for(self, endpoint: str) -> EndpointStats:
        return self.stats.stats_for(endpoint)
