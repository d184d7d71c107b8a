"""A tiny shop-like JSON API ("control") and seeded-divergence variants ("mutants").

Used by the parity tests and bench to prove the engine catches each kind of divergence.
The app follows docs/api.md conventions: pagination envelope, money as {cents, currency},
errors as {"error": {code, message}}. Nothing is built at import time.
"""

from __future__ import annotations

import json
import random
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, request

TAGS = ["red", "blue", "green", "oak", "steel", "sale"]

# variant name -> what it changes (documentation for the tests' parametrisation)
VARIANTS: dict[str, str] = {
    "missing_field": "drops `sku` from products",
    "renamed_key": "renames `category_id` to `categoryId`",
    "int_to_string": "serialises product `id` as a string",
    "money_rounding": "rounds price cents to whole units",
    "tie_order": "breaks sort ties by id descending instead of ascending",
    "pagination_off_by_one": "skips one page too many",
    "status_404_for_400": "answers 404 not_found where the control says 400 invalid_query",
    "extra_field": "adds a `slug` field",
    "null_vs_absent": "omits `description` when it is null",
    "wrong_content_type": "serves JSON as text/html",
    "float_money": "serialises cents as a float",
    "total_off": "counts one product too many in `total`",
    "error_shape": "error body is a string, not an object",
    "about_text": "changes one line of the HTML about page",
}


def seed_products(n: int = 24) -> list[dict[str, Any]]:
    """Deterministic products; prices repeat so that sorting by price has ties."""
    prices = [1299, 2500, 999, 12999, 2500, 4550, 999, 30000]
    out = []
    for i in range(1, n + 1):
        out.append(
            {
                "id": i,
                "sku": f"SKU-{i:06d}",
                "name": f"Product {chr(64 + (i % 26) + 1)}{i}",
                "description": None if i % 5 == 0 else f"Description of product {i}",
                "category_id": 1 + i % 3,
                "price": {"cents": prices[i % len(prices)], "currency": "EUR"},
                "active": i % 7 != 0,
                "tags": TAGS[i % 3 : i % 3 + 4],
                "created_at": f"2026-01-{1 + i % 28:02d}T03:04:05.000000Z",
            }
        )
    return out


class Store:
    """In-memory rows with reset (write checks start each side from the same state)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.products = {p["id"]: p for p in seed_products()}
            self.next_id = max(self.products) + 1

    def rows(self) -> dict[str, list[dict[str, Any]]]:
        with self.lock:
            return {
                "products": [
                    {
                        "id": p["id"],
                        "sku": p["sku"],
                        "name": p["name"],
                        "price_cents": p["price"]["cents"],
                        "currency": p["price"]["currency"],
                        "active": p["active"],
                    }
                    for p in sorted(self.products.values(), key=lambda p: p["id"])
                ]
            }


def create_shop_app(variant: str | None = None, *, noisy: bool = False) -> Flask:
    """The control app (variant None) or a mutant; `noisy` adds request ids, current
    timestamps and shuffled tag sets (noise that two runs of the same code show)."""
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}")
    app = Flask(f"shop_{variant or 'control'}{'_noisy' if noisy else ''}")
    store = Store()
    app.config["STORE"] = store

    def reply(payload: Any, status: int = 200) -> Response:
        body = json.dumps(payload)
        ctype = (
            "text/html; charset=utf-8" if variant == "wrong_content_type" else "application/json"
        )
        resp = Response(body, status=status, content_type=ctype)
        if noisy:
            resp.headers["X-Request-Id"] = uuid.uuid4().hex
        return resp

    def error(status: int, code: str, message: str, fields: dict | None = None) -> Response:
        if variant == "status_404_for_400" and status == 400:
            status, code, message = 404, "not_found", "not found"
        if variant == "error_shape":
            return reply({"error": message}, status)
        err: dict[str, Any] = {"code": code, "message": message}
        if fields:
            err["fields"] = fields
        return reply({"error": err}, status)

    def render(p: dict[str, Any]) -> dict[str, Any]:
        out = dict(p)
        out["price"] = dict(p["price"])
        out["tags"] = list(p["tags"])
        if variant == "missing_field":
            del out["sku"]
        if variant == "renamed_key":
            out["categoryId"] = out.pop("category_id")
        if variant == "int_to_string":
            out["id"] = str(out["id"])
        if variant == "money_rounding":
            out["price"]["cents"] = round(out["price"]["cents"] / 100) * 100
        if variant == "float_money":
            out["price"]["cents"] = float(out["price"]["cents"])
        if variant == "extra_field":
            out["slug"] = out["name"].lower().replace(" ", "-")
        if variant == "null_vs_absent" and out["description"] is None:
            del out["description"]
        if noisy:
            random.shuffle(out["tags"])
        return out

    def meta() -> dict[str, Any]:
        return {
            "request_id": uuid.uuid4().hex,
            "generated_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }

    sort_keys = {
        "id": lambda p: p["id"],
        "name": lambda p: p["name"],
        "price": lambda p: p["price"]["cents"],
    }

    @app.get("/products")
    def list_products() -> Response:
        args = request.args
        try:
            page = int(args.get("page", "1"))
            per_page = int(args.get("per_page", "20"))
        except ValueError:
            return error(400, "invalid_query", "page and per_page must be integers")
        if page < 1:
            return error(400, "invalid_query", "bad query", {"page": "must be >= 1"})
        if not 1 <= per_page <= 100:
            return error(400, "invalid_query", "bad query", {"per_page": "must be 1..100"})
        sort = args.get("sort", "id")
        field_name = sort.lstrip("-")
        if field_name not in sort_keys:
            return error(400, "invalid_query", "bad query", {"sort": "unknown field"})
        with store.lock:
            rows = list(store.products.values())
        if "active" in args:
            want = args["active"] == "true"
            rows = [p for p in rows if p["active"] == want]
        desc = sort.startswith("-")
        tie_desc = variant == "tie_order"
        rows.sort(key=lambda p: -p["id"] if tie_desc else p["id"])
        rows.sort(key=sort_keys[field_name], reverse=desc)
        total = len(rows)
        offset = (page - 1) * per_page + (per_page if variant == "pagination_off_by_one" else 0)
        items = [render(p) for p in rows[offset : offset + per_page]]
        query = {k: v for k, v in args.items() if k != "page"}

        def link(n: int) -> str:
            q = dict(query, page=str(n), per_page=str(per_page), sort=sort)
            return "/products?" + "&".join(f"{k}={q[k]}" for k in sorted(q))

        body: dict[str, Any] = {
            "items": items,
            "page": page,
            "per_page": per_page,
            "total": total + (1 if variant == "total_off" else 0),
            "next": link(page + 1) if page * per_page < total else None,
            "prev": link(page - 1) if page > 1 else None,
        }
        if noisy:
            body["meta"] = meta()
        return reply(body)

    @app.get("/products/<int:product_id>")
    def get_product(product_id: int) -> Response:
        with store.lock:
            p = store.products.get(product_id)
        if p is None:
            return error(404, "not_found", f"product {product_id} not found")
        body = render(p)
        if noisy:
            body["meta"] = meta()
        return reply(body)

    @app.post("/products")
    def create_product() -> Response:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            return error(400, "malformed_json", "body must be a JSON object")
        missing = [f for f in ("sku", "name", "price") if f not in data]
        if missing:
            return error(422, "validation_error", "invalid body", {f: "required" for f in missing})
        cents = data["price"].get("cents")
        if variant == "money_rounding":
            cents = round(cents / 100) * 100
        with store.lock:
            pid = store.next_id
            store.next_id += 1
            p = {
                "id": pid,
                "sku": data["sku"],
                "name": data["name"],
                "description": data.get("description"),
                "category_id": data.get("category_id", 1),
                "price": {"cents": cents, "currency": data["price"].get("currency", "EUR")},
                "active": bool(data.get("active", True)),
                "tags": [],
                "created_at": "2026-02-01T00:00:00.000000Z",
            }
            store.products[pid] = p
        return reply(render(p), 201)

    @app.get("/about")
    def about() -> Response:
        lines = [
            "<html>",
            "<body>",
            "<h1>The Shop</h1>",
            "<p>Open   daily 9-17</p>" if variant != "about_text" else "<p>Open daily 9-18</p>",
            "<p>Since 1999</p>",
            "</body>",
            "</html>",
        ]
        # the control uses CRLF and extra spaces: normalisation must hide that
        sep = "\r\n" if variant is None else "\n"
        return Response(sep.join(lines), content_type="text/html; charset=utf-8")

    @app.get("/openapi.json")
    def openapi() -> Response:
        return reply(openapi_document())

    return app


def openapi_document() -> dict[str, Any]:
    page = [
        {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1}},
        {"name": "per_page", "in": "query", "schema": {"type": "integer", "maximum": 100}},
        {
            "name": "sort",
            "in": "query",
            "schema": {"type": "string", "enum": ["id", "name", "price"]},
        },
        {"name": "active", "in": "query", "schema": {"type": "boolean"}},
    ]
    return {
        "openapi": "3.0.3",
        "info": {"title": "shop", "version": "1"},
        "paths": {
            "/products": {"get": {"parameters": page}, "post": {}},
            "/products/{id}": {
                "parameters": [{"$ref": "#/components/parameters/Id"}],
                "get": {},
            },
            "/reports/sales": {
                "get": {
                    "parameters": [
                        {
                            "name": "from",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ]
                }
            },
        },
        "components": {
            "parameters": {
                "Id": {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
            }
        },
    }


# ---------------------------------------------------------------- an app that needs a login


class TokenBook:
    """Bearer tokens shared by a control/candidate pair; each expires after `uses` requests
    (across both apps), so a long run needs its auth hook again."""

    def __init__(self, uses: int = 10**9) -> None:
        self.uses = uses
        self.left: dict[str, int] = {}
        self.issued = 0
        self.refused = 0
        self._lock = threading.Lock()

    def issue(self) -> str:
        with self._lock:
            self.issued += 1
            token = f"tok-{uuid.uuid4().hex}"
            self.left[token] = self.uses
            return token

    def admit(self, header: str | None) -> bool:
        scheme, _, token = (header or "").partition(" ")
        with self._lock:
            if scheme.lower() != "bearer" or self.left.get(token, 0) <= 0:
                self.refused += 1
                return False
            self.left[token] -= 1
            return True


THING_VARIANTS = {"renamed_thing": "thing 2 gets another name"}


def create_token_app(book: TokenBook, variant: str | None = None, *, noisy: bool = False) -> Flask:
    """Not the shop: every route but POST /login needs `Authorization: Bearer <token>`; lists
    sit under `data` (things) or `page.entries` (boxes, ids in `box_no`); errors are
    `{"problem": ...}`; the OpenAPI document is at /api/spec.json; records hold e-mails and
    phone numbers."""
    app = Flask(f"token-app-{variant or 'control'}")
    things = [
        {
            "thing_id": i,
            "name": f"Thing {i}" + (" (renamed)" if variant == "renamed_thing" and i == 2 else ""),
            "owner_email": f"owner{i}@example.org",
            "phone": f"+44 20 7946 09{i:02d}",
        }
        for i in range(1, 8)
    ]
    boxes = [{"box_no": n, "label": f"box {n}"} for n in (11, 12, 13)]

    def reply(payload: Any, status: int = 200) -> Response:
        if noisy and isinstance(payload, dict):
            payload = {**payload, "served_at": datetime.now(UTC).isoformat()}
        return Response(json.dumps(payload), status, content_type="application/json")

    @app.before_request
    def login_required() -> Response | None:
        if request.path == "/login":
            return None
        if not book.admit(request.headers.get("Authorization")):
            resp = reply({"problem": "unauthorized"}, 401)
            resp.headers["WWW-Authenticate"] = "Bearer"
            return resp
        return None

    @app.post("/login")
    def login() -> Response:
        return reply({"token": book.issue()})

    @app.get("/things")
    def list_things() -> Response:
        return reply({"data": things, "count": len(things)})

    @app.get("/things/<int:thing_id>")
    def get_thing(thing_id: int) -> Response:
        found = [t for t in things if t["thing_id"] == thing_id]
        return reply(found[0]) if found else reply({"problem": "no such thing"}, 404)

    @app.get("/boxes")
    def list_boxes() -> Response:
        return reply({"page": {"entries": boxes}})

    @app.get("/boxes/<int:box_id>")
    def get_box(box_id: int) -> Response:
        found = [b for b in boxes if b["box_no"] == box_id]
        return reply(found[0]) if found else reply({"problem": "no such box"}, 404)

    @app.get("/profile")
    def profile() -> Response:
        return reply({"email": "ada@example.org", "note": "write to ada@example.org"})

    @app.get("/api/spec.json")
    def spec() -> Response:
        return reply(token_openapi_document())

    return app


def token_openapi_document() -> dict[str, Any]:
    def param(name: str) -> dict[str, Any]:
        return {"name": name, "in": "path", "required": True, "schema": {"type": "integer"}}

    ok = {"200": {"description": "ok"}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "things", "version": "1"},
        "paths": {
            "/things": {"get": {"responses": ok}},
            "/things/{thing_id}": {"get": {"parameters": [param("thing_id")], "responses": ok}},
            "/boxes": {"get": {"responses": ok}},
            "/boxes/{box_id}": {"get": {"parameters": [param("box_id")], "responses": ok}},
            "/profile": {"get": {"responses": ok}},
        },
    }
