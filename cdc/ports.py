"""Ports of the CDC pipeline: the seams where adapters (embedded log, Kafka, SQLite or
PostgreSQL capture) plug in.

The transport port is shaped after Kafka on purpose — keys, partitions chosen by key hash,
per-partition order, offsets, consumer groups with committed offsets — so that the embedded
log and the Kafka adapter are interchangeable and a sink written against one works on the
other.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple


class Message(NamedTuple):
    """One record on the wire: raw bytes, so a sink can dead-letter what it cannot decode.

    Immutable and read by attribute like the other port types, but a NamedTuple: a consumer
    builds one per record, and a tuple is built several times faster than a frozen dataclass
    (the embedded log's reader makes a million of them for a million-row snapshot).
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None  # None is a tombstone
    timestamp_ms: int


@dataclass(frozen=True)
class OutgoingMessage:
    topic: str
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class TopicPartition:
    topic: str
    partition: int


class Producer(ABC):
    """Publishes messages; `send_batch` returns only once every message is durable."""

    @abstractmethod
    def send_batch(self, messages: Sequence[OutgoingMessage]) -> None:
        """Append all messages (partition = hash(key) % partitions) and wait for acknowledgement."""

    @abstractmethod
    def ensure_topic(self, topic: str, partitions: int | None = None) -> None:
        """Create the topic with the configured partition count when absent."""

    @abstractmethod
    def close(self) -> None: ...


class Consumer(ABC):
    """Reads topics as a member of a consumer group; nothing is committed automatically."""

    @abstractmethod
    def poll(self, max_records: int = 500, timeout_s: float = 1.0) -> list[Message]:
        """Next messages after the current position, in order per partition."""

    @abstractmethod
    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit the *next* offset to read per partition (Kafka's convention)."""

    @abstractmethod
    def seek(self, offsets: dict[TopicPartition, int]) -> None:
        """Move the read position (used when the sink's own stored offsets are ahead)."""

    @abstractmethod
    def assignment(self) -> set[TopicPartition]: ...

    @abstractmethod
    def close(self) -> None: ...


class ConsumerGroupBusy(RuntimeError):
    """Another member of the consumer group already reads these partitions (a transport that
    gives every member all partitions admits one member at a time, as Kafka's group
    assignment gives each partition to one member)."""


class Transport(ABC):
    """Factory for producers and consumers on one event backbone."""

    @abstractmethod
    def producer(self) -> Producer: ...

    @abstractmethod
    def consumer(self, group: str, topics: Iterable[str]) -> Consumer: ...

    @abstractmethod
    def end_offsets(self, topics: Iterable[str]) -> dict[TopicPartition, int]:
        """Next offset to be written per partition (for lag)."""

    @abstractmethod
    def committed(self, group: str, topics: Iterable[str]) -> dict[TopicPartition, int]:
        """Committed offsets of a consumer group (for lag and pruning)."""
