"""Reports of a parity run: terminal table, JSON, and a self-contained HTML page.

The HTML page has inline CSS and no external assets; every value is escaped. Results in a
report have already been redacted by the runner.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from kitcore.jsonscan import may_hold_big_int
from parity.model import ComparisonResult, Difference, Outcome, Request, Response
from parity.textdiff import line_opcodes

REPORT_VERSION = 1


COUNTS = ("requests", "matches", "mismatches", "noise", "errors", "denied", "lagged")


@dataclass
class EndpointSummary:
    """Outcome counters of one endpoint: a row of a run's report, and the base of the live
    statistics the proxy's shadow pairs feed (`parity.recording.EndpointStats`)."""

    endpoint: str
    requests: int = 0
    matches: int = 0
    mismatches: int = 0
    noise: int = 0
    errors: int = 0
    denied: int = 0  # both sides answered 401/403: counted apart, never as matches
    lagged: int = 0  # differed, then agreed on a re-check (CDC lag): neither match nor mismatch

    def add(self, other: EndpointSummary) -> None:
        for name in COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_dict(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, **{name: getattr(self, name) for name in COUNTS}}


@dataclass
class RunReport:
    control: str
    candidate: str
    started_at: float = 0.0
    duration: float = 0.0
    endpoints: list[EndpointSummary] = field(default_factory=list)
    results: list[ComparisonResult] = field(default_factory=list)
    noise: dict[str, list[str]] = field(default_factory=dict)
    latency: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def totals(self) -> EndpointSummary:
        t = EndpointSummary("TOTAL")
        for e in self.endpoints:
            t.add(e)
        return t

    def exit_code(
        self, threshold: int = 0, *, errors_count: bool = True, denied_count: bool = True
    ) -> int:
        """0 when mismatches (plus candidate errors and pairs both sides refused, by default)
        stay within `threshold`: a run where everyone answered 401 proves nothing."""
        t = self.totals
        bad = t.mismatches + (t.errors if errors_count else 0) + (t.denied if denied_count else 0)
        return 0 if bad <= threshold else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": REPORT_VERSION,
            "control": self.control,
            "candidate": self.candidate,
            "started_at": self.started_at,
            "duration": round(self.duration, 6),
            "totals": self.totals.to_dict(),
            "endpoints": [e.to_dict() for e in self.endpoints],
            "noise": self.noise,
            "latency": self.latency,
            "results": [r.to_dict(include_bodies=True) for r in self.results],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunReport:
        if not isinstance(data, Mapping) or "endpoints" not in data:
            raise ValueError("not a parity report (no 'endpoints')")
        return cls(
            control=str(data.get("control", "")),
            candidate=str(data.get("candidate", "")),
            started_at=float(data.get("started_at") or 0),
            duration=float(data.get("duration") or 0),
            endpoints=[
                EndpointSummary(
                    **{k: v for k, v in e.items() if k in EndpointSummary.__dataclass_fields__}
                )
                for e in data["endpoints"]
            ],
            results=[result_from_dict(r) for r in data.get("results", [])],
            noise={k: list(v) for k, v in (data.get("noise") or {}).items()},
            latency=dict(data.get("latency") or {}),
        )

    def save_json(self, path: str | Path) -> None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n", encoding="utf-8")

    @classmethod
    def load_json(cls, path: str | Path) -> RunReport:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: invalid JSON: {exc}") from None
        return cls.from_dict(data)


def result_from_dict(data: Mapping[str, Any]) -> ComparisonResult:
    req = data["request"]
    return ComparisonResult(
        endpoint=str(data["endpoint"]),
        request=Request(req["method"], req["path"], tuple((k, v) for k, v in req.get("query", []))),
        differences=[Difference.from_dict(d) for d in data.get("differences", [])],
        error=data.get("error"),
        control=Response.from_dict(data["control"]) if "control" in data else None,
        candidate=Response.from_dict(data["candidate"]) if "candidate" in data else None,
        denied=data.get("outcome") == str(Outcome.DENIED),
        lagged=data.get("outcome") == str(Outcome.LAGGED),
    )


# ---------------------------------------------------------------- terminal


def render_table(report: RunReport, *, show_differences: int = 3) -> str:
    """Aligned table per endpoint plus the first differences of each failing endpoint."""
    headers = ["endpoint", "requests", "match", "mismatch", "noise", "errors", "denied", "lagged"]
    rows = [
        [e.endpoint, e.requests, e.matches, e.mismatches, e.noise, e.errors, e.denied, e.lagged]
        for e in report.endpoints
    ]
    t = report.totals
    rows.append(
        ["TOTAL", t.requests, t.matches, t.mismatches, t.noise, t.errors, t.denied, t.lagged]
    )
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def fmt(row: list[Any]) -> str:
        cells = [str(row[0]).ljust(widths[0])]
        cells += [str(v).rjust(widths[i]) for i, v in enumerate(row[1:], 1)]
        return "  ".join(cells)

    lines = [
        f"parity: control={report.control}  candidate={report.candidate}  "
        f"({t.requests} requests in {report.duration:.2f}s)",
        fmt(headers),
        "  ".join("-" * w for w in widths),
    ]
    lines += [fmt(r) for r in rows[:-1]]
    lines.append("  ".join("-" * w for w in widths))
    lines.append(fmt(rows[-1]))
    if t.denied:
        lines.append(
            f"{t.denied} request(s) refused (401/403) by both sides: not counted as matches; "
            "give credentials (--header, or the manifest's [parity] auth hook)"
        )
    if t.lagged:
        lines.append(
            f"{t.lagged} request(s) differed and then agreed on a re-check (CDC lag): counted "
            "apart, neither as matches nor as mismatches"
        )
    if show_differences:
        shown: dict[str, int] = {}
        details: list[str] = []
        for r in report.results:
            if r.outcome not in (Outcome.MISMATCH, Outcome.ERROR):
                continue
            if shown.get(r.endpoint, 0) >= show_differences:
                continue
            shown[r.endpoint] = shown.get(r.endpoint, 0) + 1
            details.append(f"  {r.request}  [{r.outcome}]")
            if r.error:
                details.append(f"    {r.error}")
            details.extend(f"    {d.describe()}" for d in r.regressions[:8])
            if len(r.regressions) > 8:
                details.append(f"    ... {len(r.regressions) - 8} more")
        if details:
            lines += ["", "first differences:", *details]
    return "\n".join(lines)


# ---------------------------------------------------------------- HTML

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.n{text-align:right}
.bad{color:#b00020;font-weight:600}.ok{color:#1b7f3b}.warn{color:#a66300}
.case{border:1px solid #ddd;border-radius:6px;padding:8px 12px;margin:14px 0}
pre{margin:0;white-space:pre-wrap;word-break:break-all;font:12px/1.35 ui-monospace,monospace}
table.sbs{width:100%;table-layout:fixed}table.sbs td{border:none;padding:0 6px}
table.sbs td.ln{width:3em;color:#888;text-align:right}
tr.chg td.t{background:#fff4ce}tr.del td.l{background:#ffe0e0}tr.ins td.r{background:#dcf5dc}
tr.chg td.l,tr.del td.l{background:#ffe0e0}tr.chg td.r,tr.ins td.r{background:#dcf5dc}
.muted{color:#777}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _value(v: Any) -> str:
    from parity.model import ABSENT

    if v is ABSENT:
        return '<span class="muted">&lt;absent&gt;</span>'
    text = json.dumps(v, ensure_ascii=False, default=str)
    if len(text) > 300:
        text = text[:297] + "..."
    return f"<pre>{_e(text)}</pre>"


def _pretty(resp: Response | None) -> list[str]:
    """Response lines for the side-by-side: JSON indented (orjson, else the stdlib), the raw
    text when it is not JSON or nests too deep to re-indent."""
    if resp is None:
        return []
    head = [f"HTTP {resp.status}", f"content-type: {resp.content_type}", ""]
    try:
        if may_hold_big_int(resp.body):  # orjson would round it: the stdlib reads it exactly
            raise TypeError
        body = orjson.dumps(orjson.loads(resp.body), option=orjson.OPT_INDENT_2).decode()
    except (orjson.JSONDecodeError, orjson.JSONEncodeError, TypeError):
        try:
            body = json.dumps(json.loads(resp.body), indent=2, ensure_ascii=False)
        except (ValueError, RecursionError):
            body = resp.body.decode("utf-8", errors="replace")
    return head + body.splitlines()


SBS_CONTEXT = 3  # equal lines shown around each change
SBS_LINE_CHARS = 2000  # a longer line is cut (a minified body is one line)


def _cell(lines: list[str], index: int | None) -> str:
    if index is None:
        return ""
    line = lines[index]
    if len(line) > SBS_LINE_CHARS:
        line = line[:SBS_LINE_CHARS] + f" ... ({len(line) - SBS_LINE_CHARS} more characters)"
    return _e(line)


def _side_by_side(control: Response | None, candidate: Response | None, limit: int = 400) -> str:
    """Changed lines with a few equal lines around them; long equal runs fold into one row,
    so the page stays small and its cost near-linear in the bodies' size."""
    a, b = _pretty(control), _pretty(candidate)
    rows: list[str] = []
    ops = line_opcodes(a, b)
    for n, (tag, i1, i2, j1, j2) in enumerate(ops):
        cls = {"equal": "eq", "replace": "chg", "delete": "del", "insert": "ins"}[tag]
        pairs: list[tuple[int | None, int | None]]
        if tag == "equal":
            keep_head = SBS_CONTEXT if n > 0 else 0
            keep_tail = SBS_CONTEXT if n < len(ops) - 1 else 0
            if i2 - i1 > keep_head + keep_tail + 1:
                pairs = [(i1 + k, j1 + k) for k in range(keep_head)]
                pairs.append((None, None))  # the fold
                pairs += [(i2 - keep_tail + k, j2 - keep_tail + k) for k in range(keep_tail)]
            else:
                pairs = [(i1 + k, j1 + k) for k in range(i2 - i1)]
        else:
            pairs = [
                (i1 + k if i1 + k < i2 else None, j1 + k if j1 + k < j2 else None)
                for k in range(max(i2 - i1, j2 - j1))
            ]
        for li, rj in pairs:
            if tag == "equal" and li is None:
                rows.append(
                    f'<tr><td></td><td colspan="3" class="muted">({i2 - i1 - keep_head - keep_tail}'
                    " equal lines)</td></tr>"
                )
                continue
            rows.append(
                f'<tr class="{cls}"><td class="ln">{"" if li is None else li + 1}</td>'
                f'<td class="t l"><pre>{_cell(a, li)}</pre></td>'
                f'<td class="ln">{"" if rj is None else rj + 1}</td>'
                f'<td class="t r"><pre>{_cell(b, rj)}</pre></td></tr>'
            )
            if len(rows) >= limit:
                rows.append('<tr><td></td><td colspan="3" class="muted">(truncated)</td></tr>')
                return _sbs_table(rows)
    return _sbs_table(rows)


def _sbs_table(rows: list[str]) -> str:
    return (
        '<table class="sbs"><tr><th></th><th>control</th><th></th><th>candidate</th></tr>'
        + "".join(rows)
        + "</table>"
    )


def render_html(report: RunReport, *, title: str = "Parity report") -> str:
    """One self-contained page: summary table, learned noise, then every failing case."""
    t = report.totals
    started = (
        datetime.fromtimestamp(report.started_at, UTC).isoformat() if report.started_at else ""
    )
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f"<p>control <b>{_e(report.control)}</b> vs candidate <b>{_e(report.candidate)}</b>"
        f" — {t.requests} requests in {report.duration:.2f}s {_e(started)}</p>",
        "<table><tr><th>endpoint</th><th>requests</th><th>match</th><th>mismatch</th>"
        "<th>noise</th><th>errors</th><th>denied (401/403 both)</th>"
        "<th>lagged (agreed on re-check)</th></tr>",
    ]
    for e in [*report.endpoints, t]:
        cls = "bad" if e.mismatches or e.errors or e.denied else "ok"
        parts.append(
            f"<tr><td class='{cls}'>{_e(e.endpoint)}</td><td class='n'>{e.requests}</td>"
            f"<td class='n'>{e.matches}</td><td class='n'>{e.mismatches}</td>"
            f"<td class='n'>{e.noise}</td><td class='n'>{e.errors}</td>"
            f"<td class='n'>{e.denied}</td><td class='n'>{e.lagged}</td></tr>"
        )
    parts.append("</table>")
    if report.noise:
        parts.append("<h2>Learned noise</h2><ul>")
        for endpoint, paths in report.noise.items():
            parts.append(
                f"<li>{_e(endpoint)}: {', '.join(f'<code>{_e(p)}</code>' for p in paths)}</li>"
            )
        parts.append("</ul>")
    failing = [r for r in report.results if r.outcome in (Outcome.MISMATCH, Outcome.ERROR)]
    parts.append(f"<h2>Mismatches and errors ({len(failing)})</h2>")
    if not failing:
        parts.append("<p class='ok'>None.</p>")
    for n, r in enumerate(failing, 1):
        parts.append(
            f"<div class='case' id='case-{n}'><b>{_e(r.endpoint)}</b> — <code>{_e(r.request)}</code>"
            f" <span class='bad'>{_e(r.outcome)}</span>"
        )
        if r.error:
            parts.append(f"<p class='bad'>{_e(r.error)}</p>")
        if r.differences:
            parts.append(
                "<table><tr><th>kind</th><th>path</th><th>control</th><th>candidate</th></tr>"
            )
            for d in r.differences[:100]:
                tag = " <span class='warn'>(noise)</span>" if d.noise else ""
                parts.append(
                    f"<tr><td>{_e(d.kind)}{tag}</td><td><code>{_e(d.path)}</code></td>"
                    f"<td>{_value(d.control)}</td><td>{_value(d.candidate)}</td></tr>"
                )
            parts.append("</table>")
        if r.control is not None or r.candidate is not None:
            parts.append(_side_by_side(r.control, r.candidate))
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)
