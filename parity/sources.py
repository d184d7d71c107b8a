"""Where replayed requests come from: recordings, an OpenAPI 3 document, hand-written lists."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parity.model import Request
from parity.paths import select
from parity.recording import read_recording

_PARAM = re.compile(r"\{([^}/]+)\}")


def from_recording(
    path: str | Path,
    *,
    endpoint_filter: Any = None,
    methods: Iterable[str] | None = ("GET", "HEAD"),
    limit: int | None = None,
) -> Iterator[Request]:
    """Requests of a recording file (rotated backups included, oldest first).

    By default only safe methods are replayed: a recording replay must never write.
    `endpoint_filter(method, path) -> bool` narrows further.
    """
    allowed = {m.upper() for m in methods} if methods is not None else None
    n = 0
    for line in read_recording(path):
        req = Request.from_dict(line["request"])
        if allowed is not None and req.method not in allowed:
            continue
        if endpoint_filter is not None and not endpoint_filter(req.method, req.path):
            continue
        yield req
        n += 1
        if limit is not None and n >= limit:
            return


def from_list(items: Iterable[str | Mapping[str, Any] | Request]) -> list[Request]:
    """Hand-written requests: `"GET /products?page=2"`, dicts, or Request objects."""
    out: list[Request] = []
    for i, item in enumerate(items):
        try:
            if isinstance(item, Request):
                out.append(item)
            elif isinstance(item, str):
                out.append(Request.parse(item))
            elif isinstance(item, Mapping):
                data = dict(item)
                if "json" in data:
                    out.append(
                        Request.build(
                            data.get("method", "GET"),
                            data["path"],
                            query=data.get("query"),
                            headers=data.get("headers"),
                            json_body=data["json"],
                        )
                    )
                else:
                    out.append(Request.from_dict(data))
            else:
                raise ValueError(f"unsupported item type {type(item).__name__}")
        except (ValueError, KeyError) as exc:
            raise ValueError(f"request list item {i}: {exc}") from None
    return out


def load_list_file(path: str | Path) -> list[Request]:
    """A text file of request lines (`#` comments) or a JSON array."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() == ".json":
        data = json.loads(text)
        if not isinstance(data, list):
            raise ValueError(f"{p}: expected a JSON array of requests")
        return from_list(data)
    lines = [ln.strip() for ln in text.splitlines()]
    return from_list(ln for ln in lines if ln and not ln.startswith("#"))


# ---------------------------------------------------------------- OpenAPI


@dataclass
class GeneratedRequests:
    """Requests built from an OpenAPI document, their endpoint patterns, and what was skipped."""

    requests: list[Request] = field(default_factory=list)
    endpoints: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def load_openapi(
    source: str | Path, *, timeout: float = 10.0, headers: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Read an OpenAPI document from a URL (`http://.../openapi.json`, sent `headers`: the
    document may need the same credentials as the API) or a file."""
    text = str(source)
    if text.startswith(("http://", "https://")):
        import httpx

        try:
            resp = httpx.get(text, timeout=timeout, headers=dict(headers or {}))
            resp.raise_for_status()
            doc = resp.json()
        except httpx.HTTPError as exc:
            raise ValueError(f"cannot fetch OpenAPI document {text}: {exc}") from None
    else:
        doc = json.loads(Path(text).read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or "paths" not in doc:
        raise ValueError(f"{source}: not an OpenAPI document (no 'paths')")
    return doc


def _resolve(doc: Mapping[str, Any], node: Any) -> Any:
    seen = 0
    while isinstance(node, Mapping) and "$ref" in node and seen < 20:
        ref = node["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/"):
            return {}
        target: Any = doc
        for part in ref[2:].split("/"):
            target = (
                target.get(part.replace("~1", "/").replace("~0", "~"), {})
                if isinstance(target, Mapping)
                else {}
            )
        node = target
        seen += 1
    return node


def flask_pattern(openapi_path: str, params: Mapping[str, Mapping[str, Any]]) -> str:
    """`/products/{id}` → `/products/<int:id>` when the parameter is an integer."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1)
        schema = params.get(name, {})
        return f"<int:{name}>" if schema.get("type") == "integer" else f"<{name}>"

    return _PARAM.sub(repl, openapi_path)


ENVELOPES = ("items", "data", "results")  # where a listing's rows usually are


def _path_key(text: str) -> str:
    """`GET /things/<int:id>` and `/things/{id}` both → `/things/{}` (how id paths match)."""
    path = text.split()[-1] if text.strip() else text
    return re.sub(r"<[^>]*>|\{[^}]*\}", "{}", path)


def listing_rows(body: Any, id_path: str | None = None) -> list[Any] | None:
    """The rows of a listing: at `id_path` (a JSONPath) when given, else a top-level array or
    the first of the common envelopes (`items`, `data`, `results`) holding an array."""
    if id_path:
        return select(body, id_path)
    if isinstance(body, list):
        return body
    if isinstance(body, Mapping):
        for key in ENVELOPES:
            if isinstance(body.get(key), list):
                return body[key]
    return None


def discover_ids(
    doc: Mapping[str, Any],
    fetch: Callable[[str], Any],
    *,
    sample: int = 5,
    id_paths: Mapping[str, str] | None = None,
) -> dict[str, list[Any]]:
    """Ids that exist, per parameterised path, asked of the live control: `/things/{id}`
    takes the ids that `GET /things` lists, plus one integer id past the largest, so the
    "not found" answer is compared too. Where the ids are is told per path by `id_paths`
    (a JSONPath per endpoint, e.g. `{"GET /things/<int:id>": "$.data[*].thing_id"}`, either
    the ids themselves or objects carrying the parameter's name or `id`); by default rows are
    looked for in a top-level array or under `items`, `data` or `results`. Paths without a
    listing are left out."""
    paths = doc.get("paths") or {}
    chosen = {_path_key(k): v for k, v in (id_paths or {}).items()}
    listings: dict[str, Any] = {}
    out: dict[str, list[Any]] = {}
    for raw_path in sorted(paths):
        names = _PARAM.findall(raw_path)
        if not names:
            continue
        collection = raw_path.split("/{" + names[0] + "}", 1)[0] or "/"
        item = _resolve(doc, paths.get(collection)) if collection in paths else None
        if not isinstance(item, Mapping) or "get" not in item:
            continue
        if collection not in listings:
            try:
                listings[collection] = fetch(collection)
            except (OSError, ValueError, RuntimeError):
                listings[collection] = None
        rows = listing_rows(listings[collection], chosen.get(_path_key(raw_path)))
        if not isinstance(rows, list):
            continue
        field_name = names[0]
        values = [r.get(field_name, r.get("id")) if isinstance(r, Mapping) else r for r in rows]
        values = [v for v in values if isinstance(v, int | str) and not isinstance(v, bool)]
        values = list(dict.fromkeys(values))[:sample]
        if not values:
            continue
        numbers = [v for v in values if isinstance(v, int)]
        if len(numbers) == len(values):
            values.append(max(numbers) + 1_000_000)
        out[raw_path] = values
    return out


def from_openapi(
    doc: Mapping[str, Any],
    id_pool: Mapping[str, Sequence[Any]] | None = None,
    *,
    path_ids: Mapping[str, Sequence[Any]] | None = None,
    include: Any = None,
    page_sizes: Sequence[int] = (5,),
    max_variants: int = 12,
) -> GeneratedRequests:
    """Build GET requests for every path: path parameters from `id_pool` by parameter name,
    else from `path_ids` by OpenAPI path (see `discover_ids`), else `id_pool["id"]`; plus query variants: pagination, each sort value (ascending and
    descending), each enum/boolean filter value, and integer filters from the pool.

    Paths whose required parameters cannot be filled are listed in `skipped`, never guessed.
    """
    pool = {k: list(v) for k, v in (id_pool or {}).items()}
    out = GeneratedRequests()
    paths = doc.get("paths") or {}
    for raw_path in sorted(paths):
        item = _resolve(doc, paths[raw_path]) or {}
        if not isinstance(item, Mapping) or "get" not in item:
            continue
        op = _resolve(doc, item.get("get")) or {}
        if not isinstance(op, Mapping):
            continue
        params: dict[str, dict[str, Any]] = {}
        query_params: list[dict[str, Any]] = []
        for p in list(item.get("parameters") or []) + list(op.get("parameters") or []):
            p = _resolve(doc, p)
            if not isinstance(p, Mapping) or "name" not in p:
                continue
            schema = dict(_resolve(doc, p.get("schema") or {}))
            entry = {**p, "schema": schema}
            if p.get("in") == "path":
                params[p["name"]] = schema
            elif p.get("in") == "query":
                query_params.append(entry)
        names = _PARAM.findall(raw_path)
        for name in names:
            params.setdefault(name, {"type": "string"})
        endpoint = f"GET {flask_pattern(raw_path, params)}"
        if include is not None and not include(endpoint):
            continue
        discovered = list((path_ids or {}).get(raw_path) or [])
        if names and discovered and not pool.get(names[0]):
            path_pool = {**pool, names[0]: discovered}
        else:
            path_pool = pool
        missing = [n for n in names if not (path_pool.get(n) or path_pool.get("id"))]
        if missing:
            out.skipped.append(f"{endpoint}: no ids for path parameter(s) {', '.join(missing)}")
            continue
        required: dict[str, str] = {}
        unfilled = []
        for q in query_params:
            if q.get("required"):
                value = _first_value(q, pool)
                if value is None:
                    unfilled.append(q["name"])
                else:
                    required[q["name"]] = value
        if unfilled:
            out.skipped.append(
                f"{endpoint}: no value for required query parameter(s) {', '.join(unfilled)}"
            )
            continue
        out.endpoints.append(endpoint)
        paths_filled = _fill_paths(raw_path, names, path_pool)
        variants = [dict(required)] + _query_variants(query_params, pool, page_sizes, required)
        seen: set[tuple] = set()
        for concrete in paths_filled:
            for variant in variants[: max_variants + 1]:
                key = (concrete, tuple(sorted(variant.items())))
                if key in seen:
                    continue
                seen.add(key)
                out.requests.append(Request("GET", concrete, tuple(sorted(variant.items()))))
    return out


def _fill_paths(raw_path: str, names: list[str], pool: Mapping[str, list[Any]]) -> list[str]:
    if not names:
        return [raw_path]
    # one request per pool value of the first parameter; others take their first value
    first = names[0]
    values = pool.get(first) or pool.get("id") or []
    out = []
    for v in values:
        path = raw_path.replace("{" + first + "}", str(v))
        for other in names[1:]:
            path = path.replace("{" + other + "}", str((pool.get(other) or pool["id"])[0]))
        out.append(path)
    return out


def _first_value(q: Mapping[str, Any], pool: Mapping[str, list[Any]]) -> str | None:
    schema = q.get("schema") or {}
    if pool.get(q["name"]):
        return str(pool[q["name"]][0])
    for key in ("example", "default"):
        if key in q:
            return str(q[key])
        if key in schema:
            return str(schema[key])
    if schema.get("enum"):
        return str(schema["enum"][0])
    return None


def _query_variants(
    query_params: list[dict[str, Any]],
    pool: Mapping[str, list[Any]],
    page_sizes: Sequence[int],
    base: Mapping[str, str],
) -> list[dict[str, str]]:
    names = {q["name"] for q in query_params}
    variants: list[dict[str, str]] = []
    if "page" in names or "per_page" in names:
        for size in page_sizes:
            for page in (1, 2):
                v = dict(base)
                if "page" in names:
                    v["page"] = str(page)
                if "per_page" in names:
                    v["per_page"] = str(size)
                variants.append(v)
    for q in query_params:
        name, schema = q["name"], q.get("schema") or {}
        if name in ("page", "per_page") or name in base:
            continue
        values: list[str] = []
        if schema.get("enum"):
            values = [str(e) for e in schema["enum"]]
            if name == "sort":
                values += [f"-{e}" for e in schema["enum"] if not str(e).startswith("-")]
        elif schema.get("type") == "boolean":
            values = ["true", "false"]
        elif pool.get(name):
            values = [str(x) for x in pool[name][:2]]
        elif "example" in q or "example" in schema:
            values = [str(q.get("example", schema.get("example")))]
        for value in values:
            variants.append({**base, name: value})
    return variants
