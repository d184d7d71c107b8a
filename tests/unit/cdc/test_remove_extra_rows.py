"""Deleting what a stopped capture never saw (`cdc.verify.remove_extra_rows`): the target's
rows whose key the source no longer has go, the others stay; it refuses to guess when the
mapping copies only some rows or the source table is empty."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text

from cdc.mapping import parse_mapping
from cdc.verify import remove_extra_rows


def _db(path: Path, ids: list[int]) -> Engine:
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
        for i in ids:
            conn.execute(text("INSERT INTO t VALUES (:i, :n)"), {"i": i, "n": f"n{i}"})
    return engine


def _mapping(**extra: object):  # type: ignore[no-untyped-def]
    table = {"source": "t", "target": "t", "key": ["id"], "columns": {"id": "id", "name": "name"}}
    return parse_mapping({"service": "s", "tables": [{**table, **extra}]}).for_source("t")


def _ids(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return [r[0] for r in conn.exec_driver_sql("SELECT id FROM t ORDER BY id")]


def test_target_rows_the_source_no_longer_has_are_deleted_in_batches(tmp_path: Path) -> None:
    source = _db(tmp_path / "s.db", [i for i in range(1, 1201) if i % 3])
    target = _db(tmp_path / "t.db", list(range(1, 1201)))
    removed = remove_extra_rows(source, target, _mapping(), batch=50, chunk=100)
    assert removed.deleted == 400 and removed.refused == []
    assert _ids(target) == _ids(source)


def test_nothing_is_deleted_when_the_mapping_filters_rows_or_the_source_is_empty(
    tmp_path: Path,
) -> None:
    target = _db(tmp_path / "t.db", [1, 2, 3])
    filtered = _mapping(filter=[{"column": "name", "op": "not_null"}])
    some = remove_extra_rows(_db(tmp_path / "s.db", [1]), target, filtered)
    assert some.deleted == 0 and "filters" in some.refused[0]
    empty = remove_extra_rows(_db(tmp_path / "e.db", []), target, _mapping())
    assert empty.deleted == 0 and "is empty in the source" in empty.refused[0]
    assert _ids(target) == [1, 2, 3]


def test_a_row_the_target_refuses_to_delete_is_named_and_the_others_still_go(
    tmp_path: Path,
) -> None:
    source = _db(tmp_path / "s.db", [1])
    target = _db(tmp_path / "t.db", [1, 2, 3, 4])
    target.dispose()  # new connections enforce foreign keys
    event.listen(target, "connect", lambda conn, _r: conn.execute("PRAGMA foreign_keys = ON"))
    with target.begin() as conn:  # an order line of the target still points at row 3
        conn.exec_driver_sql("CREATE TABLE child (id INTEGER PRIMARY KEY, t_id REFERENCES t(id))")
        conn.exec_driver_sql("INSERT INTO child VALUES (1, 3)")
    removed = remove_extra_rows(source, target, _mapping(), batch=10)
    assert removed.deleted == 2
    assert len(removed.refused) == 1 and removed.refused[0].startswith("id=3: ")
    assert "FOREIGN KEY" in removed.refused[0]
    assert _ids(target) == [1, 3]
