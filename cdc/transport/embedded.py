"""Embedded durable log: the default event transport, a directory on disk, no server.

Layout under ``log_dir``::

    topics/<topic>/meta.json                partition count, written once (atomic link)
    topics/<topic>/<p>/<base:020d>.log      segments; base = offset of the first record
    topics/<topic>/<p>/checkpoint           producer's last known (segment, byte, offset) hint
    topics/<topic>/<p>/append.lock          flock held while a batch is appended
    groups.sqlite                           committed offsets of consumer groups (WAL)
    groups/<group>.lock                     flock held by the group's one active consumer

Record framing (big-endian)::

    u32 body_length | u32 crc32(body) | body
    body = i64 offset | i64 timestamp_ms | i32 key_len (-1: None) | i32 value_len (-1: None)
           | key | value

Partitioning is Kafka's: ``murmur2(key) & 0x7fffffff % partitions`` (the same function the
Java client and kafka-python use), so a key lands on the same partition number on either
transport. Records without a key go round-robin.

Durability: a batch is written with one ``write`` and, under the default ``fsync="batch"``
policy, ``fsync``-ed before ``send_batch`` returns. ``fsync="none"`` leaves flushing to the
OS (survives a process crash, not a power cut). A producer opening a partition scans the tail
of the last segment from the checkpoint hint and truncates a torn last record (incomplete
frame or bad CRC) left by a crash. Readers never truncate; they treat an incomplete tail as
"not yet written".

Retention deletes whole closed segments older than ``retention_ms`` or beyond
``retention_bytes`` per partition; a consumer whose position was deleted continues at the
earliest remaining offset. Every consumer of a group is assigned all partitions of its topics,
so a group has one active member at a time (as each Kafka partition has one member of a group):
a second consumer of a running group, in any process, gets ConsumerGroupBusy. Separate groups
fan out.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import struct
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cdc.locks import try_exclusive
from cdc.ports import (
    Consumer,
    ConsumerGroupBusy,
    Message,
    OutgoingMessage,
    Producer,
    TopicPartition,
    Transport,
)

HEADER = struct.Struct(">II")
BODY = struct.Struct(">qqii")
FRAME_OVERHEAD = HEADER.size + BODY.size
CHECKPOINT = struct.Struct(">qqq")
SEGMENT_SUFFIX = ".log"
READ_CHUNK = 1 << 20


_WORDS: dict[int, struct.Struct] = {}


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (unsigned 32-bit), as its default partitioner computes it."""
    length = len(data)
    m = 0x5BD1E995
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    words = _WORDS.get(length >> 2)
    if words is None:
        words = _WORDS[length >> 2] = struct.Struct(f"<{length >> 2}I")
    for k in words.unpack_from(data):  # little-endian 32-bit words, as Kafka reads them
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = length & ~3
    extra = length % 4
    if extra >= 3:
        h ^= data[tail + 2] << 16
    if extra >= 2:
        h ^= data[tail + 1] << 8
    if extra >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka-compatible partition of a key."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True)
class EmbeddedLogConfig:
    """Where the log lives and how it behaves."""

    log_dir: str | Path
    partitions: int = 4
    segment_bytes: int = 64 * 1024 * 1024
    retention_ms: int | None = 7 * 24 * 3600 * 1000
    retention_bytes: int | None = None
    fsync: str = "batch"
    poll_interval_s: float = 0.01

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise ValueError("partitions must be at least 1")
        if self.segment_bytes < 1024:
            raise ValueError("segment_bytes must be at least 1024")
        if self.fsync not in {"batch", "none"}:
            raise ValueError("fsync must be 'batch' or 'none'")
        if self.retention_ms is not None and self.retention_ms <= 0:
            raise ValueError("retention_ms must be positive (or None to keep everything)")
        if self.retention_bytes is not None and self.retention_bytes <= 0:
            raise ValueError("retention_bytes must be positive (or None)")


class LogCorruptError(RuntimeError):
    """A complete record in the middle of a segment fails its CRC."""


def encode_record(offset: int, ts_ms: int, key: bytes | None, value: bytes | None) -> bytes:
    body = b"".join(
        (
            BODY.pack(
                offset, ts_ms, -1 if key is None else len(key), -1 if value is None else len(value)
            ),
            key or b"",
            value or b"",
        )
    )
    return HEADER.pack(len(body), zlib.crc32(body)) + body


def _encode_records(
    first: int, ts_ms: int, records: Sequence[tuple[bytes | None, bytes | None]]
) -> bytes:
    """encode_record for a run of records with consecutive offsets, as one blob."""
    pack_body, pack_header, crc32 = BODY.pack, HEADER.pack, zlib.crc32
    parts = []
    offset = first
    for key, value in records:
        body = b"".join(
            (
                pack_body(
                    offset,
                    ts_ms,
                    -1 if key is None else len(key),
                    -1 if value is None else len(value),
                ),
                key or b"",
                value or b"",
            )
        )
        parts.append(pack_header(len(body), crc32(body)))
        parts.append(body)
        offset += 1
    return b"".join(parts)


def _scan(buf: bytes | memoryview, start: int = 0):
    """Yield (frame_start, frame_end, offset, ts, key, value) for complete, valid frames."""
    pos = start
    n = len(buf)
    while pos + HEADER.size <= n:
        length, crc = HEADER.unpack_from(buf, pos)
        end = pos + HEADER.size + length
        if length < BODY.size or end > n:
            return
        body = buf[pos + HEADER.size : end]
        if zlib.crc32(body) != crc:
            return
        offset, ts, klen, vlen = BODY.unpack_from(body, 0)
        p = BODY.size
        key = None if klen < 0 else bytes(body[p : p + klen])
        p += max(klen, 0)
        value = None if vlen < 0 else bytes(body[p : p + vlen])
        yield pos, end, offset, ts, key, value
        pos = end


_tuple_new = tuple.__new__  # Message is a NamedTuple: the read loop builds it directly


def _segments(pdir: Path) -> list[int]:
    try:
        names = os.listdir(pdir)
    except FileNotFoundError:
        return []
    return sorted(int(n[: -len(SEGMENT_SUFFIX)]) for n in names if n.endswith(SEGMENT_SUFFIX))


def _seg_path(pdir: Path, base: int) -> Path:
    return pdir / f"{base:020d}{SEGMENT_SUFFIX}"


def _read_checkpoint(pdir: Path) -> tuple[int, int, int] | None:
    try:
        raw = (pdir / "checkpoint").read_bytes()
        return CHECKPOINT.unpack(raw) if len(raw) == CHECKPOINT.size else None
    except FileNotFoundError:
        return None


def _tail_end(pdir: Path, base: int) -> tuple[int, int]:
    """(valid byte length, next offset) of segment `base`, scanning from the checkpoint hint."""
    path = _seg_path(pdir, base)
    size = path.stat().st_size
    start_pos, next_offset = 0, base
    hint = _read_checkpoint(pdir)
    if hint and hint[0] == base and hint[1] <= size:
        start_pos, next_offset = hint[1], hint[2]
    with open(path, "rb") as f:
        pos = start_pos
        want = READ_CHUNK
        while True:
            f.seek(pos)
            buf = f.read(want)
            if not buf:
                break
            consumed = 0
            for _s, end, offset, _ts, _k, _v in _scan(buf):
                consumed = end
                next_offset = offset + 1
            if consumed == 0:
                bigger = _bigger_read(buf, want)
                if bigger is None:
                    break
                want = bigger  # one record larger than the read size: read it whole
                continue
            want = READ_CHUNK
            pos += consumed
    return pos, next_offset


def _bigger_read(buf: bytes, want: int) -> int | None:
    """The read size that holds the record at the start of `buf`, if a full read cut it short.

    A record larger than READ_CHUNK is valid; without this a reader would stall on it and
    tail recovery would cut it off as if it were torn.
    """
    if len(buf) < want or len(buf) < HEADER.size:
        return None  # end of file: the record is incomplete (being written, or torn)
    length, _crc = HEADER.unpack_from(buf, 0)
    needed = HEADER.size + length
    return needed if needed > len(buf) else None


class _PartitionWriter:
    """Appends batches to one partition; recovers the tail on open and after others' writes."""

    def __init__(self, pdir: Path, config: EmbeddedLogConfig) -> None:
        self.pdir = pdir
        self.config = config
        pdir.mkdir(parents=True, exist_ok=True)
        self.lock_fd = os.open(pdir / "append.lock", os.O_CREAT | os.O_RDWR, 0o644)
        self.fd: int | None = None
        self.base = -1
        self.pos = 0
        self.next_offset = 0

    def _recover(self) -> None:
        """Find the active segment's valid end and cut off a torn last record."""
        bases = _segments(self.pdir)
        if not bases:
            _seg_path(self.pdir, 0).touch()
            bases = [0]
        base = bases[-1]
        pos, next_offset = _tail_end(self.pdir, base)
        if self.fd is not None:
            os.close(self.fd)
        self.fd = os.open(_seg_path(self.pdir, base), os.O_RDWR)
        if os.fstat(self.fd).st_size > pos:
            os.ftruncate(self.fd, pos)  # torn write from a crash
            os.fsync(self.fd)
        self.base, self.pos, self.next_offset = base, pos, next_offset

    def _stale(self) -> bool:
        if self.fd is None:
            return True
        bases = _segments(self.pdir)
        return not bases or bases[-1] != self.base or os.fstat(self.fd).st_size != self.pos

    def append(self, records: Sequence[tuple[bytes | None, bytes | None]], ts_ms: int) -> None:
        fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
        try:
            if self._stale():
                self._recover()
            assert self.fd is not None
            first = self.next_offset
            blob = _encode_records(first, ts_ms, records)
            written = 0
            while written < len(blob):
                written += os.pwrite(self.fd, blob[written:], self.pos + written)
            if self.config.fsync == "batch":
                os.fsync(self.fd)
            self.pos += len(blob)
            self.next_offset = first + len(records)
            with open(self.pdir / "checkpoint", "wb") as f:
                f.write(CHECKPOINT.pack(self.base, self.pos, self.next_offset))
            if self.pos >= self.config.segment_bytes:
                self._roll()
        finally:
            fcntl.flock(self.lock_fd, fcntl.LOCK_UN)

    def _roll(self) -> None:
        path = _seg_path(self.pdir, self.next_offset)
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        if self.config.fsync == "batch":
            dfd = os.open(self.pdir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        assert self.fd is not None
        os.close(self.fd)
        self.fd, self.base, self.pos = fd, self.next_offset, 0
        with open(self.pdir / "checkpoint", "wb") as f:
            f.write(CHECKPOINT.pack(self.base, self.pos, self.next_offset))
        self._retain()

    def _retain(self) -> None:
        """Delete closed segments past the age or size limit (never the active one)."""
        bases = _segments(self.pdir)[:-1]
        now = time.time()
        sizes = {b: _seg_path(self.pdir, b).stat().st_size for b in bases}
        total = sum(sizes.values()) + self.pos
        for b in bases:
            path = _seg_path(self.pdir, b)
            too_old = (
                self.config.retention_ms is not None
                and (now - path.stat().st_mtime) * 1000 > self.config.retention_ms
            )
            too_big = (
                self.config.retention_bytes is not None and total > self.config.retention_bytes
            )
            if not (too_old or too_big):
                break
            path.unlink()
            total -= sizes[b]

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        os.close(self.lock_fd)


class _PartitionReader:
    """A read position in one partition; reads with pread so a growing file is no problem."""

    def __init__(self, pdir: Path, offset: int) -> None:
        self.pdir = pdir
        self.fd: int | None = None
        self.base = -1
        self.pos = 0
        self.next_offset = 0
        self.seek(offset)

    def seek(self, offset: int) -> None:
        bases = _segments(self.pdir)
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if not bases:
            self.base, self.pos, self.next_offset = -1, 0, max(offset, 0)
            return
        if offset < bases[0]:
            offset = bases[0]  # retention removed it: continue at the earliest record
        base = max(b for b in bases if b <= offset)
        self._open(base)
        # Skip records before `offset` by walking frame headers.
        while self.next_offset < offset:
            hdr = os.pread(self.fd, FRAME_OVERHEAD, self.pos)
            if len(hdr) < FRAME_OVERHEAD:
                if not self._advance_segment():
                    break
                continue
            length, _crc = HEADER.unpack_from(hdr, 0)
            rec_offset = BODY.unpack_from(hdr, HEADER.size)[0]
            if rec_offset >= offset:
                self.next_offset = rec_offset
                break
            end = self.pos + HEADER.size + length
            if end > os.fstat(self.fd).st_size:
                break
            self.pos = end
            self.next_offset = rec_offset + 1

    def _open(self, base: int) -> None:
        if self.fd is not None:
            os.close(self.fd)
        self.fd = os.open(_seg_path(self.pdir, base), os.O_RDONLY)
        self.base, self.pos, self.next_offset = base, 0, base

    def _advance_segment(self) -> bool:
        later = [b for b in _segments(self.pdir) if b > self.base]
        if not later:
            return False
        self._open(later[0])
        return True

    def read(self, topic: str, partition: int, limit: int) -> list[Message]:
        if self.fd is None:
            bases = _segments(self.pdir)
            if not bases:
                return []
            self.seek(self.next_offset)
            if self.fd is None:
                return []
        out: list[Message] = []
        append = out.append
        unpack_header, unpack_body, crc32 = HEADER.unpack_from, BODY.unpack_from, zlib.crc32
        hsize, bsize = HEADER.size, BODY.size
        new, message = _tuple_new, Message
        want = READ_CHUNK
        remaining = limit
        while remaining > 0:
            buf = os.pread(self.fd, want, self.pos)
            view = memoryview(buf)
            consumed = 0
            n = len(buf)
            nxt = self.next_offset
            # The same frame checks as _scan, inlined: this loop reads every event the sink sees.
            while consumed + hsize <= n:
                length, crc = unpack_header(buf, consumed)
                start = consumed + hsize
                end = start + length
                if length < bsize or end > n or crc32(view[start:end]) != crc:
                    break
                offset, ts, klen, vlen = unpack_body(buf, start)
                consumed = end
                if offset < nxt:
                    continue
                p = start + bsize
                if klen < 0:
                    key = None
                else:
                    key = buf[p : p + klen]
                    p += klen
                value = None if vlen < 0 else buf[p : p + vlen]
                append(new(message, (topic, partition, offset, key, value, ts)))  # Message(...)
                nxt = offset + 1
                remaining -= 1
                if not remaining:
                    break
            self.next_offset = nxt
            view.release()
            self.pos += consumed
            if consumed:
                want = READ_CHUNK
                continue
            bigger = _bigger_read(buf, want)
            if bigger is not None:
                want = bigger  # one record larger than the read size: read it whole
                continue
            if len(buf) >= HEADER.size:
                length, _ = HEADER.unpack_from(buf, 0)
                if HEADER.size + length <= len(buf):
                    raise LogCorruptError(
                        f"{self.pdir}: record at byte {self.pos} of segment {self.base} fails "
                        "its CRC check"
                    )
            if not self._advance_segment():
                break
        return out

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class _Offsets:
    """Committed offsets of consumer groups, in a small SQLite file shared by processes."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS offsets (grp TEXT NOT NULL, topic TEXT NOT NULL, "
            "partition INTEGER NOT NULL, next_offset INTEGER NOT NULL, updated_ms INTEGER, "
            "PRIMARY KEY (grp, topic, partition))"
        )

    def get(self, group: str, topics: Iterable[str]) -> dict[TopicPartition, int]:
        topics = list(topics)
        if not topics:
            return {}
        rows = self.conn.execute(
            f"SELECT topic, partition, next_offset FROM offsets WHERE grp = ? AND topic IN "
            f"({','.join('?' * len(topics))})",
            [group, *topics],
        ).fetchall()
        return {TopicPartition(t, p): o for t, p, o in rows}

    def put(self, group: str, offsets: dict[TopicPartition, int]) -> None:
        now = int(time.time() * 1000)
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.executemany(
                "INSERT INTO offsets VALUES (?, ?, ?, ?, ?) ON CONFLICT (grp, topic, partition) "
                "DO UPDATE SET next_offset = excluded.next_offset, updated_ms = excluded.updated_ms",
                [(group, tp.topic, tp.partition, o, now) for tp, o in offsets.items()],
            )
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.conn.close()


class EmbeddedLog(Transport):
    """The embedded durable log (see module docstring for format and guarantees)."""

    def __init__(self, config: EmbeddedLogConfig) -> None:
        self.config = config
        self.root = Path(config.log_dir)
        (self.root / "topics").mkdir(parents=True, exist_ok=True)

    # -- topics
    def topic_dir(self, topic: str) -> Path:
        if not topic or "/" in topic or topic.startswith("."):
            raise ValueError(f"invalid topic name {topic!r}")
        return self.root / "topics" / topic

    def partitions_of(self, topic: str) -> int | None:
        try:
            return int(json.loads((self.topic_dir(topic) / "meta.json").read_text())["partitions"])
        except FileNotFoundError:
            return None

    def create_topic(self, topic: str, partitions: int | None = None) -> int:
        """Create a topic (idempotent); returns its partition count."""
        existing = self.partitions_of(topic)
        if existing is not None:
            return existing
        count = partitions or self.config.partitions
        tdir = self.topic_dir(topic)
        tdir.mkdir(parents=True, exist_ok=True)
        for p in range(count):
            (tdir / str(p)).mkdir(exist_ok=True)
        tmp = tdir / f".meta.{os.getpid()}.{time.monotonic_ns()}"
        tmp.write_text(json.dumps({"partitions": count}))
        try:
            os.link(tmp, tdir / "meta.json")  # atomic: first creator wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        return self.partitions_of(topic) or count

    def topics(self) -> list[str]:
        return sorted(
            p.name for p in (self.root / "topics").iterdir() if (p / "meta.json").exists()
        )

    # -- port
    def producer(self) -> EmbeddedProducer:
        return EmbeddedProducer(self)

    def consumer(self, group: str, topics: Iterable[str]) -> EmbeddedConsumer:
        return EmbeddedConsumer(self, group, list(topics))

    def end_offsets(self, topics: Iterable[str]) -> dict[TopicPartition, int]:
        out: dict[TopicPartition, int] = {}
        for topic in topics:
            for p in range(self.partitions_of(topic) or 0):
                pdir = self.topic_dir(topic) / str(p)
                bases = _segments(pdir)
                out[TopicPartition(topic, p)] = _tail_end(pdir, bases[-1])[1] if bases else 0
        return out

    def committed(self, group: str, topics: Iterable[str]) -> dict[TopicPartition, int]:
        store = _Offsets(self.root / "groups.sqlite")
        try:
            return store.get(group, topics)
        finally:
            store.close()


class EmbeddedProducer(Producer):
    def __init__(self, log: EmbeddedLog) -> None:
        self.log = log
        self.writers: dict[TopicPartition, _PartitionWriter] = {}
        self.partitions: dict[str, int] = {}
        self._rr = 0

    def ensure_topic(self, topic: str, partitions: int | None = None) -> None:
        self.partitions[topic] = self.log.create_topic(topic, partitions)

    def send_batch(self, messages: Sequence[OutgoingMessage]) -> None:
        grouped: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]] = {}
        for m in messages:
            topic, key = m.topic, m.key
            n = self.partitions.get(topic)
            if n is None:
                self.ensure_topic(topic)
                n = self.partitions[topic]
            if key is None:
                self._rr += 1
                p = self._rr % n
            else:
                p = (murmur2(key) & 0x7FFFFFFF) % n  # partition_for, inlined
            records = grouped.get((topic, p))
            if records is None:
                records = grouped[(topic, p)] = []
            records.append((key, m.value))
        ts = int(time.time() * 1000)
        for (topic, partition), records in grouped.items():
            tp = TopicPartition(topic, partition)
            writer = self.writers.get(tp)
            if writer is None:
                writer = _PartitionWriter(
                    self.log.topic_dir(tp.topic) / str(tp.partition), self.log.config
                )
                self.writers[tp] = writer
            writer.append(records, ts)

    def close(self) -> None:
        for w in self.writers.values():
            w.close()
        self.writers.clear()


def _lock_group(root: Path, group: str) -> int:
    """Hold the group's member lock (released when the fd closes, also by a killed process)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in group)[:80]
    digest = zlib.crc32(group.encode()) & 0xFFFFFFFF
    folder = root / "groups"
    folder.mkdir(parents=True, exist_ok=True)
    fd = try_exclusive(folder / f"{safe}-{digest:08x}.lock")
    if fd is None:
        raise ConsumerGroupBusy(
            f"consumer group {group!r} already has an active member on the embedded log "
            f"{root} (another `kit cdc run` sink of this group?): one member reads a group's "
            "partitions at a time; stop the other one or use another group"
        )
    return fd


class EmbeddedConsumer(Consumer):
    def __init__(self, log: EmbeddedLog, group: str, topics: list[str]) -> None:
        self.log = log
        self.group = group
        self.topics = topics
        self._lock_fd: int | None = _lock_group(log.root, group)
        self.offsets = _Offsets(log.root / "groups.sqlite")
        self.readers: dict[TopicPartition, _PartitionReader] = {}
        self._pending_seek: dict[TopicPartition, int] = {}
        self._refresh()

    def _refresh(self) -> None:
        """Pick up topics (and partitions) created since the last poll."""
        missing = [t for t in self.topics if not any(tp.topic == t for tp in self.readers)]
        if not missing:
            return
        committed = self.offsets.get(self.group, missing)
        for topic in missing:
            for p in range(self.log.partitions_of(topic) or 0):
                tp = TopicPartition(topic, p)
                start = self._pending_seek.pop(tp, committed.get(tp, 0))
                self.readers[tp] = _PartitionReader(self.log.topic_dir(topic) / str(p), start)

    def poll(self, max_records: int = 500, timeout_s: float = 1.0) -> list[Message]:
        deadline = time.monotonic() + timeout_s
        while True:
            self._refresh()
            out: list[Message] = []
            for tp, reader in sorted(
                self.readers.items(), key=lambda kv: (kv[0].topic, kv[0].partition)
            ):
                if len(out) >= max_records:
                    break
                out.extend(reader.read(tp.topic, tp.partition, max_records - len(out)))
            if out or time.monotonic() >= deadline:
                return out
            time.sleep(min(self.log.config.poll_interval_s, max(0.0, deadline - time.monotonic())))

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if offsets:
            self.offsets.put(self.group, offsets)

    def seek(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            reader = self.readers.get(tp)
            if reader is None:
                self._pending_seek[tp] = offset
            else:
                reader.seek(offset)

    def position(self) -> dict[TopicPartition, int]:
        """Next offset this consumer will read, per assigned partition."""
        return {tp: r.next_offset for tp, r in self.readers.items()}

    def assignment(self) -> set[TopicPartition]:
        self._refresh()
        return set(self.readers)

    def close(self) -> None:
        for r in self.readers.values():
            r.close()
        self.readers.clear()
        self.offsets.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
