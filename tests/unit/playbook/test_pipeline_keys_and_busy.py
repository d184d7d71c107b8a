"""The playbook's capture switch captures a table without a primary key by its mapping's
declared key (in both directions, also when `writes` is rolled back and forward capture comes
back), and a second sink of one consumer group is refused with the reason, not a crash."""

from __future__ import annotations

from pathlib import Path

from cdc.capture.sqlite import captured_tables
from cdc.mapping import parse_mapping
from cdc.transport.embedded import EmbeddedLog, EmbeddedLogConfig
from kit.manifest import load_manifest
from kit.playbook import pipelines as pl
from kitcore.db import make_engine
from tests.playbook_shop import write_manifest

MAPPING = parse_mapping(
    {
        "service": "social",
        "tables": [
            {
                "source": "follows",
                "target": "social_follow",
                "key": ["a", "b"],
                "columns": {"a": "follower_id", "b": "followee_id", "since": "since"},
            }
        ],
    }
)


def _pipes(tmp_path: Path) -> tuple[pl.Pipeline, pl.Pipeline]:
    mono, svc = f"sqlite:///{tmp_path / 'mono.db'}", f"sqlite:///{tmp_path / 'svc.db'}"
    for url, ddl in (
        (mono, "CREATE TABLE follows (follower_id INTEGER, followee_id INTEGER, since TEXT)"),
        (svc, "CREATE TABLE social_follow (a INTEGER, b INTEGER, since TEXT)"),  # keyless too
    ):
        engine = make_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql(ddl)
        engine.dispose()
    common = {"service": "social", "capture_worker": "capture:monolith", "sink_worker": "sink:x"}
    fwd = pl.Pipeline(
        direction="forward",
        source_url=mono,
        target_url=svc,
        mapping=MAPPING,
        topic_prefix="t",
        group="sink-social",
        **common,
    )
    rev = pl.Pipeline(
        direction="reverse",
        source_url=svc,
        target_url=mono,
        mapping=pl.invert_mapping(MAPPING),
        topic_prefix="t-social",
        group="reverse-social",
        **common,
    )
    return fwd, rev


def _keys(url: str) -> dict[str, tuple[str, ...]]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {t: c.pk for t, c in captured_tables(conn).items()}
    finally:
        engine.dispose()


def test_keyless_tables_are_captured_by_the_declared_key_in_both_directions(
    tmp_path: Path,
) -> None:
    m = load_manifest(write_manifest(tmp_path))
    fwd, rev = _pipes(tmp_path)
    pl.enable_pipe_capture(m, fwd)  # capture step
    assert _keys(fwd.source_url) == {"follows": ("follower_id", "followee_id")}
    pl.enable_pipe_capture(m, rev)  # writes: reverse capture on the service table
    assert _keys(rev.source_url) == {"social_follow": ("a", "b")}
    pl.disable_pipe_capture(m, fwd)  # writes: forward capture stops ...
    assert _keys(fwd.source_url) == {}
    pl.enable_pipe_capture(m, fwd)  # ... and comes back when writes is rolled back
    assert _keys(fwd.source_url) == {"follows": ("follower_id", "followee_id")}


def test_a_second_sink_of_a_group_is_refused_with_the_reason(tmp_path: Path) -> None:
    fwd, _rev = _pipes(tmp_path)
    log = EmbeddedLog(EmbeddedLogConfig(tmp_path / "log", partitions=2))
    # no file lock (a `kit cdc run` sink outside the manifest): the group itself refuses
    first = pl.PipelineWorker("sink:x", "sink", fwd, log, lock=None)
    second = pl.PipelineWorker("sink:x", "sink", fwd, log, lock=None)
    assert first.try_acquire()
    try:
        assert second.try_acquire() is False
        assert second.busy is not None and "consumer group 'sink-social'" in second.busy
    finally:
        first.release()
    assert second.try_acquire()  # the first one gone: the group is free again
    second.release()
