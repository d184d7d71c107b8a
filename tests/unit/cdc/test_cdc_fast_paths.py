"""The throughput paths agree with the reference ones they replace (no timing assertions).

Compiled mapping vs ``TableMapping.forward``; the sink's compiled ``prepare`` vs forward +
coerce + SQLAlchemy's own bind processors; the fast event decoder vs ``json.loads``; and the
snapshot values SQLite builds vs ``encode_value_raw``.
"""

from __future__ import annotations

import base64
import gc
import json
import re
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdc.events import (
    EventDecodeError,
    _decode_doc,
    build_event,
    decode_envelope,
    decode_envelope_plain,
    encode_value_raw,
)
from cdc.mapping import TRANSFORMS, MappingError
from cdc.ports import Message, TopicPartition
from cdc.target import TargetTable as _TargetTable
from cdc.toast import UNAVAILABLE_VALUE
from cdc.toast import may_hold_placeholder as _may_hold_placeholder
from tests.unit.cdc.synthetic import Pipeline, make_target, write_mapping

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["2024-01-02 03:04:05.000000", "2024-01-02T03:04:05Z", "2024-02-30", " 1 "]),
)
PRODUCT_COLUMNS = ["id", "sku", "name", "price_cents", "currency", "active", "created_at"]
ROWS = st.dictionaries(st.sampled_from([*PRODUCT_COLUMNS, "updated_at", "extra"]), VALUES)


def _outcome(fn, *args):
    try:
        return "ok", fn(*args)
    except MappingError as exc:
        return "error", str(exc)


def test_compiled_forward_matches_forward(tmp_path: Path) -> None:
    mapping = write_mapping(tmp_path / "mapping.toml")
    compiled = [
        (tm, tm.compile_forward(), tm.compile_target_key(), tm.compile_matches())
        for tm in mapping.tables
    ]

    @settings(max_examples=150, deadline=None)
    @given(row=ROWS)
    def check(row: dict) -> None:
        for tm, forward, target_key, matches in compiled:
            ref = _outcome(lambda r, tm=tm: tuple(tm.forward(r).values()), row)
            assert _outcome(forward, row) == ref
            assert _outcome(target_key, row) == _outcome(tm.target_key, row)
            assert (matches(row) if matches else True) == tm.matches(row)

    check()


def _reference_prepare(engine, target: _TargetTable):
    """prepare() the reference way: forward, coerce, SQLAlchemy's own bind processors."""
    tm = target.mapping
    binds = [
        target.table.c[n].type.dialect_impl(engine.dialect).bind_processor(engine.dialect)
        for n in target.param_names
    ]

    def reference(r: dict) -> tuple:
        coerced = target.coerce(tm.forward(r))
        params = []
        for name, bind in zip(target.param_names, binds, strict=True):
            value = coerced[name]
            params.append(bind(value) if bind is not None and value is not None else value)
        return tuple(coerced[k] for k in tm.key), tuple(params)

    return reference


def test_sink_prepare_matches_forward_coerce_and_sqlalchemy_binds(tmp_path: Path) -> None:
    engine = make_target(f"sqlite:///{tmp_path / 'tgt.db'}")
    tm = write_mapping(tmp_path / "mapping.toml").for_source("products")
    target = _TargetTable(engine, tm)
    assert target.driver_sql is not None  # SQLite takes the driver path
    reference = _reference_prepare(engine, target)

    @settings(max_examples=150, deadline=None)
    @given(row=ROWS)
    def check(row: dict) -> None:
        assert _outcome(target.prepare, row) == _outcome(reference, row)

    try:
        check()
    finally:
        engine.dispose()


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


def _decoded_or_error(decode, *args) -> str:
    try:
        return repr(decode(*args))
    except EventDecodeError as exc:
        return f"EventDecodeError: {exc}"


@settings(max_examples=300, deadline=None)
@given(after=st.dictionaries(st.text(max_size=6), JSON, max_size=6), ts=JSON, wrap=st.booleans())
def test_fast_event_decoding_equals_json_loads(after: dict, ts: object, wrap: bool) -> None:
    # Floats, Infinity, integers beyond 64 bits, nested values: whatever reader took the
    # text, the envelope is the one json.loads's document gives.
    doc = {"before": None, "after": after, "source": {"table": "t", "ts_ms": ts}, "op": "c"}
    if wrap:
        doc = {"schema": {"type": "struct"}, "payload": doc}
    raw = json.dumps(doc).encode()
    reference = _decoded_or_error(_decode_doc, json.loads(raw), "")
    assert _decoded_or_error(decode_envelope, raw) == reference
    # The sink's mode reads the source's ts_ms exactly too (and this source holds no more).
    assert _decoded_or_error(decode_envelope, raw, "", False) == reference


def test_fast_event_decoding_keeps_json_errors() -> None:
    for raw in (b"{not json", b'{"op":"c"} x', b"\xff\xfe"):
        try:
            json.loads(raw.decode())
        except (ValueError, UnicodeDecodeError) as exc:
            expected = f"{exc.__class__.__name__}: {exc}"
        try:
            decode_envelope(raw)
        except ValueError as exc:
            assert expected.split(": ", 1)[1] in str(exc)
        else:
            raise AssertionError("decoded garbage")


def test_snapshot_values_built_by_sqlite_equal_encode_value_raw(tmp_path: Path) -> None:
    from cdc.capture.sqlite import enable_capture, request_snapshot
    from tests.unit.cdc.synthetic import insert_product

    pipe = Pipeline(tmp_path / "p", partitions=1, chunk=3)
    try:
        for pid in range(1, 8):
            insert_product(
                pipe.source, pid, name=f'Bänk "{pid}"\n', sku=None if pid == 4 else f"S{pid}"
            )
        enable_capture(pipe.source, ["products"])
        request_snapshot(pipe.source, ["products"])
        while pipe.capture.run_once():
            pass
        consumer = pipe.log.consumer("check", [pipe.topics[0]])
        msgs = consumer.poll(100, 1.0)
        consumer.close()
        assert len(msgs) == 7
        for m in msgs:
            doc = json.loads(m.value)
            compact = {"separators": (",", ":"), "ensure_ascii": False}
            assert m.value == encode_value_raw(
                "r",
                None,
                json.dumps(doc["after"], **compact),
                json.dumps(doc["source"], **compact),
                doc["ts_ms"],
            )
        flags = [json.loads(m.value)["source"]["snapshot"] for m in msgs]
        assert flags == ["true"] * 6 + ["last"]
    finally:
        pipe.close()


def _envelope_or_error(raw: bytes, exact_source: bool) -> object:
    try:
        return repr(decode_envelope(raw, "mono.main.topic_table", exact_source))
    except ValueError as exc:
        return f"{exc.__class__.__name__}: {exc}"


@settings(max_examples=300, deadline=None)
@given(
    op=st.sampled_from(["c", "u", "d", "r", "t", "x", None]),
    before=st.none() | ROWS,
    after=st.none() | ROWS,
    table=st.sampled_from(["products", "", None]),
    ts=JSON,
    source_ts=JSON,
    exact_source=st.booleans(),
)
def test_fast_envelope_equals_general_path(
    op: object,
    before: object,
    after: object,
    table: object,
    ts: object,
    source_ts: object,
    exact_source: bool,
) -> None:
    # {schema: null, payload} skips the fast path yet means the same event: the reference.
    doc = {"before": before, "after": after, "op": op, "ts_ms": ts}
    # Beyond 64 bits: read exactly only with exact_source (the wrapper is always exact).
    seq = 2**70 if exact_source else 2
    doc["source"] = {"table": table, "ts_ms": source_ts, "txId": None, "seq": seq}
    raw = json.dumps(doc).encode()
    wrapped = json.dumps({"schema": None, "payload": doc}).encode()
    assert _envelope_or_error(raw, exact_source) == _envelope_or_error(wrapped, exact_source)


def _slug_reference(values: tuple) -> str | None:
    words: list[str] = []
    for value in values:
        if value is not None:
            text = unicodedata.normalize("NFKD", str(value)).encode("ascii", "ignore").decode()
            words.extend(re.findall(r"[a-z0-9]+", text.lower()))
    return "-".join(words) if words else None


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.none() | st.integers() | st.text(max_size=10), min_size=1, max_size=3))
def test_slug_equals_regex_reference(values: list) -> None:
    assert TRANSFORMS["slug"].fn(tuple(values), {}) == _slug_reference(tuple(values))


def test_placeholder_prefilter_never_misses_a_placeholder() -> None:
    placeholder = UNAVAILABLE_VALUE
    event = {"op": "u", "before": None, "source": {"table": "t"}}
    plain = json.dumps({**event, "after": {"id": 1, "d": placeholder}})
    escaped = plain.replace('"__debezium', '"\\u005f_debezium')
    b64 = base64.b64encode(placeholder.encode()).decode()
    after_schema = {"field": "after", "type": "struct", "fields": [{"field": "d", "type": "bytes"}]}
    wrapped = json.dumps(
        {
            "schema": {"type": "struct", "fields": [after_schema]},
            "payload": {**event, "after": {"id": 1, "d": b64}},
        }
    )
    for raw in (plain, escaped, wrapped):
        env = decode_envelope(raw.encode())
        assert env is not None and env[3] is not None
        assert {placeholder, placeholder.encode()} & set(env[3].values())
        assert _may_hold_placeholder(raw.encode())
    ordinary = json.dumps({**event, "after": {"id": 1, "d": "x"}}).encode()
    assert not _may_hold_placeholder(ordinary)


def test_prepare_scaled_amounts_match_the_reference_at_the_edges(tmp_path: Path) -> None:
    # price_cents → Decimal(v).scaleb(-2) → float is compiled to v / 100 for integers that
    # Decimal scales exactly; the edges of that range and beyond must agree as well.
    engine = make_target(f"sqlite:///{tmp_path / 'tgt.db'}")
    tm = write_mapping(tmp_path / "mapping.toml").for_source("products")
    target = _TargetTable(engine, tm)
    # the values below go through the compiled `v / 100`, not only the general lines
    assert target._scaled_to_float() == {target.names.index("price_amount"): ("price_cents", 100)}
    reference = _reference_prepare(engine, target)

    row = {"id": 1, "sku": "S", "name": "N", "currency": "EUR", "active": 1, "created_at": None}
    edges = (0, 1, -1, 7, 1013, 2**53 + 1, 2**63 - 1, -(2**63) + 1, 2**63, -(2**63), 10**30 + 7)
    try:
        for value in (*edges, True, "1013", 10.5, None, "x"):
            for active in (1, 0, True, "no"):
                r = {**row, "price_cents": value, "active": active}
                assert _outcome(target.prepare, r) == _outcome(reference, r), (value, active)
    finally:
        engine.dispose()


def test_decode_envelope_plain_tells_which_events_took_the_fast_path() -> None:
    event = {"before": None, "after": {"id": 1, "n": "x"}, "source": {"table": "t"}, "op": "c"}
    env, plain = decode_envelope_plain(json.dumps(event).encode())
    assert plain and env is not None and env[3] == {"id": 1, "n": "x"}
    wrapped = json.dumps({"schema": None, "payload": event}).encode()
    assert decode_envelope_plain(wrapped) == (env, False)
    decimal = {**event, "after": {"id": 1, "n": {"scale": 2, "value": "A/E="}}}
    assert decode_envelope_plain(json.dumps(decimal).encode())[1] is False
    assert decode_envelope_plain(None) == (None, False)


def test_sink_stores_the_highest_offset_per_partition_whatever_the_message_order(
    tmp_path: Path,
) -> None:
    pipe = Pipeline(tmp_path)
    try:
        sink = pipe.sink
        sink.start()
        topic = "mono.main.products"

        def msg(partition: int, offset: int, pid: int) -> Message:
            key, value = build_event(
                "c",
                None,
                {
                    "id": pid,
                    "sku": f"S{pid}",
                    "name": "N",
                    "price_cents": 1,
                    "currency": "EUR",
                    "active": 1,
                    "created_at": None,
                },
                key_columns=["id"],
                source={"table": "products", "ts_ms": offset},
            )
            return Message(topic, partition, offset, key, value, 0)

        # partitions interleaved and out of order within one batch
        msgs = [msg(0, 5, 1), msg(1, 9, 2), msg(0, 7, 3), msg(1, 3, 4), msg(0, 6, 5)]
        _result, offsets = sink.apply(msgs)
        expected = {TopicPartition(topic, 0): 8, TopicPartition(topic, 1): 10}
        assert offsets == expected
        assert sink.stored_offsets() == expected
        assert len(pipe.target_rows()) == 5
    finally:
        pipe.close()


def test_sink_batches_leave_the_garbage_collector_as_they_found_it(tmp_path: Path) -> None:
    pipe = Pipeline(tmp_path)
    try:
        pipe.sink.run_once()
        assert gc.isenabled()
        gc.disable()
        try:
            pipe.sink.run_once()
            assert not gc.isenabled()  # a caller's choice is kept
        finally:
            gc.enable()
    finally:
        pipe.close()


def test_a_non_finite_ts_ms_is_no_timestamp_rather_than_a_crash() -> None:
    for text in (b"Infinity", b"-Infinity", b"NaN"):
        raw = b'{"before":null,"after":{"id":1},"source":{"table":"t"},"op":"c","ts_ms":' + text
        env = decode_envelope(raw + b"}")
        assert env is not None and env[5] is None


def test_a_non_object_source_is_dead_lettered_not_a_crash(tmp_path: Path) -> None:
    raws = [
        b'{"before":null,"after":{"id":1},"op":"c","source":' + source + b"}"
        for source in (b'"x"', b"[1]", b"7")
    ]
    for raw in raws:
        for exact_source in (True, False):  # the sink decodes with exact_source=False
            with pytest.raises(EventDecodeError, match="'source' must be an object"):
                decode_envelope(raw, "mono.main.products", exact_source)
    pipe = Pipeline(tmp_path)
    try:
        msgs = [Message("mono.main.products", 0, i, None, raw, 0) for i, raw in enumerate(raws)]
        result, offsets = pipe.sink.apply(msgs)
        assert result.dead == len(raws)
        assert offsets == {TopicPartition("mono.main.products", 0): len(raws)}
    finally:
        pipe.close()


def test_integers_at_the_64_bit_edges_decode_exactly_beside_a_float() -> None:
    # A float keeps the event off the fast path, so the document orjson read is used as it
    # is unless the text may hold an integer beyond 64 bits (orjson reads those as floats).
    edges = (2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**19, -(10**18))
    for n in edges:
        doc = {"before": None, "after": {"id": n, "f": 0.5}, "source": {"table": "t"}, "op": "c"}
        for raw in (json.dumps(doc).encode(), json.dumps(doc, indent=1).encode()):
            env = decode_envelope(raw)
            assert env is not None and type(env[3]["id"]) is int and env[3]["id"] == n


def test_a_value_nested_too_deep_to_read_is_dead_lettered_not_a_crash(tmp_path: Path) -> None:
    raw = b'{"op":"c","source":{"table":"products"},"after":{"id":1,"x":' + b"[" * 5000
    raw += b"]" * 5000 + b"}}"
    with pytest.raises(EventDecodeError, match="value is not JSON: maximum recursion depth"):
        decode_envelope(raw)
    pipe = Pipeline(tmp_path)
    try:
        result, _ = pipe.sink.apply([Message("mono.main.products", 0, 0, None, raw, 0)])
        assert result.dead == 1
    finally:
        pipe.close()
