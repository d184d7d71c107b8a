"""Kafka adapter of the CDC transport port (kafka-python).

Why this shape: the sink stores its consumed offsets in its own database, so this adapter
never auto-commits; `commit()` writes explicit offsets (Kafka's "next offset to read")
for monitoring and for consumers that do not keep their own. Producers use acks=all and
keep per-partition order on retries (one in-flight request per connection, or up to five
with the idempotent producer, whose sequence numbers stop retries from reordering), so a
batch returned by `send_batch` is durable and ordered by key.

Throughput: `send_batch` always ends with one flush, so `linger_ms` only lets the producer
gather a whole batch into few large requests (default 100 ms, 1 MiB batches) without adding
latency; consumers fetch up to 4 MiB per partition and the broker answers a fetch as soon as
data is there (`fetch_min_bytes=1`) or after `fetch_max_wait_ms` when idle. kafka-python
checksums every record batch (CRC32C) in C only with the `crc32c` package (a dependency;
`crc32c_accelerated`), and the producer adapter picks each message's partition itself, as
Kafka's default partitioner would, so kafka-python's partitioner does not run per message.

Works against Apache Kafka and against Tansu (the pip-installable broker used by the
tests). Tansu quirk handled here: its ListOffsets(latest) answers "base offset of the last
record batch + 1", which under-reports the end of a partition whose last batch holds
several records; `end_offsets` corrects it from a fetch's high watermark
(`KafkaConfig.exact_end_offsets`, on by default, harmless on real Kafka).

kafka-python is imported lazily so importing `cdc.transport` stays cheap.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from cdc.ports import Consumer, Message, OutgoingMessage, Producer, TopicPartition, Transport

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI")
OFFSET_RESETS = ("earliest", "latest")
_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_SERVER_RE = re.compile(r"^[^\s:,]+:\d{1,5}$")
_log = logging.getLogger("cdc.transport.kafka")
_crc_checked = False


class KafkaTransportError(RuntimeError):
    """A broker operation failed; the message names the topic/group involved."""


def dlq_topic(topic: str) -> str:
    """Dead-letter topic for `topic`: where a sink parks messages it cannot apply."""
    return topic + ".dlq"


def crc32c_accelerated() -> bool:
    """Whether kafka-python checks and writes record batches' CRC32C with the `crc32c`
    package (C) rather than its pure-Python fallback, which costs ~80 µs (producer) and ~50 µs
    (consumer) of CPU per 400-byte event and alone cut the adapter's throughput ~4x."""
    from kafka.record import util

    used = (util.calc_crc32c.__defaults__ or (None,))[0]
    return used is not None and getattr(used, "__module__", "") != "kafka.record._crc32c"


def _warn_slow_crc() -> None:
    global _crc_checked
    if not _crc_checked:
        _crc_checked = True
        if not crc32c_accelerated():
            _log.warning(
                "kafka-python computes CRC32C in pure Python here (the crc32c package is "
                "missing): Kafka throughput is about 4x lower; pip install crc32c"
            )


_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_words = struct.Struct("<I").iter_unpack


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (the Java client's Utils.murmur2, which the default partitioner
    uses), equal to kafka-python's ``kafka.partitioner.default.murmur2`` but ~1.7x faster:
    the 4-byte words are unpacked in C and each step masks once."""
    length = len(data)
    h = 0x9747B28C ^ length
    tail = length & ~3
    for (k,) in _words(data[:tail]):
        k = (k * _M) & _MASK
        k = ((k ^ (k >> 24)) * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    extra = length & 3
    if extra:
        if extra == 3:
            h ^= data[tail + 2] << 16
        if extra >= 2:
            h ^= data[tail + 1] << 8
        h = ((h ^ data[tail]) * _M) & _MASK
    h = ((h ^ (h >> 13)) * _M) & _MASK
    return h ^ (h >> 15)


def available_codecs() -> tuple[str, ...]:
    """Compression codecs kafka-python can use here ("none" and "gzip" always)."""
    from kafka import codec

    optional = [name for name in ("snappy", "lz4", "zstd") if getattr(codec, f"has_{name}")()]
    return ("none", "gzip", *optional)


@dataclass(frozen=True, repr=False)
class KafkaConfig:
    """Connection, topic and client settings, validated up front (ValueError names the field)."""

    bootstrap_servers: str | Sequence[str]
    client_id: str = "strangler-kit"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    partitions: int = 3
    replication_factor: int = 1
    linger_ms: int = 100
    batch_size: int = 1048576
    max_in_flight_requests: int = 1
    enable_idempotence: bool = True
    compression_type: str = "none"
    request_timeout_ms: int = 30000
    session_timeout_ms: int = 10000
    heartbeat_interval_ms: int = 3000
    max_poll_interval_ms: int = 300000
    auto_offset_reset: str = "earliest"
    fetch_min_bytes: int = 1
    fetch_max_wait_ms: int = 100
    max_partition_fetch_bytes: int = 4194304
    exact_end_offsets: bool = True
    servers: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        raw = self.bootstrap_servers
        items = raw.split(",") if isinstance(raw, str) else list(raw)
        servers = tuple(s.strip() for s in items if s and s.strip())
        if not servers:
            raise ValueError("bootstrap_servers: at least one host:port is required")
        for server in servers:
            if not _SERVER_RE.match(server) or not 0 < int(server.rsplit(":", 1)[1]) < 65536:
                raise ValueError(f"bootstrap_servers: {server!r} is not host:port")
        object.__setattr__(self, "servers", servers)
        if not self.client_id:
            raise ValueError("client_id: must not be empty")
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise ValueError(
                f"security_protocol: {self.security_protocol!r} not in {SECURITY_PROTOCOLS}"
            )
        self._validate_sasl()
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not os.path.isfile(path):
                raise ValueError(f"{name}: no such file {path!r}")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_keyfile: ssl_certfile and ssl_keyfile go together")
        for name, minimum in (
            ("partitions", 1),
            ("replication_factor", 1),
            ("linger_ms", 0),
            ("batch_size", 1),
            ("request_timeout_ms", 1),
            ("session_timeout_ms", 1),
            ("heartbeat_interval_ms", 1),
            ("max_poll_interval_ms", 1),
            ("max_in_flight_requests", 1),
            ("fetch_min_bytes", 1),
            ("fetch_max_wait_ms", 0),
            ("max_partition_fetch_bytes", 1),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ValueError(f"{name}: must be an integer >= {minimum}, got {value!r}")
        if self.max_in_flight_requests > 1 and not self.enable_idempotence:
            raise ValueError(
                "max_in_flight_requests: above 1 needs enable_idempotence (retries would reorder)"
            )
        if self.max_in_flight_requests > 5:
            raise ValueError("max_in_flight_requests: at most 5 (the idempotent producer's limit)")
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms: must be below session_timeout_ms")
        if self.request_timeout_ms <= self.session_timeout_ms:
            raise ValueError("request_timeout_ms: must exceed session_timeout_ms")
        codecs = available_codecs()
        if self.compression_type not in codecs:
            raise ValueError(
                f"compression_type: {self.compression_type!r} not available here; use one of {codecs}"
            )
        if self.auto_offset_reset not in OFFSET_RESETS:
            raise ValueError(
                f"auto_offset_reset: {self.auto_offset_reset!r} not in {OFFSET_RESETS}"
            )

    def _validate_sasl(self) -> None:
        uses_sasl = self.security_protocol.startswith("SASL_")
        if not uses_sasl:
            if self.sasl_mechanism is not None:
                raise ValueError(
                    "sasl_mechanism: needs security_protocol SASL_PLAINTEXT or SASL_SSL"
                )
            return
        if self.sasl_mechanism not in SASL_MECHANISMS:
            raise ValueError(f"sasl_mechanism: {self.sasl_mechanism!r} not in {SASL_MECHANISMS}")
        if self.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
            if not self.sasl_plain_username:
                raise ValueError("sasl_plain_username: required for " + self.sasl_mechanism)
            if not self.sasl_plain_password:
                raise ValueError("sasl_plain_password: required for " + self.sasl_mechanism)

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            if f.name == "servers":
                continue
            value = getattr(self, f.name)
            if f.name == "sasl_plain_password" and value is not None:
                value = "***"
            shown.append(f"{f.name}={value!r}")
        return f"KafkaConfig({', '.join(shown)})"

    __str__ = __repr__

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> KafkaConfig:
        """Build from KAFKA_* variables (KAFKA_BOOTSTRAP_SERVERS, KAFKA_SASL_PLAIN_PASSWORD, ...)."""
        environ = dict(os.environ if environ is None else environ)
        values: dict[str, Any] = {}
        for f in fields(cls):
            if not f.init:
                continue
            raw = environ.get("KAFKA_" + f.name.upper())
            if raw is None:
                continue
            if f.type in ("int",):
                values[f.name] = int(raw)
            elif f.type in ("bool",):
                values[f.name] = raw.strip().lower() in ("1", "true", "yes", "on")
            else:
                values[f.name] = raw
        values.update(overrides)
        if "bootstrap_servers" not in values:
            raise ValueError("bootstrap_servers: set KAFKA_BOOTSTRAP_SERVERS")
        return cls(**values)

    def client_kwargs(self) -> dict[str, Any]:
        """Settings every kafka-python client takes (connection and security)."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": list(self.servers),
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
        }
        optional = {
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.sasl_plain_username,
            "sasl_plain_password": self.sasl_plain_password,
            "ssl_cafile": self.ssl_cafile,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
        }
        kwargs.update({k: v for k, v in optional.items() if v is not None})
        return kwargs


def _validate_topic(topic: str) -> None:
    if not isinstance(topic, str) or not _TOPIC_RE.match(topic) or topic in (".", ".."):
        raise ValueError(f"topic: {topic!r} is not a legal Kafka topic name")


def _offset_and_metadata(offset: int) -> Any:
    from kafka.structs import OffsetAndMetadata

    if len(OffsetAndMetadata._fields) >= 3:  # kafka-python >= 2.1 adds leader_epoch
        return OffsetAndMetadata(offset, "", -1)
    return OffsetAndMetadata(offset, "")  # pragma: no cover - kafka-python 2.0.x


def _k(tp: TopicPartition) -> Any:
    from kafka import TopicPartition as KafkaTP

    return KafkaTP(tp.topic, tp.partition)


def _ours(tp: Any) -> TopicPartition:
    return TopicPartition(tp.topic, tp.partition)


class KafkaTransport(Transport):
    """Producers and consumers on a Kafka cluster; also creates topics and reads lag."""

    def __init__(self, config: KafkaConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._admin: Any = None
        self._meta: Any = None  # group-less consumer for offsets and metadata
        self._known_topics: set[str] = set()

    def __repr__(self) -> str:
        return f"KafkaTransport({self.config!r})"

    # -- topics
    def _admin_client(self) -> Any:
        if self._admin is None:
            from kafka import KafkaAdminClient

            self._admin = KafkaAdminClient(**self.config.client_kwargs())
        return self._admin

    def ensure_topic(self, topic: str, partitions: int | None = None) -> None:
        """Create `topic` with `partitions` (default: config) unless it exists; idempotent."""
        _validate_topic(topic)
        if topic in self._known_topics:
            return
        from kafka.admin import NewTopic
        from kafka.errors import KafkaError, TopicAlreadyExistsError

        count = partitions or self.config.partitions
        with self._lock:
            admin = self._admin_client()
            try:
                admin.create_topics(
                    [NewTopic(topic, count, self.config.replication_factor)],
                    timeout_ms=self.config.request_timeout_ms,
                )
            except TopicAlreadyExistsError:
                pass
            except KafkaError as error:
                raise KafkaTransportError(f"cannot create topic {topic!r}: {error}") from error
        self._wait_for_metadata([topic])
        self._known_topics.add(topic)

    def partitions_of(self, topic: str) -> int | None:
        """Partition count of `topic`, or None when the broker does not know it."""
        with self._lock:
            meta = self._meta_consumer()
            parts = meta.partitions_for_topic(topic)
        return len(parts) if parts else None

    def _wait_for_metadata(self, topics: list[str], timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self.partitions_of(t) for t in topics):
                return
            time.sleep(0.05)
        raise KafkaTransportError(f"topics {topics} not visible in metadata after {timeout_s}s")

    # -- port
    def producer(self) -> KafkaProducerAdapter:
        return KafkaProducerAdapter(self)

    def consumer(self, group: str, topics: Iterable[str]) -> KafkaConsumerAdapter:
        topics = list(topics)
        if not group:
            raise ValueError("group: must not be empty")
        if not topics:
            raise ValueError("topics: at least one topic is required")
        for topic in topics:
            self.ensure_topic(topic)  # so the first join already sees every partition
        return KafkaConsumerAdapter(self, group, topics)

    def _meta_consumer(self) -> Any:
        if self._meta is None:
            from kafka import KafkaConsumer

            self._meta = KafkaConsumer(
                enable_auto_commit=False,
                consumer_timeout_ms=1000,
                **self.config.client_kwargs(),
            )
        return self._meta

    def _topic_partitions(self, topics: Iterable[str]) -> list[TopicPartition]:
        out: list[TopicPartition] = []
        for topic in topics:
            out += [TopicPartition(topic, p) for p in range(self.partitions_of(topic) or 0)]
        return out

    def end_offsets(self, topics: Iterable[str]) -> dict[TopicPartition, int]:
        """Next offset to be written per partition; topics the broker lacks are left out."""
        tps = self._topic_partitions(topics)
        if not tps:
            return {}
        with self._lock:
            meta = self._meta_consumer()
            listed = {_ours(tp): o for tp, o in meta.end_offsets([_k(tp) for tp in tps]).items()}
            if self.config.exact_end_offsets:
                listed = self._exact_ends(meta, listed)
        return listed

    def _exact_ends(
        self, meta: Any, listed: dict[TopicPartition, int]
    ) -> dict[TopicPartition, int]:
        """Raise each end to the fetch high watermark (Tansu's ListOffsets lags inside batches)."""
        probe = {tp: o for tp, o in listed.items() if o > 0}
        if not probe:
            return listed
        ends = dict(listed)
        meta.assign([_k(tp) for tp in probe])
        for tp, offset in probe.items():
            meta.seek(_k(tp), offset - 1)
        pending = set(probe)
        deadline = time.monotonic() + self.config.request_timeout_ms / 1000
        while pending and time.monotonic() < deadline:
            batches = meta.poll(timeout_ms=200, max_records=10_000)
            for ktp, records in batches.items():
                tp = _ours(ktp)
                if records:
                    ends[tp] = max(ends[tp], records[-1].offset + 1)
            for tp in list(pending):
                high = meta.highwater(_k(tp))
                if high is not None:
                    ends[tp] = max(ends[tp], high)
                    pending.discard(tp)
        meta.assign([])
        return ends

    def committed(self, group: str, topics: Iterable[str]) -> dict[TopicPartition, int]:
        """Committed next-offsets of `group`; partitions it never committed are left out."""
        from kafka import KafkaConsumer

        tps = self._topic_partitions(topics)
        if not tps:
            return {}
        reader = KafkaConsumer(
            group_id=group, enable_auto_commit=False, **self.config.client_kwargs()
        )
        try:
            out: dict[TopicPartition, int] = {}
            for tp in tps:
                offset = reader.committed(_k(tp))
                if offset is not None and offset >= 0:
                    out[tp] = offset
            return out
        finally:
            reader.close(autocommit=False)

    def close(self) -> None:
        """Close the admin and metadata clients (producers/consumers close themselves)."""
        with self._lock:
            for client in (self._meta, self._admin):
                if client is not None:
                    client.close()
            self._meta = self._admin = None


class KafkaProducerAdapter(Producer):
    """acks=all producer; partition = murmur2(key) % partitions (Kafka's default partitioner)."""

    def __init__(self, transport: KafkaTransport) -> None:
        from kafka import KafkaProducer

        config = transport.config
        self.transport = transport
        _warn_slow_crc()
        self._producer = KafkaProducer(
            acks="all",
            retries=5,
            # retries must not reorder a partition: 1 in flight, or idempotence (<= 5)
            max_in_flight_requests_per_connection=config.max_in_flight_requests,
            enable_idempotence=config.enable_idempotence,
            linger_ms=config.linger_ms,
            batch_size=config.batch_size,
            max_request_size=max(1048576, config.batch_size),
            compression_type=None if config.compression_type == "none" else config.compression_type,
            **config.client_kwargs(),
        )

    def ensure_topic(self, topic: str, partitions: int | None = None) -> None:
        self.transport.ensure_topic(topic, partitions)

    def send_batch(self, messages: Sequence[OutgoingMessage]) -> None:
        """Send all and wait for every acknowledgement; raise KafkaTransportError on any failure."""
        from kafka.errors import KafkaError

        if not messages:
            return
        topics = {m.topic for m in messages}
        for topic in topics:
            self.transport.ensure_topic(topic)  # a set lookup once the topic is known
        timeout_s = self.transport.config.request_timeout_ms / 1000
        send = self._producer.send
        current = messages[0].topic
        try:
            # The partition is picked here as Kafka's default partitioner would (murmur2 of
            # the key, modulo the partition count), which spares kafka-python's partitioner
            # a metadata lookup and a slower murmur2 per message. One future per message is
            # what kafka-python returns; after the flush they are all done, so failures are
            # read off them without a blocking get() each.
            counts = {topic: self._partition_count(topic) for topic in topics}
            futures = [
                send(
                    m.topic,
                    key=m.key,
                    value=m.value,
                    partition=None
                    if m.key is None
                    else (murmur2(m.key) & 0x7FFFFFFF) % counts[m.topic],
                )
                for m in messages
            ]
            self._producer.flush(timeout=timeout_s)
            for message, future in zip(messages, futures, strict=True):
                if not future.is_done or future.failed():
                    current = message.topic
                    future.get(timeout=timeout_s)  # raises the send's error (or times out)
        except KafkaError as error:
            raise KafkaTransportError(f"send to {current!r} failed: {error}") from error

    def _partition_count(self, topic: str) -> int:
        """Partitions of `topic` in the producer's metadata (waits for it the first time)."""
        parts = self._producer.partitions_for(topic)
        if not parts:
            raise KafkaTransportError(f"unknown topic {topic!r}")
        return len(parts)

    def partition_for(self, topic: str, key: bytes) -> int:
        """Partition Kafka's default partitioner picks for `key` (murmur2, positive, modulo)."""
        count = self.transport.partitions_of(topic)
        if not count:
            raise KafkaTransportError(f"unknown topic {topic!r}")
        return (murmur2(key) & 0x7FFFFFFF) % count

    def close(self) -> None:
        self._producer.close(timeout=self.transport.config.request_timeout_ms / 1000)


def wait_for_assignments(
    consumers: Iterable[KafkaConsumerAdapter], timeout_s: float = 30.0
) -> None:
    """Drive several consumers' group joins side by side, one thread each.

    A join only advances inside its consumer's poll(), and kafka-python 3.0 drops a join
    whose response lands between two polls (it sends a fresh JoinGroup), so each consumer
    is polled continuously by its own thread rather than in short alternating slices.
    """
    waiting = list(consumers)
    errors: list[BaseException] = []

    def join(consumer: KafkaConsumerAdapter) -> None:
        try:
            consumer.wait_for_assignment(timeout_s)
        except BaseException as error:  # re-raised in the caller's thread
            errors.append(error)

    threads = [threading.Thread(target=join, args=(c,), daemon=True) for c in waiting]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout_s + 5)
    if errors:
        raise errors[0]


class KafkaConsumerAdapter(Consumer):
    """Group member over subscribed topics; manual commits, seeks survive a rebalance."""

    def __init__(self, transport: KafkaTransport, group: str, topics: list[str]) -> None:
        from kafka import KafkaConsumer

        config = transport.config
        self.transport = transport
        _warn_slow_crc()
        self.group = group
        self.topics = topics
        self._buffer: list[Message] = []
        self._pending_seek: dict[TopicPartition, int] = {}
        self._consumer = KafkaConsumer(
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset=config.auto_offset_reset,
            session_timeout_ms=config.session_timeout_ms,
            heartbeat_interval_ms=config.heartbeat_interval_ms,
            max_poll_interval_ms=config.max_poll_interval_ms,
            fetch_min_bytes=config.fetch_min_bytes,
            fetch_max_wait_ms=config.fetch_max_wait_ms,
            max_partition_fetch_bytes=config.max_partition_fetch_bytes,
            **config.client_kwargs(),
        )
        self._consumer.subscribe(topics=topics, listener=self._listener())

    def _listener(self) -> Any:
        from kafka import ConsumerRebalanceListener

        adapter = self

        class _Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked: Any) -> None:
                gone = {_ours(tp) for tp in revoked}
                adapter._buffer = [
                    m for m in adapter._buffer if TopicPartition(m.topic, m.partition) not in gone
                ]

            def on_partitions_assigned(self, assigned: Any) -> None:
                for ktp in assigned:
                    offset = adapter._pending_seek.pop(_ours(ktp), None)
                    if offset is not None:
                        adapter._consumer.seek(ktp, offset)

        return _Listener()

    def _fetch(self, max_records: int, timeout_s: float) -> list[Message]:
        batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        out: list[Message] = []
        new = tuple.__new__  # a Message per record, without NamedTuple's keyword __new__
        for ktp in sorted(batches, key=lambda t: (t.topic, t.partition)):
            topic, partition = ktp.topic, ktp.partition
            out += [
                new(Message, (topic, partition, r.offset, r.key, r.value, r.timestamp))
                for r in batches[ktp]
            ]
        return out

    def poll(self, max_records: int = 500, timeout_s: float = 1.0) -> list[Message]:
        """Next messages after the current position, ordered per partition."""
        if self._buffer:
            out, self._buffer = self._buffer[:max_records], self._buffer[max_records:]
            return out
        return self._fetch(max_records, timeout_s)

    def wait_for_assignment(self, timeout_s: float = 30.0) -> set[TopicPartition]:
        """Join the group now (records fetched meanwhile are kept for the next poll).

        A first join takes about session_timeout/2 on Tansu and ~3 s on Kafka
        (group.initial.rebalance.delay.ms), so tests call this before producing.
        """
        deadline = time.monotonic() + timeout_s
        while not self._consumer.assignment():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise KafkaTransportError(
                    f"group {self.group!r}: no partitions assigned after {timeout_s}s"
                )
            # long polls: kafka-python 3.0 re-sends a join that completes between polls
            self._buffer += self._fetch(500, min(remaining, 1.0))
        return self.assignment()

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit next-offsets to read (synchronously)."""
        from kafka.errors import KafkaError

        if not offsets:
            return
        try:
            self._consumer.commit({_k(tp): _offset_and_metadata(o) for tp, o in offsets.items()})
        except KafkaError as error:
            raise KafkaTransportError(f"group {self.group!r}: commit failed: {error}") from error

    def seek(self, offsets: dict[TopicPartition, int]) -> None:
        """Move the read position; partitions not (yet) assigned are sought on assignment."""
        assigned = self.assignment()
        for tp, offset in offsets.items():
            self._buffer = [m for m in self._buffer if TopicPartition(m.topic, m.partition) != tp]
            if tp in assigned:
                self._consumer.seek(_k(tp), offset)
            else:
                self._pending_seek[tp] = offset

    def position(self) -> dict[TopicPartition, int]:
        """Next offset this consumer will return, per assigned partition."""
        out = {tp: self._consumer.position(_k(tp)) for tp in self.assignment()}
        for m in self._buffer:  # buffered records are not returned yet
            tp = TopicPartition(m.topic, m.partition)
            out[tp] = min(out.get(tp, m.offset), m.offset)
        return out

    def assignment(self) -> set[TopicPartition]:
        return {_ours(tp) for tp in self._consumer.assignment()}

    def close(self) -> None:
        self._consumer.close(autocommit=False)
