"""The OpenAPI document describes every route and is structurally valid OpenAPI 3."""

from __future__ import annotations

import jsonschema

from monolith.openapi import openapi_document
from shoplib.openapi import undocumented_routes

# The basics of an OpenAPI 3.0 document (the parts we rely on), as a JSON schema.
_RESPONSE = {
    "type": "object",
    "required": ["description"],
    "properties": {
        "description": {"type": "string"},
        "content": {
            "type": "object",
            "additionalProperties": {"type": "object", "required": ["schema"]},
        },
    },
}
_PARAMETER = {
    "type": "object",
    "required": ["name", "in", "schema"],
    "properties": {
        "name": {"type": "string"},
        "in": {"enum": ["query", "path", "header", "cookie"]},
        "required": {"type": "boolean"},
        "schema": {"type": "object"},
    },
}
_OPERATION = {
    "type": "object",
    "required": ["responses", "operationId"],
    "properties": {
        "operationId": {"type": "string"},
        "parameters": {"type": "array", "items": _PARAMETER},
        "requestBody": {"type": "object", "required": ["content"]},
        "responses": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": "^[1-5][0-9][0-9]$"},
            "additionalProperties": _RESPONSE,
        },
    },
}
OPENAPI_BASICS = {
    "type": "object",
    "required": ["openapi", "info", "paths"],
    "properties": {
        "openapi": {"type": "string", "pattern": r"^3\.0\.\d+$"},
        "info": {"type": "object", "required": ["title", "version"]},
        "paths": {
            "type": "object",
            "propertyNames": {"pattern": "^/"},
            "additionalProperties": {
                "type": "object",
                "propertyNames": {"enum": ["get", "put", "post", "delete", "patch"]},
                "additionalProperties": _OPERATION,
            },
        },
        "components": {"type": "object"},
    },
}


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_every_route_is_documented(app) -> None:
    assert undocumented_routes(app, openapi_document()) == []


def test_every_documented_operation_exists(app) -> None:
    served = {
        (method.lower(), rule.rule.replace("<int:", "{").replace(">", "}"))
        for rule in app.url_map.iter_rules()
        for method in rule.methods or ()
    }
    for path, operations in openapi_document()["paths"].items():
        for method in operations:
            assert (method, path) in served, f"{method} {path} is documented but not served"


def test_document_is_structurally_valid_openapi_3(client) -> None:
    document = client.get("/openapi.json").get_json()
    jsonschema.validate(document, OPENAPI_BASICS)
    schemas = document["components"]["schemas"]
    for ref in _refs(document):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    for schema in schemas.values():
        jsonschema.Draft7Validator.check_schema(schema)


def test_responses_match_their_documented_schemas(client, shop) -> None:
    """Real answers validate against the document's component schemas."""
    document = client.get("/openapi.json").get_json()
    product = shop.product(stock=5)
    order = shop.order(shop.customer()["id"], (product["id"], 1))

    def check(name: str, instance: object) -> None:
        schema = {**document["components"]["schemas"][name], "components": document["components"]}
        resolver_doc = {"components": document["components"], **schema}
        jsonschema.validate(
            instance,
            _nullable_to_jsonschema(resolver_doc),
        )

    check("Product", product)
    check("Order", order)
    check("Error", client.get("/orders/999").get_json())
    check("Stock", shop.stock(product["id"]))


def _nullable_to_jsonschema(node: object) -> object:
    """OpenAPI 3.0 `nullable: true` → JSON Schema's type union, for validating instances."""
    if isinstance(node, dict):
        converted = {k: _nullable_to_jsonschema(v) for k, v in node.items() if k != "nullable"}
        if node.get("nullable"):
            if "type" in converted:
                converted["type"] = [converted["type"], "null"]
            else:
                return {"anyOf": [converted, {"type": "null"}]}
        return converted
    if isinstance(node, list):
        return [_nullable_to_jsonschema(v) for v in node]
    return node
