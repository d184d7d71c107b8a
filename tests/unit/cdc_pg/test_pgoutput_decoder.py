"""The pgoutput decoder reads byte fixtures laid out as the protocol documentation says."""

from __future__ import annotations

import datetime as dt
import struct
import uuid
from decimal import Decimal

import pytest

from cdc.capture.pgoutput import (
    UNCHANGED_TOAST,
    Begin,
    Column,
    Commit,
    Delete,
    Insert,
    LogicalMessage,
    Oid,
    Origin,
    PgOutputError,
    Relation,
    Truncate,
    TypeInfo,
    Update,
    convert_text,
    decode_message,
    encode_message,
    format_lsn,
    parse_lsn,
    tuple_to_row,
)

# 2024-01-01 00:00:00 UTC in µs since 2000-01-01
TS_2024 = 757_382_400_000_000
WHEN = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def i16(v: int) -> bytes:
    return struct.pack(">h", v)


def i32(v: int) -> bytes:
    return struct.pack(">i", v)


def i64(v: int) -> bytes:
    return struct.pack(">q", v)


def text_col(value: str) -> bytes:
    raw = value.encode()
    return b"t" + i32(len(raw)) + raw


RELATION = (
    b"R" + i32(16384) + b"public\x00" + b"items\x00" + b"f" + i16(3)
    + b"\x01" + b"id\x00" + i32(23) + i32(-1)
    + b"\x00" + b"name\x00" + i32(25) + i32(-1)
    + b"\x00" + b"body\x00" + i32(25) + i32(-1)
)  # fmt: skip


def test_begin_and_commit_carry_lsns_timestamp_and_xid():
    begin = decode_message(b"B" + i64(0x16B3748) + i64(TS_2024) + i32(735))
    assert begin == Begin(final_lsn=0x16B3748, commit_ts=WHEN, xid=735)
    commit = decode_message(b"C" + b"\x00" + i64(0x16B3700) + i64(0x16B3748) + i64(TS_2024))
    assert commit == Commit(flags=0, commit_lsn=0x16B3700, end_lsn=0x16B3748, commit_ts=WHEN)


def test_relation_lists_columns_with_key_flags_and_type_oids():
    rel = decode_message(RELATION)
    assert rel == Relation(
        16384,
        "public",
        "items",
        "f",
        (Column("id", 23, -1, True), Column("name", 25, -1, False), Column("body", 25, -1, False)),
    )
    catalog = decode_message(RELATION.replace(b"public\x00", b"\x00", 1))
    assert catalog.namespace == "" and catalog.schema == "pg_catalog"  # '' means pg_catalog


def test_insert_tuple_distinguishes_null_unchanged_toast_and_text():
    msg = decode_message(b"I" + i32(16384) + b"N" + i16(3) + text_col("7") + b"n" + b"u")
    assert msg == Insert(16384, ("7", None, UNCHANGED_TOAST))
    rel = decode_message(RELATION)
    assert tuple_to_row(rel, msg.new) == {"id": 7, "name": None, "body": UNCHANGED_TOAST}


def test_update_with_key_tuple_old_tuple_or_none():
    new = b"N" + i16(3) + text_col("2") + text_col("b") + b"u"
    plain = decode_message(b"U" + i32(1) + new)
    assert plain == Update(1, None, None, ("2", "b", UNCHANGED_TOAST))
    keyed = decode_message(b"U" + i32(1) + b"K" + i16(3) + text_col("1") + b"n" + b"n" + new)
    assert keyed.old_kind == "K" and keyed.old == ("1", None, None)
    full = decode_message(
        b"U" + i32(1) + b"O" + i16(3) + text_col("1") + text_col("a") + text_col("x") + new
    )
    assert full.old_kind == "O" and full.old == ("1", "a", "x")
    rel = decode_message(RELATION)
    assert tuple_to_row(rel, keyed.old, only_keys=True) == {"id": 1}


def test_delete_truncate_origin_type_and_message():
    assert decode_message(b"D" + i32(9) + b"K" + i16(1) + text_col("4")) == Delete(9, "K", ("4",))
    trunc = decode_message(b"T" + i32(2) + b"\x03" + i32(9) + i32(10))
    assert trunc == Truncate((9, 10), cascade=True, restart_identity=True)
    assert decode_message(b"O" + i64(42) + b"upstream\x00") == Origin(42, "upstream")
    assert decode_message(b"Y" + i32(90001) + b"shop\x00" + b"mood\x00") == TypeInfo(
        90001, "shop", "mood"
    )
    msg = decode_message(b"M" + b"\x01" + i64(77) + b"kit\x00" + i32(2) + b"hi")
    assert msg == LogicalMessage(True, 77, "kit", b"hi")


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"", "empty"),
        (b"Z\x00", "unknown pgoutput message type 'Z'"),
        (b"B" + i64(1), "truncated"),
        (b"I" + i32(1) + b"X", "expected 'N'"),
        (b"I" + i32(1) + b"N" + i16(1) + b"q", "column kind 'q'"),
        (b"I" + i32(1) + b"N" + i16(1) + b"t" + i32(10) + b"abc", "truncated"),
        (b"D" + i32(1) + b"N" + i16(0), "expected 'K' or 'O'"),
        (b"O" + i64(1) + b"no-terminator", "unterminated"),
        (b"B" + i64(1) + i64(2) + i32(3) + b"!", "trailing"),
    ],
)
def test_malformed_messages_raise_a_specific_error(payload, reason):
    with pytest.raises(PgOutputError, match=reason):
        decode_message(payload)


def test_encoder_round_trips_every_message_kind():
    rel = decode_message(RELATION)
    for msg in [
        Begin(5, WHEN, 9),
        Commit(0, 4, 5, WHEN),
        rel,
        Insert(1, ("1", None, UNCHANGED_TOAST, b"\x00bin")),
        Update(1, "O", ("1", "a"), ("1", "b")),
        Update(1, None, None, ("1", "b")),
        Delete(1, "O", ("1", "a")),
        Truncate((1,), False, True),
        Origin(3, "o"),
        TypeInfo(1, "s", "t"),
        LogicalMessage(False, 8, "p", b"c"),
    ]:
        assert decode_message(encode_message(msg)) == msg


def test_lsn_text_form_round_trips():
    assert format_lsn(0x16B3748) == "0/16B3748"
    assert parse_lsn("1/0000000A") == (1 << 32) + 10
    with pytest.raises(ValueError):
        parse_lsn("nope")


@pytest.mark.parametrize(
    "oid, text, expected",
    [
        (Oid.INT2, "-32768", -32768),
        (Oid.INT4, "42", 42),
        (Oid.INT8, "9223372036854775807", 9223372036854775807),
        (Oid.NUMERIC, "12345678901234567890.000000001", Decimal("12345678901234567890.000000001")),
        (Oid.TEXT, "a 'b' \\ c", "a 'b' \\ c"),
        (Oid.VARCHAR, "v", "v"),
        (Oid.BPCHAR, "ab ", "ab "),
        (Oid.BOOL, "t", True),
        (Oid.BOOL, "false", False),
        (Oid.TIMESTAMP, "2024-02-29 13:14:15.123456", dt.datetime(2024, 2, 29, 13, 14, 15, 123456)),
        (
            Oid.TIMESTAMPTZ,
            "2024-02-29 13:14:15+02",
            dt.datetime(2024, 2, 29, 11, 14, 15, tzinfo=dt.UTC),
        ),
        (
            Oid.TIMESTAMPTZ,
            "2024-02-29 13:14:15.5+00",
            dt.datetime(2024, 2, 29, 13, 14, 15, 500000, tzinfo=dt.UTC),
        ),
        (Oid.TIMESTAMP, "infinity", dt.datetime.max),
        (Oid.DATE, "2024-02-29", dt.date(2024, 2, 29)),
        (Oid.DATE, "0044-03-15 BC", "0044-03-15 BC"),  # no Python date: stays text
        (Oid.TIME, "13:14:15.5", dt.time(13, 14, 15, 500000)),
        (
            Oid.UUID,
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        ),
        (Oid.JSON, '{"a": [1, null]}', {"a": [1, None]}),
        (Oid.JSONB, '"s"', "s"),
        (Oid.BYTEA, "\\x00ff10", b"\x00\xff\x10"),
        (Oid.BYTEA, "a\\\\b\\001", b"a\\b\x01"),  # bytea_output = escape
        (Oid.FLOAT4, "1.5", 1.5),
        (Oid.FLOAT8, "-Infinity", float("-inf")),
        (Oid.INTERVAL, "1 day 02:00:00", "1 day 02:00:00"),  # unconverted types stay text
        (Oid.INT4, None, None),
    ],
)
def test_text_values_convert_by_type_oid(oid, text, expected):
    assert convert_text(oid, text) == expected


def test_numeric_nan_and_infinities_stay_decimal():
    assert convert_text(Oid.NUMERIC, "NaN").is_nan()
    assert convert_text(Oid.NUMERIC, "-Infinity") == Decimal("-Infinity")
    assert convert_text(Oid.FLOAT8, "NaN") != convert_text(Oid.FLOAT8, "NaN")  # float NaN


def test_unchanged_toast_marker_passes_through_conversion():
    assert convert_text(Oid.TEXT, UNCHANGED_TOAST) is UNCHANGED_TOAST


def test_tuple_width_must_match_the_relation():
    rel = decode_message(RELATION)
    with pytest.raises(PgOutputError, match="3"):
        tuple_to_row(rel, ("1",))
