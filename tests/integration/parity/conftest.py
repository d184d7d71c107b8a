"""Real HTTP servers on 127.0.0.1 for the parity integration tests.

The shop test apps live next to the unit tests; they are loaded by file path (the test
folders are not packages).
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from werkzeug.serving import make_server

_APPS = Path(__file__).resolve().parents[2] / "unit" / "parity" / "parity_testapps.py"


def _load_testapps():
    if "parity_testapps" in sys.modules:
        return sys.modules["parity_testapps"]
    spec = importlib.util.spec_from_file_location("parity_testapps", _APPS)
    module = importlib.util.module_from_spec(spec)
    sys.modules["parity_testapps"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def testapps():
    return _load_testapps()


@pytest.fixture
def serve() -> Iterator[Callable]:
    """serve(app) -> base URL of a threaded HTTP server on a free loopback port."""
    servers = []

    def start(app) -> str:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_port}"

    try:
        yield start
    finally:
        for server, thread in servers:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
