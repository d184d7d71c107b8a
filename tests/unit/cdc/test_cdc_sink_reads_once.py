"""The sink reads each event's bytes once, whatever the event's shape or fate.

Counted at the seam the sink decodes through (``Sink.json_readers``): the fast reader
(orjson) takes every event it can; the exact reader (the standard library's rules) reads
only text the fast one refuses or may misread (NaN, not JSON, integers beyond 64 bits).
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cdc.events import READERS, JsonReaders
from cdc.ports import Message
from cdc.sink import BatchResult, list_dead_letters
from cdc.toast import UNAVAILABLE_VALUE
from tests.unit.cdc.synthetic import Pipeline

PRODUCTS, CUSTOMERS = "mono.main.products", "mono.main.customers"


class CountingReaders:
    """Wraps JSON readers and counts, per event value, the calls each one gets."""

    def __init__(self, readers: JsonReaders) -> None:
        self.fast: Counter[bytes] = Counter()
        self.exact: Counter[bytes] = Counter()
        fast = None if readers.fast is None else self._counted(readers.fast, self.fast)
        self.readers = JsonReaders(fast, self._counted(readers.exact, self.exact))

    @staticmethod
    def _counted(loads: Callable[[Any], Any], calls: Counter[bytes]) -> Callable[[Any], Any]:
        def counted(value: Any) -> Any:
            calls[value] += 1
            return loads(value)

        return counted

    def reads(self, value: bytes) -> tuple[int, int]:
        """(fast reader calls, exact reader calls) for one event value."""
        return self.fast[value], self.exact[value]


def _product(pid: int, **kw: Any) -> dict[str, Any]:
    row = {"id": pid, "sku": f"S{pid}", "name": f"P {pid}", "price_cents": 100}
    return {**row, "currency": "EUR", "active": 1, "created_at": None, **kw}


def _event(op: str, table: str, row: dict | None, ts_ms: Any = 1) -> bytes:
    payload = {
        "before": row if op == "d" else None,
        "after": None if op == "d" else row,
        "source": {"connector": "sqlite", "schema": "main", "table": table, "seq": 1},
        "op": op,
        "ts_ms": ts_ms,
    }
    return json.dumps(payload).encode()


def _wrapped_bytes_name(row: dict) -> bytes:
    """Debezium's {schema, payload} form, `name` a bytes column (base64 on the wire)."""
    fields = [{"field": "id", "type": "int32"}, {"field": "name", "type": "bytes"}]
    image = {"type": "struct", "fields": fields, "optional": True}
    schema = {
        "type": "struct",
        "fields": [{**image, "field": "before"}, {**image, "field": "after"}],
    }
    payload = json.loads(_event("u", "products", row))
    return json.dumps({"schema": schema, "payload": payload}).encode()


@pytest.fixture
def pipe(tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(tmp_path / "p")
    yield p
    p.close()


def _apply(pipe: Pipeline, counting: CountingReaders, values: list[tuple[str, Any]]) -> BatchResult:
    pipe.sink.json_readers = counting.readers
    msgs = [Message(topic, 0, i, None, v, 0) for i, (topic, v) in enumerate(values)]
    return pipe.sink.apply(msgs)[0]


def _titles(pipe: Pipeline) -> list[tuple[int, str]]:
    return [(row[0], row[2]) for row in pipe.target_rows()]


def test_every_ordinary_event_is_read_once_by_the_fast_reader(pipe: Pipeline) -> None:
    toast_b64 = base64.b64encode(UNAVAILABLE_VALUE.encode()).decode()
    ordinary = [
        (PRODUCTS, _event("t", "products", None)),  # truncate: no row images
        (PRODUCTS, _event("c", "products", _product(1))),  # plain: the fast path
        (PRODUCTS, _event("c", "products", _product(2, updated_at=1.5))),  # a float
        (PRODUCTS, _event("c", "products", _product(3, updated_at=["n", 1]))),  # nested
        (PRODUCTS, _event("u", "products", _product(1, sku="S1b", name=UNAVAILABLE_VALUE))),
        (PRODUCTS, _wrapped_bytes_name({**_product(2, sku="S2b"), "name": toast_b64})),
        (PRODUCTS, _event("d", "products", _product(3))),
        (PRODUCTS, b"null"),  # a tombstone spelled out
        (PRODUCTS, b'{"before":null,"after":{"id":4},"op":"c","source":"x"}'),  # dead
        (CUSTOMERS, _event("c", "customers", {"id": 1, "email": "a@x", "nick": "a"})),  # strict
        (PRODUCTS, _event("c", "products", _product(5), ts_ms=2.5)),
    ]
    counting = CountingReaders(READERS)
    result = _apply(pipe, counting, [*ordinary, (PRODUCTS, None)])  # a real tombstone

    assert [counting.reads(v) for _, v in ordinary] == [(1, 0)] * len(ordinary)
    assert (result.applied, result.deleted, result.dead) == (3, 1, 2)  # collapsed per key
    assert _titles(pipe) == [(1, "P 1"), (2, "P 2"), (5, "P 5")]  # placeholders kept names
    assert [row[1] for row in pipe.target_rows()] == ["S1b", "S2b", "S5"]
    reasons = sorted(d.reason for d in list_dead_letters(pipe.target, "g"))
    assert reasons[0].startswith("mapping failed: table 'customers' is strict")
    assert reasons[1] == "undecodable event: 'source' must be an object"


def test_text_the_fast_reader_refuses_or_may_misread_is_read_exactly_once_more(
    pipe: Pipeline,
) -> None:
    big = 2**70  # orjson would read it as the float 1.1805916207174113e+21
    tricky = [
        (PRODUCTS, _event("c", "products", _product(1)).replace(b'"ts_ms": 1', b'"ts_ms": NaN')),
        (PRODUCTS, _event("c", "products", _product(2, name=big))),
        (PRODUCTS, b"{not json"),
    ]
    counting = CountingReaders(READERS)
    result = _apply(pipe, counting, tricky)

    assert [counting.reads(v) for _, v in tricky] == [(1, 1)] * len(tricky)
    assert (result.applied, result.dead) == (2, 1)
    assert _titles(pipe) == [(1, "P 1"), (2, str(big))]
    [letter] = list_dead_letters(pipe.target, "g")
    assert letter.reason.startswith("undecodable event: value is not JSON: Expecting")


def test_without_a_fast_reader_the_exact_reader_reads_each_event_once(pipe: Pipeline) -> None:
    values = [
        (PRODUCTS, _event("c", "products", _product(1))),
        (PRODUCTS, _event("c", "products", _product(2, name=2**70, updated_at=0.5))),
        (PRODUCTS, b"{not json"),
    ]
    counting = CountingReaders(JsonReaders(None, READERS.exact))
    result = _apply(pipe, counting, values)

    assert [counting.reads(v) for _, v in values] == [(0, 1)] * len(values)
    assert (result.applied, result.dead) == (2, 1)
