"""The sink keeps stored values behind Debezium's unchanged-TOAST placeholder, applies
truncate events, and can park dead letters on `<topic>.dlq` instead of the target table."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from cdc.dlq import list_any_dead_letters, read_topic_dead_letters
from cdc.events import parse_event
from cdc.mapping import parse_mapping
from cdc.ports import OutgoingMessage
from cdc.sink import Sink, SinkConfig, count_dead_letters, list_dead_letters
from cdc.toast import UNAVAILABLE_VALUE
from cdc.transport.embedded import EmbeddedLog, EmbeddedLogConfig
from kitcore.db import make_engine

TOPIC = "dbserver1.public.docs"
MAPPING = parse_mapping(
    {
        "service": "svc",
        "tables": [
            {
                "source": "docs",
                "target": "docs",
                "key": ["id"],
                "columns": {"id": "id", "title": "title", "body": "body"},
            }
        ],
    }
)
TOAST = UNAVAILABLE_VALUE


def _msg(op: str, before: dict | None, after: dict | None) -> OutgoingMessage:
    row = after if after is not None else before
    payload: dict[str, Any] = {
        "before": before,
        "after": after,
        "source": {"connector": "postgresql", "schema": "public", "table": "docs", "lsn": 1},
        "op": op,
        "ts_ms": 1,
    }
    key = None if row is None else json.dumps({"id": row["id"]}).encode()
    return OutgoingMessage(TOPIC, key, json.dumps(payload).encode())


def _doc(i: int, title: str = "t", body: str = "long body") -> dict:
    return {"id": i, "title": title, "body": body}


class Rig:
    def __init__(self, root: Path, store: str = "table", partitions: int = 2) -> None:
        self.target = make_engine(f"sqlite:///{root / 'tgt.db'}")
        with self.target.begin() as conn:
            conn.execute(text("CREATE TABLE docs (id INTEGER PRIMARY KEY, title TEXT, body TEXT)"))
        self.log = EmbeddedLog(EmbeddedLogConfig(root / "log", partitions=partitions))
        self.sink = Sink(
            self.target,
            MAPPING,
            self.log,
            SinkConfig("g", (TOPIC,), dead_letter_store=store),
        )

    def publish(self, *msgs: OutgoingMessage) -> None:
        prod = self.log.producer()
        prod.send_batch(list(msgs))
        prod.close()
        self.sink.drain(idle_polls=1)

    def rows(self) -> list[tuple]:
        with self.target.connect() as conn:
            return [tuple(r) for r in conn.execute(text("SELECT * FROM docs ORDER BY id"))]

    def close(self) -> None:
        self.sink.close()
        self.target.dispose()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.close()


def test_unchanged_toast_placeholder_keeps_the_stored_value(rig: Rig) -> None:
    rig.publish(_msg("c", None, _doc(1)), _msg("c", None, _doc(2)))
    rig.publish(_msg("u", None, _doc(1, "new", TOAST)))
    assert rig.rows() == [(1, "new", "long body"), (2, "t", "long body")]


def test_placeholder_update_on_a_row_inserted_in_the_same_batch_merges_into_it(rig: Rig) -> None:
    rig.publish(
        _msg("c", None, _doc(3, "a", "first body")),
        _msg("u", None, _doc(3, "b", TOAST)),
        _msg("u", None, _doc(3, TOAST, TOAST)),
        _msg("u", None, _doc(3, "c", TOAST)),
    )
    assert rig.rows() == [(3, "c", "first body")]
    assert count_dead_letters(rig.target, "g") == 0


def test_placeholder_event_for_a_missing_row_is_dead_lettered_with_a_clear_reason(
    rig: Rig,
) -> None:
    rig.publish(
        _msg("c", None, _doc(1)),
        _msg("u", None, _doc(7, "x", TOAST)),  # never inserted: cannot be rebuilt
        _msg("d", _doc(1), None),
        _msg("u", None, _doc(1, "y", TOAST)),  # after its delete in the same batch
        _msg("c", None, _doc(2)),
    )
    assert rig.rows() == [(2, "t", "long body")]
    reasons = [d.reason for d in list_dead_letters(rig.target, "g")]
    assert len(reasons) == 2
    assert all("unchanged-TOAST" in r and "REPLICA IDENTITY FULL" in r for r in reasons)
    assert sum(rig.sink.stored_offsets().values()) == 5


def test_truncate_deletes_every_row_and_later_events_still_apply(tmp_path: Path) -> None:
    # A truncate has no key, so (as with Debezium) it is ordered only against events of its
    # own partition: one partition here.
    rig = Rig(tmp_path, partitions=1)
    try:
        _truncate_scenario(rig)
    finally:
        rig.close()


def _truncate_scenario(rig: Rig) -> None:
    rig.publish(*[_msg("c", None, _doc(i)) for i in range(1, 6)])
    truncate = OutgoingMessage(
        TOPIC,
        None,
        json.dumps(
            {
                "before": None,
                "after": None,
                "source": {"connector": "postgresql", "schema": "public", "table": "docs"},
                "op": "t",
                "ts_ms": 2,
            }
        ).encode(),
    )
    assert parse_event(truncate.value).op == "t"
    rig.publish(_msg("u", None, _doc(2, "gone")), truncate, _msg("c", None, _doc(9)))
    assert rig.rows() == [(9, "t", "long body")]
    rig.publish(truncate)
    assert rig.rows() == []
    assert count_dead_letters(rig.target, "g") == 0


def test_dead_letters_can_go_to_the_dlq_topic_and_be_listed_from_there(tmp_path: Path) -> None:
    rig = Rig(tmp_path, store="topic")
    try:
        rig.publish(
            _msg("c", None, _doc(1)),
            OutgoingMessage(TOPIC, b'{"id":2}', b"{not json"),
            _msg("u", None, _doc(8, "x", TOAST)),
        )
        assert rig.rows() == [(1, "t", "long body")]
        assert count_dead_letters(rig.target, "g") == 0  # nothing in the table store
        letters = read_topic_dead_letters(rig.log, [TOPIC], "g")
        assert sorted(d.reason.split(":")[0] for d in letters) == [
            "database rejected the event",
            "undecodable event",
        ]
        bad = next(d for d in letters if "not JSON" in d.reason)
        assert (bad.topic, bad.key, bad.value) == (TOPIC, b'{"id":2}', b"{not json")
        same = list_any_dead_letters(
            "topic", target=None, transport=rig.log, topics=[TOPIC], group="g"
        )
        assert [d.reason for d in same] == [d.reason for d in letters]
        assert read_topic_dead_letters(rig.log, [TOPIC], "other-group") == []
    finally:
        rig.close()
