"""JSON Schemas of the change-event envelope (package data, loaded with `load_schema`)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any


def load_schema(name: str = "envelope") -> dict[str, Any]:
    """The JSON Schema `<name>.json` shipped with the package."""
    return json.loads(resources.files(__package__).joinpath(f"{name}.json").read_text())
