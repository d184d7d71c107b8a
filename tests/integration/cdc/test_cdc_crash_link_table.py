"""Crash safety for a link table without a primary key, captured by the mapping's declared
composite key: capture and sink are killed with SIGKILL and restarted while a writer inserts,
re-keys and deletes links; after both drain, the verifier reports no difference."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from cdc.capture.sqlite import enable_capture, request_snapshot
from cdc.keys import declared_keys
from cdc.mapping import load_mapping
from cdc.sink import count_dead_letters
from kitcore.db import make_engine
from tests.integration.cdc.test_cdc_crash import ROOT, crash_and_verify

pytestmark = pytest.mark.integration

MAPPING = """
service = "social"

[[tables]]
source = "follows"
target = "follows"
key = ["follower_id", "followee_id"]

[tables.columns]
follower_id = "follower_id"
followee_id = "followee_id"
since = "since"
"""

WRITER = textwrap.dedent("""
    import random, sqlite3, sys, time
    db, seconds = sys.argv[1], float(sys.argv[2])
    rng = random.Random(7)
    conn = sqlite3.connect(db, timeout=60, isolation_level=None)
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        a, b = rng.randint(1, 30), rng.randint(1, 30)
        conn.execute("BEGIN IMMEDIATE")
        k = rng.random()
        if k < 0.5:
            conn.execute("INSERT INTO follows SELECT ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM "
                         "follows WHERE follower_id = ? AND followee_id = ?)", (a, b, f"s{n}", a, b))
        elif k < 0.7:
            conn.execute("UPDATE follows SET since = ? WHERE follower_id = ?", (f"u{n}", a))
        elif k < 0.85:
            c = rng.randint(31, 60)
            conn.execute("UPDATE follows SET followee_id = ? WHERE follower_id = ? AND "
                         "followee_id = ? AND NOT EXISTS (SELECT 1 FROM follows WHERE "
                         "follower_id = ? AND followee_id = ?)", (c, a, b, a, c))
        else:
            conn.execute("DELETE FROM follows WHERE follower_id = ? AND followee_id = ?", (a, b))
        conn.execute("COMMIT")
        n += 1
        time.sleep(0.002)
    print(n)
""")


def test_link_table_pipeline_survives_kill_9_of_capture_and_sink(tmp_path: Path) -> None:
    src = make_engine(f"sqlite:///{tmp_path / 'src.db'}")
    tgt = make_engine(f"sqlite:///{tmp_path / 'tgt.db'}")
    with src.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE follows (follower_id INTEGER NOT NULL, followee_id INTEGER NOT NULL, "
            "since TEXT)"
        )
        conn.exec_driver_sql("INSERT INTO follows VALUES (100, 1, 'old'), (100, 2, 'old')")
    with tgt.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE follows (follower_id INTEGER, followee_id INTEGER, since TEXT, "
            "PRIMARY KEY (follower_id, followee_id))"
        )
    tgt.dispose()
    (tmp_path / "m.toml").write_text(MAPPING)
    enable_capture(src, ["follows"], declared_keys(load_mapping(tmp_path / "m.toml")))
    request_snapshot(src, ["follows"])
    src.dispose()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CDC_SOURCE_URL": f"sqlite:///{tmp_path / 'src.db'}",
        "CDC_TARGET_URL": f"sqlite:///{tmp_path / 'tgt.db'}",
        "CDC_MAPPING": str(tmp_path / "m.toml"),
        "CDC_LOG_DIR": str(tmp_path / "log"),
    }
    kills = crash_and_verify(
        env, [WRITER, str(tmp_path / "src.db"), "8"], rounds=4, seed=3, batch="20"
    )
    assert kills == {"capture": 2, "sink": 2}
    target = make_engine(env["CDC_TARGET_URL"])
    assert count_dead_letters(target) == 0
    target.dispose()
