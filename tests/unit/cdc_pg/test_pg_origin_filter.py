"""Transactions a sink applied carry a replication origin; a capture configured with
`origin = "none"` drops their changes (CDC running both ways never loops), and one with the
default `"any"` publishes them."""

from __future__ import annotations

import pytest

from cdc.capture.pgoutput import Begin, Commit, Insert, Origin
from cdc.capture.postgres import PgCaptureConfig
from tests.unit.cdc_pg.test_pg_event_assembly import REL, WHEN, events, feed, make


def _two_transactions(worker) -> None:  # type: ignore[no-untyped-def]
    feed(
        worker,
        REL,
        Begin(500, WHEN, 901),
        Origin(480, "cdc_catalog_reverse-catalog"),
        Insert(7, ("1", "applied by a sink", "2")),
        Commit(0, 490, 500, WHEN),
        Begin(600, WHEN, 902),
        Insert(7, ("2", "written by the app", "3")),
        Commit(0, 590, 600, WHEN),
    )


def test_origin_none_skips_the_changes_of_origin_tagged_transactions_but_confirms_them(
    tmp_path,
) -> None:
    worker, producer = make(tmp_path, origin="none")
    _two_transactions(worker)
    assert worker.flush() == 1
    assert [k for k, _v in events(producer)] == [{"id": 2}]
    assert worker.acked_lsn == 600  # the skipped transaction is confirmed too
    assert worker.stats.extra["skipped_origin_changes"] == 1


def test_origin_any_publishes_origin_tagged_transactions(tmp_path) -> None:
    worker, producer = make(tmp_path)
    _two_transactions(worker)
    assert worker.flush() == 2
    assert [k for k, _v in events(producer)] == [{"id": 1}, {"id": 2}]


def test_origin_must_be_any_or_none() -> None:
    with pytest.raises(ValueError, match="origin"):
        PgCaptureConfig(tables=("items",), origin="local")
