"""Capture → embedded log → sink, in process: snapshot, streaming, consistency, replay."""

from __future__ import annotations

import random
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, text

from cdc.capture.sqlite import (
    CaptureError,
    disable_capture,
    enable_capture,
    request_snapshot,
    snapshot_states,
)
from cdc.sink import sink_offsets
from tests.unit.cdc.synthetic import Pipeline, insert_product


@pytest.fixture
def pipe(tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(tmp_path / "p", chunk=10)
    yield p
    p.close()


def _assert_in_sync(p: Pipeline) -> None:
    report = p.verify()
    assert report.ok, [
        (t.source, t.missing, t.extra, t.differing, t.unmappable) for t in report.tables
    ]


def test_snapshot_then_streamed_changes_make_target_equal_mapped_source(pipe: Pipeline) -> None:
    for i in range(1, 36):
        insert_product(pipe.source, i, sku=None if i % 7 == 0 else f"S{i}")
    enable_capture(pipe.source, ["products", "customers"])
    request_snapshot(pipe.source, ["products", "customers"])
    with pipe.source.begin() as conn:
        conn.execute(text("UPDATE products SET price_cents = 1 WHERE id = 3"))
        conn.execute(text("DELETE FROM products WHERE id = 4"))
        conn.execute(
            text("INSERT INTO customers VALUES (1, 'Ann@X.com', 'Ann Lee', '2024-01-01 00:00:00')")
        )
    pipe.drain()
    _assert_in_sync(pipe)
    rows = {r[0]: r for r in pipe.target_rows()}
    assert 7 not in rows and 4 not in rows  # filtered (sku NULL) and deleted
    assert float(rows[3][4]) == 0.01
    assert pipe.target_rows("customer_account")[0][1:4] == ("ann@x.com", "Ann", "Lee")
    states = {s.table: s for s in snapshot_states(pipe.source)}
    assert (
        states["products"].status == "done" and states["products"].rows_done == 34
    )  # id 4 deleted first


def test_row_that_stops_matching_the_filter_is_deleted_and_comes_back(pipe: Pipeline) -> None:
    enable_capture(pipe.source, ["products"])
    insert_product(pipe.source, 1)
    pipe.drain()
    assert len(pipe.target_rows()) == 1
    with pipe.source.begin() as conn:
        conn.execute(text("UPDATE products SET sku = NULL WHERE id = 1"))
    pipe.drain()
    assert pipe.target_rows() == []
    with pipe.source.begin() as conn:
        conn.execute(text("UPDATE products SET sku = 'BACK' WHERE id = 1"))
    pipe.drain()
    assert pipe.target_rows()[0][1] == "BACK"
    _assert_in_sync(pipe)


def test_primary_key_change_moves_the_row(pipe: Pipeline) -> None:
    enable_capture(pipe.source, ["products"])
    insert_product(pipe.source, 1)
    with pipe.source.begin() as conn:
        conn.execute(text("UPDATE products SET id = 100 WHERE id = 1"))
    pipe.drain()
    assert [r[0] for r in pipe.target_rows()] == [100]


def test_capture_position_survives_restart_and_change_rows_are_pruned(pipe: Pipeline) -> None:
    enable_capture(pipe.source, ["products"])
    for i in range(1, 6):
        insert_product(pipe.source, i)
    pipe.capture.stream_batch()
    pos = pipe.capture.position()
    assert pos == 5
    pipe.capture.prune()
    with pipe.source.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM _cdc_changes")).scalar() == 0
    insert_product(pipe.source, 6)
    worker = pipe.new_capture()
    assert worker.position() == 5
    assert worker.stream_batch() == 1
    assert sum(pipe.log.end_offsets(pipe.topics).values()) == 6  # nothing published twice


def test_enable_and_disable_are_idempotent_and_checked(pipe: Pipeline) -> None:
    enable_capture(pipe.source, ["products"])
    enable_capture(pipe.source, ["products"])
    with pytest.raises(CaptureError, match="'nope'.*does not exist"):
        enable_capture(pipe.source, ["nope"])
    disable_capture(pipe.source, ["products"])
    disable_capture(pipe.source, ["products"])
    insert_product(pipe.source, 1)
    with pipe.source.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM _cdc_changes")).scalar() == 0
    with pytest.raises(CaptureError, match="not enabled"):
        request_snapshot(pipe.source, ["products"])


def test_interrupted_snapshot_resumes_from_the_last_finished_chunk(pipe: Pipeline) -> None:
    for i in range(1, 51):
        insert_product(pipe.source, i)
    enable_capture(pipe.source, ["products"])
    request_snapshot(pipe.source, ["products"])
    assert pipe.capture.snapshot_chunk() == 10
    assert pipe.capture.snapshot_chunk() == 10
    worker = pipe.new_capture()  # the worker "dies" and a new one starts
    request_snapshot(pipe.source, ["products"])  # asking again resumes, not restarts
    while worker.run_once():
        pass
    assert sum(pipe.log.end_offsets(pipe.topics).values()) == 50  # no chunk published twice
    state = snapshot_states(pipe.source)[0]
    assert (state.status, state.rows_done, state.chunks_done) == ("done", 50, 6)
    pipe.sink.drain(idle_polls=1)
    _assert_in_sync(pipe)


def test_snapshot_stays_consistent_under_concurrent_writes(tmp_path: Path) -> None:
    pipe = Pipeline(tmp_path / "p", chunk=15, batch=50)
    try:
        for i in range(1, 301):
            insert_product(pipe.source, i)
        enable_capture(pipe.source, ["products"])
        request_snapshot(pipe.source, ["products"])
        stop = threading.Event()
        rng = random.Random(7)

        def writer() -> None:
            n = 1000
            for _ in range(2500):  # bounded and paced, so slow machines finish too
                if stop.wait(0.001):
                    return
                with pipe.source.begin() as conn:
                    pid = rng.randint(1, 320)
                    kind = rng.random()
                    if kind < 0.5:
                        conn.execute(
                            text(
                                "UPDATE products SET price_cents = price_cents + 1, "
                                "name = name || 'x' WHERE id = :i"
                            ),
                            {"i": pid},
                        )
                    elif kind < 0.7:
                        conn.execute(text("DELETE FROM products WHERE id = :i"), {"i": pid})
                    else:
                        n += 1
                        conn.execute(
                            text(
                                "INSERT OR IGNORE INTO products (id, sku, name, price_cents) "
                                "VALUES (:i, :s, 'New', 5)"
                            ),
                            {"i": rng.choice([pid, n]), "s": f"N{n}"},
                        )

        t = threading.Thread(target=writer)
        t.start()
        try:
            while snapshot_states(pipe.source)[0].status != "done":
                pipe.capture.run_once()
                pipe.sink.run_once()
        finally:
            stop.set()
            t.join()
        pipe.drain()
        _assert_in_sync(pipe)
    finally:
        pipe.close()


def test_replaying_the_log_changes_nothing(pipe: Pipeline) -> None:
    enable_capture(pipe.source, ["products"])
    for i in range(1, 21):
        insert_product(pipe.source, i)
    with pipe.source.begin() as conn:
        conn.execute(text("UPDATE products SET price_cents = 7 WHERE id < 10"))
        conn.execute(text("DELETE FROM products WHERE id > 15"))
    pipe.drain()
    before = pipe.target_rows()
    # Redelivery: the transport's committed offsets are ignored because the sink seeks to its own.
    with pipe.target.begin() as conn:
        conn.execute(sink_offsets.update().values(next_offset=sink_offsets.c.next_offset))
    pipe.new_sink().drain(idle_polls=1)
    assert pipe.target_rows() == before
    # A full replay of the log (offsets forgotten) converges to the same rows.
    with pipe.target.begin() as conn:
        conn.execute(delete(sink_offsets))
    pipe.new_sink(group="g").drain(idle_polls=1)
    assert pipe.target_rows() == before
    _assert_in_sync(pipe)


def test_sink_resumes_from_offsets_stored_in_the_target(pipe: Pipeline) -> None:
    enable_capture(pipe.source, ["products"])
    for i in range(1, 11):
        insert_product(pipe.source, i)
    while pipe.capture.run_once():
        pass
    pipe.sink.drain(idle_polls=1)
    stored = pipe.sink.stored_offsets()
    assert sum(stored.values()) == 10
    insert_product(pipe.source, 11)
    pipe.capture.run_once()
    sink = pipe.new_sink()
    sink.start()
    result = sink.run_once()
    assert sink.last_batch_size == 1 and result.applied == 1


ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("insert"),
            st.integers(1, 25),
            st.integers(0, 10_000),
            st.booleans(),
            st.booleans(),
        ),
        st.tuples(
            st.just("update"),
            st.integers(1, 25),
            st.integers(0, 10_000),
            st.booleans(),
            st.booleans(),
        ),
        st.tuples(
            st.just("delete"), st.integers(1, 25), st.just(0), st.just(False), st.just(False)
        ),
        st.tuples(
            st.just("rekey"),
            st.integers(1, 25),
            st.integers(26, 60),
            st.just(False),
            st.just(False),
        ),
        st.tuples(st.just("pump"), st.integers(0, 3), st.just(0), st.just(False), st.just(False)),
    ),
    max_size=40,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(initial=st.integers(0, 12), operations=ops)
def test_random_changes_leave_the_target_equal_to_the_mapped_source(
    initial: int, operations: list
) -> None:
    with tempfile.TemporaryDirectory() as d:
        pipe = Pipeline(Path(d), chunk=3, batch=4)
        try:
            for i in range(1, initial + 1):
                insert_product(pipe.source, i)
            enable_capture(pipe.source, ["products", "customers"])
            request_snapshot(pipe.source, ["products"])
            for op, pid, val, flag, null_sku in operations:
                with pipe.source.begin() as conn:
                    params = {
                        "i": pid,
                        "v": val,
                        "a": int(flag),
                        "s": None if null_sku else f"S{val}",
                    }
                    if op == "insert":
                        conn.execute(
                            text(
                                "INSERT OR REPLACE INTO products (id, sku, name, price_cents, active) "
                                "VALUES (:i, :s, 'P ' || :v, :v, :a)"
                            ),
                            params,
                        )
                        conn.execute(
                            text(
                                "INSERT OR REPLACE INTO customers (id, email, full_name) "
                                "VALUES (:i, 'c' || :i || '@X.com', 'A B' || :v)"
                            ),
                            params,
                        )
                    elif op == "update":
                        conn.execute(
                            text(
                                "UPDATE products SET price_cents = :v, active = :a, sku = :s "
                                "WHERE id = :i"
                            ),
                            params,
                        )
                    elif op == "delete":
                        conn.execute(text("DELETE FROM products WHERE id = :i"), params)
                        conn.execute(text("DELETE FROM customers WHERE id = :i"), params)
                    elif op == "rekey":
                        conn.execute(
                            text("UPDATE OR IGNORE products SET id = :v WHERE id = :i"), params
                        )
                if op == "pump":
                    for _ in range(pid):
                        pipe.capture.run_once()
                        pipe.sink.run_once()
            pipe.drain()
            _assert_in_sync(pipe)
        finally:
            pipe.close()


def test_keep_applied_tables_publish_sink_writes_tagged_and_only_replica_sinks_apply_them(
    pipe: Pipeline,
) -> None:
    """A sink's writes to a `keep_applied` table (one a replica follows) are captured with the
    sink's origin; other tables still skip them. A default sink skips tagged events (no loop),
    a sink with `apply_sink_origins` (a replica's) applies them; an old change table without
    the origin column is migrated."""
    import json

    from cdc.capture.sqlite import ORIGIN_KEY

    with pipe.source.begin() as conn:  # a change table from before origins were recorded
        conn.execute(text("DROP TABLE _cdc_changes"))
        conn.execute(
            text(
                "CREATE TABLE _cdc_changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, tbl TEXT NOT "
                "NULL, op TEXT NOT NULL, pk TEXT, old_pk TEXT, txid INTEGER, before TEXT, "
                "after TEXT, ts_ms INTEGER NOT NULL)"
            )
        )
    insert_product(pipe.source, 1)
    enable_capture(pipe.source, ["products", "customers"], keep_applied=["customers"])
    with pipe.source.begin() as conn:  # as a reverse sink writes: inside its apply marker
        conn.execute(text("INSERT INTO _cdc_apply_marker (origin) VALUES ('reverse-svc')"))
        conn.execute(
            text("INSERT INTO customers VALUES (1, 'a@x.com', 'Ann Lee', '2024-01-01 00:00:00')")
        )
        conn.execute(text("UPDATE products SET price_cents = 5 WHERE id = 1"))  # not kept
        conn.execute(text("DELETE FROM _cdc_apply_marker"))
    with pipe.source.begin() as conn:
        conn.execute(
            text("INSERT INTO customers VALUES (2, 'b@x.com', 'Bo Li', '2024-01-01 00:00:00')")
        )
    with pipe.source.connect() as conn:
        got = conn.execute(text("SELECT tbl, origin FROM _cdc_changes ORDER BY seq")).all()
    assert [tuple(r) for r in got] == [("customers", "reverse-svc"), ("customers", None)]

    pipe.drain()
    assert [r[0] for r in pipe.target_rows("customer_account")] == [2]  # tagged one skipped
    msgs = pipe.log.consumer("peek", list(pipe.topics)).poll(max_records=100, timeout_s=1.0)
    sources = [json.loads(m.value)["source"] for m in msgs if m.value]
    assert sorted(s.get(ORIGIN_KEY) or "" for s in sources) == ["", "reverse-svc"]

    pipe.sink.close()
    pipe.sink = pipe._sink_cls(
        pipe.target,
        pipe.mapping,
        pipe.log,
        pipe._sink_cfg("replica", pipe.topics, apply_sink_origins=True),
    )
    pipe.sink.drain(idle_polls=1)
    assert [r[0] for r in pipe.target_rows("customer_account")] == [1, 2]
