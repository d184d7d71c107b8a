"""Shared fixtures for the whole suite; real-server fixtures live in tests/fixtures/."""

from __future__ import annotations

import pytest

from kitcore.net import free_port as _free_port

pytest_plugins = ["tests.fixtures.servers", "tests.fixtures.venvs"]


def pytest_configure(config: pytest.Config) -> None:
    # kafka-python 3 loads its protocol schemas with importlib.resources' legacy API; the
    # warning is attributed to importlib, so the kafka.* filter in pyproject misses it.
    config.addinivalue_line(
        "filterwarnings", r"ignore:(open|read)_text is deprecated:DeprecationWarning"
    )


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return _free_port()
