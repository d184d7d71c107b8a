"""The embedded durable log: partitions, offsets, groups, crash recovery, retention."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cdc.ports import OutgoingMessage, TopicPartition, Transport
from cdc.transport.embedded import (
    EmbeddedLog,
    EmbeddedLogConfig,
    _segments,
    murmur2,
    partition_for,
)


def _log(tmp_path: Path, **kw: object) -> EmbeddedLog:
    return EmbeddedLog(EmbeddedLogConfig(tmp_path / "log", **kw))


def _send(log: EmbeddedLog, topic: str, n: int, start: int = 0, key_mod: int | None = None) -> None:
    prod = log.producer()
    prod.send_batch(
        [
            OutgoingMessage(topic, f"k{(i % key_mod) if key_mod else i}".encode(), f"v{i}".encode())
            for i in range(start, start + n)
        ]
    )
    prod.close()


def test_embedded_log_implements_the_transport_port(tmp_path: Path) -> None:
    assert isinstance(_log(tmp_path), Transport)


def test_murmur2_partitioning_matches_kafka_default_partitioner() -> None:
    from kafka.partitioner.default import murmur2 as kafka_murmur2

    for key in [
        b"",
        b"a",
        b"ab",
        b"abc",
        b"21",
        b"foobar",
        b'{"id":1}',
        b"a-little-bit-long-string",
    ]:
        assert murmur2(key) & 0x7FFFFFFF == kafka_murmur2(key) & 0x7FFFFFFF
    assert partition_for(b'{"id":1}', 4) == (kafka_murmur2(b'{"id":1}') & 0x7FFFFFFF) % 4


def test_messages_are_read_back_in_order_per_partition_with_offsets(tmp_path: Path) -> None:
    log = _log(tmp_path, partitions=3)
    _send(log, "t", 300, key_mod=10)
    consumer = log.consumer("g", ["t"])
    got = []
    while batch := consumer.poll(64, 0.05):
        got.extend(batch)
    assert len(got) == 300
    by_key: dict[bytes, list[int]] = {}
    for m in got:
        assert m.partition == partition_for(m.key, 3)
        by_key.setdefault(m.key, []).append(int(m.value[1:]))
    assert all(vs == sorted(vs) for vs in by_key.values())
    for p in range(3):
        offsets = [m.offset for m in got if m.partition == p]
        assert offsets == list(range(len(offsets)))
    ends = log.end_offsets(["t"])
    assert sum(ends.values()) == 300


def test_committed_offsets_resume_a_group_and_groups_are_independent(tmp_path: Path) -> None:
    log = _log(tmp_path, partitions=1)
    _send(log, "t", 10)
    c1 = log.consumer("g1", ["t"])
    first = c1.poll(4, 0.1)
    c1.commit({TopicPartition("t", 0): first[-1].offset + 1})
    c1.close()
    assert log.committed("g1", ["t"]) == {TopicPartition("t", 0): 4}
    again = log.consumer("g1", ["t"]).poll(100, 0.1)
    assert [m.offset for m in again] == list(range(4, 10))
    other = log.consumer("g2", ["t"]).poll(100, 0.1)
    assert len(other) == 10


def test_seek_moves_the_read_position(tmp_path: Path) -> None:
    log = _log(tmp_path, partitions=1, segment_bytes=2048)
    _send(log, "t", 100)
    c = log.consumer("g", ["t"])
    c.seek({TopicPartition("t", 0): 77})
    assert c.poll(1, 0.1)[0].offset == 77
    c.seek({TopicPartition("t", 0): 3})
    assert [m.offset for m in c.poll(2, 0.1)] == [3, 4]


def test_consumer_waits_for_a_topic_created_later(tmp_path: Path) -> None:
    log = _log(tmp_path, partitions=2)
    c = log.consumer("g", ["later"])
    assert c.poll(10, 0.05) == []
    _send(log, "later", 5)
    got = []
    for _ in range(5):
        got += c.poll(10, 0.05)
    assert len(got) == 5


def test_a_torn_last_record_is_truncated_on_reopen_and_appends_continue(tmp_path: Path) -> None:
    log = _log(tmp_path, partitions=1)
    _send(log, "t", 5)
    seg = tmp_path / "log" / "topics" / "t" / "0" / "00000000000000000000.log"
    good_size = seg.stat().st_size
    with open(seg, "ab") as f:
        f.write(b"\x00\x00\x01\x00garbage-partial-frame")  # a crash mid-write
    c = log.consumer("g", ["t"])
    assert len(c.poll(100, 0.05)) == 5  # readers stop at the torn tail
    _send(log, "t", 3, start=5)  # the next producer truncates and appends
    assert seg.stat().st_size > good_size
    more = c.poll(100, 0.1)
    assert [(m.offset, m.value) for m in more] == [(5, b"v5"), (6, b"v6"), (7, b"v7")]


def test_records_larger_than_one_read_are_delivered_and_survive_reopening(tmp_path: Path) -> None:
    big = b"x" * (3 * 1024 * 1024)  # a large BLOB row: bigger than the reader's read size
    log = _log(tmp_path, partitions=1)
    prod = log.producer()
    prod.send_batch([OutgoingMessage("t", b"a", b"small"), OutgoingMessage("t", b"b", big)])
    prod.close()
    c = log.consumer("g", ["t"])
    got = []
    while batch := c.poll(100, 0.05):
        got.extend(batch)
    assert [m.value for m in got] == [b"small", big]
    _send(_log(tmp_path, partitions=1), "t", 1, start=9)  # reopening must not cut the big one off
    again = _log(tmp_path, partitions=1).consumer("h", ["t"])
    values = []
    while batch := again.poll(100, 0.05):
        values.extend(m.value for m in batch)
    assert values == [b"small", big, b"v9"]


def test_a_flipped_byte_in_the_tail_record_is_detected_by_crc(tmp_path: Path) -> None:
    log = _log(tmp_path, partitions=1)
    _send(log, "t", 3)
    seg = tmp_path / "log" / "topics" / "t" / "0" / "00000000000000000000.log"
    data = bytearray(seg.read_bytes())
    data[-1] ^= 0xFF
    seg.write_bytes(bytes(data))
    (seg.parent / "checkpoint").unlink()
    _send(log, "t", 1, start=9)
    got = log.consumer("g", ["t"]).poll(100, 0.1)
    assert [(m.offset, m.value) for m in got] == [(0, b"v0"), (1, b"v1"), (2, b"v9")]


def test_segments_roll_and_retention_deletes_old_ones(tmp_path: Path) -> None:
    log = _log(tmp_path, partitions=1, segment_bytes=1024, retention_bytes=3000)
    for i in range(20):
        _send(log, "t", 10, start=i * 10)
    pdir = tmp_path / "log" / "topics" / "t" / "0"
    bases = _segments(pdir)
    assert len(bases) >= 2
    assert bases[0] > 0  # oldest segments are gone
    total = sum((pdir / f"{b:020d}.log").stat().st_size for b in bases)
    assert total <= 3000 + 1024 * 2
    c = log.consumer("g", ["t"])  # committed 0 was deleted: continues at the earliest offset
    got = c.poll(1000, 0.1)
    assert got[0].offset == bases[0]
    assert got[-1].offset == 199
    assert log.end_offsets(["t"])[TopicPartition("t", 0)] == 200


def test_age_retention_deletes_closed_segments(tmp_path: Path) -> None:
    log = _log(tmp_path, partitions=1, segment_bytes=1024, retention_ms=1000)
    _send(log, "t", 60)
    pdir = tmp_path / "log" / "topics" / "t" / "0"
    before = _segments(pdir)
    old = time.time() - 10
    for b in before:
        os.utime(pdir / f"{b:020d}.log", (old, old))
    _send(log, "t", 60, start=60)
    assert _segments(pdir)[0] > before[0]


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="partitions"):
        EmbeddedLogConfig("x", partitions=0)
    with pytest.raises(ValueError, match="fsync"):
        EmbeddedLogConfig("x", fsync="sometimes")


def test_another_process_reads_while_this_one_appends(tmp_path: Path) -> None:
    log = _log(tmp_path, partitions=2, segment_bytes=4096)
    log.create_topic("t")
    script = textwrap.dedent(f"""
        from cdc.transport.embedded import EmbeddedLog, EmbeddedLogConfig
        log = EmbeddedLog(EmbeddedLogConfig({str(tmp_path / "log")!r}))
        c = log.consumer("reader", ["t"])
        seen = 0
        import time
        deadline = time.monotonic() + 20
        while seen < 400 and time.monotonic() < deadline:
            seen += len(c.poll(100, 0.1))
        print(seen)
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[3],
    )
    try:
        for i in range(40):
            _send(log, "t", 10, start=i * 10)
            time.sleep(0.005)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert out.strip() == "400"
