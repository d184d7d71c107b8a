"""The monolith's OpenAPI 3 document, built from a declarative table of endpoints.

A test checks every registered route appears here (`shoplib.openapi.undocumented_routes`), so
adding an endpoint without describing it fails the build.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from monolith.catalog import service as catalog_service
from monolith.customers import service as customers_service
from monolith.db import MAX_INT
from monolith.inventory import service as inventory_service
from monolith.orders import service as orders_service
from shoplib.openapi import list_params, query

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    if "$ref" in schema:
        return {"allOf": [schema], "nullable": True}
    return {**schema, "nullable": True}


_TS: Schema = {"type": "string", "format": "date-time", "example": "2026-01-02T03:04:05.000000Z"}
_ID: Schema = {"type": "integer", "minimum": 1, "maximum": MAX_INT}
_INT: Schema = {"type": "integer"}
_STR: Schema = {"type": "string"}


def _object(properties: dict[str, Schema], required: tuple[str, ...] | None = None) -> Schema:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties if required is None else required),
        "additionalProperties": False,
    }


SCHEMAS: dict[str, Schema] = {
    "Error": _object(
        {
            "error": _object(
                {
                    "code": _STR,
                    "message": _STR,
                    "fields": {"type": "object", "additionalProperties": _STR},
                },
                required=("code", "message"),
            )
        }
    ),
    "Money": _object(
        {
            "cents": {"type": "integer", "minimum": 0},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
        }
    ),
    "Category": _object({"id": _ID, "name": _STR, "parent_id": nullable(_ID), "created_at": _TS}),
    "CategoryCreate": _object(
        {"name": {"type": "string", "minLength": 1, "maxLength": 100}, "parent_id": nullable(_ID)},
        required=("name",),
    ),
    "Product": _object(
        {
            "id": _ID,
            "sku": _STR,
            "name": _STR,
            "description": _STR,
            "category_id": _ID,
            "price": ref("Money"),
            "active": {"type": "boolean"},
            "created_at": _TS,
            "updated_at": _TS,
        }
    ),
    "ProductCreate": _object(
        {
            "sku": {"type": "string", "pattern": "^[A-Z0-9-]{1,64}$"},
            "name": {"type": "string", "minLength": 1, "maxLength": 200},
            "description": _STR,
            "category_id": _ID,
            "price": ref("Money"),
            "active": {"type": "boolean"},
        },
        required=("sku", "name", "category_id", "price"),
    ),
    "ProductPatch": {
        **_object(
            {
                "name": {"type": "string", "minLength": 1, "maxLength": 200},
                "description": _STR,
                "category_id": _ID,
                "price": ref("Money"),
                "active": {"type": "boolean"},
            },
            required=(),
        ),
        "minProperties": 1,
    },
    "Customer": _object(
        {
            "id": _ID,
            "email": _STR,
            "name": _STR,
            "phone": nullable(_STR),
            "created_at": _TS,
            "updated_at": _TS,
        }
    ),
    "CustomerCreate": _object(
        {
            "email": {"type": "string", "maxLength": 254},
            "name": {"type": "string", "minLength": 1, "maxLength": 200},
            "phone": nullable({"type": "string", "maxLength": 32}),
        },
        required=("email", "name"),
    ),
    "CustomerPatch": {
        **_object(
            {
                "email": {"type": "string", "maxLength": 254},
                "name": {"type": "string", "minLength": 1, "maxLength": 200},
                "phone": nullable({"type": "string", "maxLength": 32}),
            },
            required=(),
        ),
        "minProperties": 1,
    },
    "Stock": _object(
        {
            "product_id": _ID,
            "on_hand": _INT,
            "reserved": _INT,
            "available": _INT,
            "updated_at": _TS,
        }
    ),
    "StockSet": _object({"on_hand": {"type": "integer", "minimum": 0, "maximum": MAX_INT}}),
    "StockAdjust": _object({"delta": {"type": "integer", "minimum": -MAX_INT, "maximum": MAX_INT}}),
    "OrderLine": _object(
        {
            "product_id": _ID,
            "quantity": _INT,
            "unit_price": ref("Money"),
            "line_total": ref("Money"),
        }
    ),
    "Order": _object(
        {
            "id": _ID,
            "customer_id": _ID,
            "status": {"type": "string", "enum": ["pending", "paid", "shipped", "cancelled"]},
            "lines": {"type": "array", "items": ref("OrderLine")},
            "total": ref("Money"),
            "created_at": _TS,
            "updated_at": _TS,
        }
    ),
    "OrderCreate": _object(
        {
            "customer_id": _ID,
            "lines": {
                "type": "array",
                "minItems": 1,
                "maxItems": 100,
                "items": _object(
                    {
                        "product_id": _ID,
                        "quantity": {"type": "integer", "minimum": 1, "maximum": 10_000},
                    }
                ),
            },
        }
    ),
    "SalesByCategory": _object(
        {
            "from": {"type": "string", "format": "date"},
            "to": {"type": "string", "format": "date"},
            "currency": _STR,
            "rows": {
                "type": "array",
                "items": _object(
                    {
                        "category_id": nullable(_ID),
                        "category_name": _STR,
                        "orders": _INT,
                        "units": _INT,
                        "revenue": ref("Money"),
                    }
                ),
            },
        }
    ),
    "TopProducts": _object(
        {
            "from": {"type": "string", "format": "date"},
            "to": {"type": "string", "format": "date"},
            "rows": {
                "type": "array",
                "items": _object(
                    {
                        "product_id": _ID,
                        "name": nullable(_STR),
                        "units": _INT,
                        "revenue": ref("Money"),
                    }
                ),
            },
        }
    ),
    "Health": _object({"status": _STR}),
    "Ready": _object({"status": _STR, "checks": {"type": "object", "additionalProperties": _STR}}),
}


def page_of(item: str) -> Schema:
    link = nullable({"type": "string"})
    return _object(
        {
            "items": {"type": "array", "items": ref(item)},
            "page": {"type": "integer", "minimum": 1},
            "per_page": {"type": "integer", "minimum": 1, "maximum": 100},
            "total": {"type": "integer", "minimum": 0},
            "next": link,
            "prev": link,
        }
    )


def path_id(name: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": _ID}


_DATE: Schema = {"type": "string", "format": "date"}
_RANGE = [
    query("from", _DATE, "first day (UTC, inclusive)", required=True),
    query("to", _DATE, "last day (UTC, inclusive)", required=True),
    query(
        "currency",
        {"type": "string", "pattern": "^[A-Z]{3}$", "default": "EUR"},
        "only orders in this currency",
    ),
]

ERROR_TEXT = {
    400: "malformed JSON or invalid query",
    404: "unknown id",
    409: "conflict with the current state",
    415: "body is not application/json",
    422: "validation error",
    503: "not ready",
}
READ_ERRORS = (400,)
ITEM_ERRORS = (404,)
WRITE_ERRORS = (400, 415, 422)


@dataclass(frozen=True)
class Endpoint:
    """One operation: method, path, what it takes and what it answers."""

    method: str
    path: str
    operation_id: str
    summary: str
    tag: str
    ok: int = 200
    response: str | Schema | None = None
    body: str | None = None
    params: list[Schema] = field(default_factory=list)
    errors: tuple[int, ...] = ()


def _list(
    path: str,
    operation_id: str,
    summary: str,
    tag: str,
    item: str,
    sorts: tuple[str, ...],
    *filters: Schema,
) -> Endpoint:
    """`GET <collection>`: a page of `item`s, sortable by `sorts`, narrowed by `filters`."""
    return Endpoint(
        "get",
        path,
        operation_id,
        summary,
        tag,
        response=page_of(item),
        errors=READ_ERRORS,
        params=[*list_params(sorts), *filters],
    )


def _get_one(path: str, operation_id: str, summary: str, tag: str, response: str) -> Endpoint:
    """`GET <path>/{id}`: one resource by id, 404 when unknown."""
    param = path[path.rindex("{") + 1 : -1]
    return Endpoint(
        "get",
        path,
        operation_id,
        summary,
        tag,
        response=response,
        params=[path_id(param)],
        errors=ITEM_ERRORS,
    )


def _create(
    path: str, operation_id: str, summary: str, tag: str, item: str, errors: tuple[int, ...]
) -> Endpoint:
    """`POST <collection>`: 201 with the created `item` from an `<item>Create` body."""
    return Endpoint(
        "post",
        path,
        operation_id,
        summary,
        tag,
        ok=201,
        response=item,
        body=f"{item}Create",
        errors=errors,
    )


def _order_transition(action: str, summary: str) -> Endpoint:
    """`POST /orders/{id}/<action>`: a state change of one order (404 unknown, 409 refused)."""
    return Endpoint(
        "post",
        f"/orders/{{id}}/{action}",
        f"{action}Order",
        summary,
        "orders",
        response="Order",
        params=[path_id("id")],
        errors=(404, 409),
    )


_CATEGORY_SORTS = tuple(catalog_service.CATEGORY_SORTS)
_PRODUCT_SORTS = tuple(catalog_service.PRODUCT_SORTS)
_CUSTOMER_SORTS = tuple(customers_service.CUSTOMER_SORTS)
_STOCK_SORTS = tuple(inventory_service.STOCK_SORTS)
_ORDER_SORTS = tuple(orders_service.ORDER_SORTS)

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("get", "/healthz", "healthz", "Liveness", "operations", response="Health"),
    Endpoint(
        "get",
        "/readyz",
        "readyz",
        "Readiness (database answers)",
        "operations",
        response="Ready",
        errors=(503,),
    ),
    _list(
        "/categories",
        "listCategories",
        "List categories",
        "catalog",
        "Category",
        _CATEGORY_SORTS,
        query("parent_id", _ID, "only children of"),
    ),
    _create(
        "/categories", "createCategory", "Create a category", "catalog", "Category", WRITE_ERRORS
    ),
    _get_one("/categories/{id}", "getCategory", "Get a category", "catalog", "Category"),
    _list(
        "/products",
        "listProducts",
        "List products",
        "catalog",
        "Product",
        _PRODUCT_SORTS,
        query("category_id", _ID, "only products of this category"),
        query("active", {"type": "boolean"}, "true or false"),
        query("min_price", {"type": "integer", "minimum": 0}, "minimum price in cents"),
        query("max_price", {"type": "integer", "minimum": 0}, "maximum price in cents"),
        query("q", _STR, "case-insensitive substring of the name"),
    ),
    _create(
        "/products", "createProduct", "Create a product", "catalog", "Product", (*WRITE_ERRORS, 409)
    ),
    _get_one("/products/{id}", "getProduct", "Get a product", "catalog", "Product"),
    Endpoint(
        "patch",
        "/products/{id}",
        "updateProduct",
        "Change a product (sku is immutable)",
        "catalog",
        response="Product",
        body="ProductPatch",
        params=[path_id("id")],
        errors=(*WRITE_ERRORS, 404),
    ),
    Endpoint(
        "delete",
        "/products/{id}",
        "deleteProduct",
        "Delete an inactive product",
        "catalog",
        ok=204,
        params=[path_id("id")],
        errors=(404, 409),
    ),
    _list(
        "/customers",
        "listCustomers",
        "List customers",
        "customers",
        "Customer",
        _CUSTOMER_SORTS,
        query("email", _STR, "exact email, case-insensitive"),
        query("q", _STR, "case-insensitive substring of the name"),
    ),
    _create(
        "/customers",
        "createCustomer",
        "Create a customer",
        "customers",
        "Customer",
        (*WRITE_ERRORS, 409),
    ),
    _get_one("/customers/{id}", "getCustomer", "Get a customer", "customers", "Customer"),
    Endpoint(
        "patch",
        "/customers/{id}",
        "updateCustomer",
        "Change a customer",
        "customers",
        response="Customer",
        body="CustomerPatch",
        params=[path_id("id")],
        errors=(*WRITE_ERRORS, 404, 409),
    ),
    Endpoint(
        "delete",
        "/customers/{id}",
        "deleteCustomer",
        "Erase a customer",
        "customers",
        ok=204,
        params=[path_id("id")],
        errors=ITEM_ERRORS,
    ),
    _list(
        "/inventory",
        "listStock",
        "List stock levels",
        "inventory",
        "Stock",
        _STOCK_SORTS,
        query("below", {"type": "integer", "minimum": 0}, "only rows with available < n"),
    ),
    _get_one("/inventory/{product_id}", "getStock", "Stock of one product", "inventory", "Stock"),
    Endpoint(
        "put",
        "/inventory/{product_id}",
        "setStock",
        "Set on_hand (creates the row)",
        "inventory",
        response="Stock",
        body="StockSet",
        params=[path_id("product_id")],
        errors=(*WRITE_ERRORS, 409),
    ),
    Endpoint(
        "post",
        "/inventory/{product_id}/adjust",
        "adjustStock",
        "Add a delta to on_hand",
        "inventory",
        response="Stock",
        body="StockAdjust",
        params=[path_id("product_id")],
        errors=(*WRITE_ERRORS, 404, 409),
    ),
    _list(
        "/orders",
        "listOrders",
        "List orders",
        "orders",
        "Order",
        _ORDER_SORTS,
        query("customer_id", _ID, "only this customer's orders"),
        query(
            "status",
            {"type": "string", "enum": ["pending", "paid", "shipped", "cancelled"]},
            "only orders in this status",
        ),
    ),
    _create(
        "/orders",
        "placeOrder",
        "Place an order, reserving stock for every line",
        "orders",
        "Order",
        (*WRITE_ERRORS, 409),
    ),
    _get_one("/orders/{id}", "getOrder", "Get an order", "orders", "Order"),
    _order_transition("pay", "pending → paid"),
    _order_transition("ship", "paid → shipped (commits stock)"),
    _order_transition("cancel", "pending|paid → cancelled (releases stock)"),
    Endpoint(
        "get",
        "/reports/sales-by-category",
        "salesByCategory",
        "Sales per category over inclusive UTC days",
        "reports",
        response="SalesByCategory",
        params=list(_RANGE),
        errors=READ_ERRORS,
    ),
    Endpoint(
        "get",
        "/reports/top-products",
        "topProducts",
        "Best-selling products by revenue",
        "reports",
        response="TopProducts",
        errors=READ_ERRORS,
        params=[
            *_RANGE,
            query(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
                "number of rows",
            ),
        ],
    ),
)


def _json(schema: str | Schema) -> Schema:
    return {"application/json": {"schema": ref(schema) if isinstance(schema, str) else schema}}


def _operation(endpoint: Endpoint) -> Schema:
    ok: Schema = {"description": "success"}
    if endpoint.response is not None:
        ok["content"] = _json(endpoint.response)
    responses: dict[str, Schema] = {str(endpoint.ok): ok}
    for status in sorted(endpoint.errors):
        responses[str(status)] = {
            "description": ERROR_TEXT[status],
            "content": _json("Error" if status != 503 else "Ready"),
        }
    operation: Schema = {
        "operationId": endpoint.operation_id,
        "summary": endpoint.summary,
        "tags": [endpoint.tag],
        "responses": responses,
    }
    if endpoint.params:
        operation["parameters"] = endpoint.params
    if endpoint.body is not None:
        operation["requestBody"] = {"required": True, "content": _json(endpoint.body)}
    return operation


def openapi_document() -> dict[str, Any]:
    """The whole document (built on demand, never at import time)."""
    paths: dict[str, dict[str, Schema]] = {}
    for endpoint in ENDPOINTS:
        paths.setdefault(endpoint.path, {})[endpoint.method] = _operation(endpoint)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Shop monolith",
            "version": "1.0.0",
            "description": "The shop's HTTP contract (docs/api.md). Errors: "
            '{"error": {"code", "message", "fields"?}}.',
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": name}
            for name in ("catalog", "customers", "inventory", "orders", "reports", "operations")
        ],
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }
