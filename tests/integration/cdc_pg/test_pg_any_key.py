"""PostgreSQL: a link table without a primary key is captured by the mapping's declared key;
`enable` sets the replica identity that needs and says so; several tables: all or nothing."""

from __future__ import annotations

import pytest

from cdc.capture.postgres import CaptureError, enable_capture
from tests.integration.cdc_pg.helpers import (
    embedded,
    execute,
    make_worker,
    scalar,
    stream_events,
)

pytestmark = pytest.mark.integration

TOPIC = "monolith.public.follows"
KEYS = {"follows": ("follower_id", "followee_id")}


@pytest.fixture
def follows(pg_url):
    execute(
        pg_url,
        "CREATE TABLE follows (follower_id int NOT NULL, followee_id int NOT NULL, since text)",
        "CREATE TABLE items (id int PRIMARY KEY, name text)",
        "INSERT INTO follows VALUES (1, 2, 'a'), (1, 3, 'b'), (2, 3, 'c')",
    )
    return pg_url


def test_enable_refuses_every_unkeyed_table_at_once_and_enables_none(follows):
    execute(follows, "CREATE TABLE loose (a int)")
    with pytest.raises(CaptureError) as caught:
        enable_capture(follows, ["items", "follows", "loose"], keys={"follows": ["nope"]})
    text = str(caught.value)
    assert "no table enabled, 2 cannot be captured" in text
    assert "public.follows by its declared key ['nope']" in text
    assert "public.loose: it has no primary key" in text
    assert scalar(follows, "SELECT count(*) FROM pg_publication") == 0


def test_link_table_is_captured_by_its_declared_key_with_full_identity(follows, tmp_path):
    (result,) = enable_capture(follows, ["follows"], replica_identity_full=False, keys=KEYS)
    assert result.key_source == "declared key" and result.pk == KEYS["follows"]
    assert result.did.startswith("set REPLICA IDENTITY FULL (was DEFAULT)")
    assert "no primary key" in result.did
    again = enable_capture(follows, ["follows"], keys=KEYS)[0]
    assert again.did == "kept REPLICA IDENTITY FULL"
    log = embedded(tmp_path)
    worker = make_worker(follows, log, ("follows",), enable=False)
    try:
        worker.prepare()
        worker.run_snapshot()
        worker.start_stream()
        execute(
            follows,
            "UPDATE follows SET since = 'z' WHERE follower_id = 2",
            "UPDATE follows SET followee_id = 9 WHERE follower_id = 1 AND followee_id = 3",
            "DELETE FROM follows WHERE follower_id = 1 AND followee_id = 2",
        )
        events = stream_events(worker, log, TOPIC, 3 + 4)
    finally:
        worker.close()
    got = [(e["value"]["op"], e["key"]) for e in events]
    snapshot = sorted(k["followee_id"] + 10 * k["follower_id"] for op, k in got if op == "r")
    assert snapshot == [12, 13, 23]
    stream = [(op, (k["follower_id"], k["followee_id"])) for op, k in got if op != "r"]
    assert stream == [("u", (2, 3)), ("d", (1, 3)), ("c", (1, 9)), ("d", (1, 2))]
