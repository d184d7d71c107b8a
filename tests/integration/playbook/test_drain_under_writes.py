"""A drain under steady writes finishes: it waits for what was committed when it started,
not for a moment of zero lag that steady traffic may never give it."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from sqlalchemy import make_url

from kit.playbook import Playbook
from kit.playbook import pipelines as pl
from tests.integration.playbook.reverse_cdc_helpers import rows
from tests.playbook_shop import Shop

pytestmark = pytest.mark.integration


class SteadyWriter(threading.Thread):
    """Renames products 2..40 in a loop, one committed transaction each (as a busy app)."""

    def __init__(self, path: str) -> None:
        super().__init__(daemon=True)
        self.path, self.stop, self.commits = path, threading.Event(), 0

    def run(self) -> None:
        conn = sqlite3.connect(self.path, timeout=30)
        try:
            while not self.stop.is_set():
                pid = 2 + self.commits % 39
                conn.execute("UPDATE products SET name = ? WHERE id = ?", (f"w{self.commits}", pid))
                conn.commit()
                self.commits += 1
                time.sleep(0.002)
        finally:
            conn.close()


def test_a_drain_under_steady_writes_returns_with_everything_committed_before_it(
    shop: Shop,
) -> None:
    m = shop.manifest
    pb = Playbook(m, actor="test")
    while pb.state.get("catalog").step != "capture":
        assert pb.advance("catalog").ok
    fwd = pb.forward("catalog")
    writer = SteadyWriter(make_url(m.monolith.database_url).database)
    writer.start()
    try:
        time.sleep(0.5)
        mono = m.monolith.database_url
        with sqlite3.connect(make_url(mono).database) as conn:
            conn.execute("UPDATE products SET name = 'before the drain' WHERE id = 1")
        started = writer.commits
        result = pl.drain(m, fwd, timeout_s=60, transport=pb.transport())
        during = writer.commits - started
        assert writer.is_alive()  # the traffic never paused
    finally:
        writer.stop.set()
        writer.join(10)
    target = fwd.target_url
    assert rows(target, "SELECT name FROM catalog_product WHERE id = 1") == [("before the drain",)]
    assert during > 0 and result["tables"]
