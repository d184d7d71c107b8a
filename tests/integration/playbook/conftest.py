"""The shop served in-process (monolith and services on loopback), one per test; modules that
need another shop define their own `shop` fixture."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.playbook_shop import Shop, make_shop


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    s = make_shop(tmp_path)
    try:
        yield s
    finally:
        s.close()
