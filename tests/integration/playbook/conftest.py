"""The shop served in-process (monolith and services on loopback), one per test; a test that
needs other `make_shop` options parametrizes the fixture (indirect)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.playbook_shop import Shop, make_shop


@pytest.fixture
def shop(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Shop]:
    """`make_shop`'s options by indirect parametrization, e.g. {"stop_reverse": True}."""
    s = make_shop(tmp_path, **getattr(request, "param", {}))
    try:
        yield s
    finally:
        s.close()
