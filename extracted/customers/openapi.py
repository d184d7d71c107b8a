"""The customers service's OpenAPI 3 document: only the endpoints this service owns."""

from __future__ import annotations

from typing import Any

from extracted.customers.service import CUSTOMER_SORTS
from shoplib import openapi as oa

CUSTOMER = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "email": {"type": "string", "maxLength": 254},
        "name": {"type": "string", "maxLength": 200},
        "phone": {"type": ["string", "null"], "maxLength": 32},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
    },
}


def openapi_document() -> dict[str, Any]:
    """The document served at `/openapi.json`."""
    one = [oa.path_id("customer_id")]
    paths = {
        "/customers": {
            "get": {
                "summary": "list customers",
                "parameters": [
                    *oa.list_params(tuple(CUSTOMER_SORTS)),
                    oa.query_param("email", "string"),
                    oa.query_param("q", "string"),
                ],
                "responses": {
                    "200": oa.json_response(oa.page_of("Customer")),
                    **oa.error_responses(400),
                },
            },
            "post": {
                "summary": "create a customer (e-mail unique case-insensitively)",
                "requestBody": oa.json_body(),
                "responses": {
                    "201": oa.json_response("Customer", "created"),
                    **oa.error_responses(400, 409, 415, 422),
                },
            },
        },
        "/customers/{customer_id}": {
            "get": {
                "summary": "one customer",
                "parameters": one,
                "responses": {"200": oa.json_response("Customer"), **oa.error_responses(404)},
            },
            "patch": {
                "summary": "change email, name or phone",
                "parameters": one,
                "requestBody": oa.json_body(),
                "responses": {
                    "200": oa.json_response("Customer"),
                    **oa.error_responses(400, 404, 409, 415, 422),
                },
            },
            "delete": {
                "summary": "erase a customer",
                "parameters": one,
                "responses": {"204": {"description": "deleted"}, **oa.error_responses(404)},
            },
        },
    }
    schemas = {"Error": oa.error_schema(), "Customer": CUSTOMER}
    return oa.service_document("customers service", paths, schemas, health_schema={})
