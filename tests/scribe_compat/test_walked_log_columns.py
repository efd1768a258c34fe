"""Log calls with fields the IDL does not know: decoded into columns as thriftpy2 decodes them.

Invariant: for any Log call whose entries carry unknown fields (of any type, at any place,
besides or instead of the known ones), ``ServerConnection.decode_general`` gives the same
batch thriftpy2's decoder gives, or refuses it with the same ``BadArguments``.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from thriftpy2.protocol.cybin.cybin import TCyBinaryProtocol
from thriftpy2.transport.memory.cymemory import TCyMemoryBuffer

from scribe_compat import (
    BadArguments,
    Call,
    LogBatch,
    RejectedCall,
    ServerConnection,
    TooManyEntries,
)
from scribe_compat.codec import CodecLimits, Message, message_of_frame
from scribe_compat.idl import METHODS
from scribe_compat.scanner import walked_log_columns


def _i32(n: int) -> bytes:
    return struct.pack(">i", n)


def _string(value: bytes) -> bytes:
    return _i32(len(value)) + value


def _field(t: int, fid: int, value: bytes) -> bytes:
    return struct.pack(">bh", t, fid) + value


# Values of every wire type, as (type, encoded value).
fixed_values = st.sampled_from(
    [
        (2, b"\x01"),
        (3, b"\x7f"),
        (4, struct.pack(">d", 1.5)),
        (6, struct.pack(">h", -2)),
        (8, _i32(1463)),
        (10, struct.pack(">q", 1 << 40)),
    ]
)
string_values = st.binary(max_size=6).map(lambda b: (11, _string(b)))


def _containers(
    inner: st.SearchStrategy[tuple[int, bytes]],
) -> st.SearchStrategy[tuple[int, bytes]]:
    def list_of(t: int, items: list[tuple[int, bytes]], kind: int) -> tuple[int, bytes]:
        same = [v for it, v in items if it == t]
        return kind, bytes([t]) + _i32(len(same)) + b"".join(same)

    def struct_of(fields: list[tuple[int, tuple[int, bytes]]]) -> tuple[int, bytes]:
        return 12, b"".join(_field(t, fid, v) for fid, (t, v) in fields) + b"\x00"

    def map_of(pairs: list[tuple[bytes, tuple[int, bytes]]], vt: int) -> tuple[int, bytes]:
        same = [(k, v) for k, (t, v) in pairs if t == vt]
        body = b"".join(_string(k) + v for k, v in same)
        return 13, bytes([11, vt]) + _i32(len(same)) + body

    type_ids = st.sampled_from([2, 3, 4, 6, 8, 10, 11, 12])
    return st.one_of(
        st.builds(list_of, type_ids, st.lists(inner, max_size=3), st.sampled_from([14, 15])),
        st.builds(struct_of, st.lists(st.tuples(st.integers(1, 50), inner), max_size=3)),
        st.builds(map_of, st.lists(st.tuples(st.binary(max_size=3), inner), max_size=3), type_ids),
    )


any_value = st.recursive(st.one_of(fixed_values, string_values), _containers, max_leaves=6)
metadata_maps = st.dictionaries(st.binary(max_size=4), st.binary(max_size=4), max_size=3).map(
    lambda d: (
        13,
        bytes([11, 11]) + _i32(len(d)) + b"".join(_string(k) + _string(v) for k, v in d.items()),
    )
)
# Unknown ids (and, rarely, known ids in another type), with values of any type.
other_fields = st.tuples(st.integers(-5, 60), any_value)


@st.composite
def entry_fields(draw: st.DrawFn) -> list[tuple[int, tuple[int, bytes]]]:
    """An entry's fields in any order: category and message nearly always, metadata often."""
    fields = []
    if draw(st.integers(0, 19)):
        fields.append((1, draw(string_values)))
    if draw(st.integers(0, 19)):
        fields.append((2, draw(string_values)))
    if draw(st.booleans()):
        fields.append((3, draw(metadata_maps)))
    fields += draw(st.lists(other_fields, max_size=3))
    return draw(st.permutations(fields))


def _entry(fields: list[tuple[int, tuple[int, bytes]]]) -> bytes:
    return b"".join(_field(t, fid, v) for fid, (t, v) in fields) + b"\x00"


@st.composite
def log_calls(draw: st.DrawFn) -> bytes:
    entries = draw(st.lists(entry_fields(), max_size=6))
    before = draw(st.lists(st.tuples(st.integers(2, 40), any_value), max_size=2))
    after = draw(st.lists(st.tuples(st.integers(2, 40), any_value), max_size=2))
    body = b"".join(_field(t, fid, v) for fid, (t, v) in before)
    body += _field(15, 1, b"\x0c" + _i32(len(entries)) + b"".join(map(_entry, entries)))
    body += b"".join(_field(t, fid, v) for fid, (t, v) in after) + b"\x00"
    payload = _i32(3) + b"Log" + b"\x01" + _i32(1) + body
    return payload


def thriftpy2_batch(message: Message) -> LogBatch | None:
    """What the general decoder made of a Log call before it had its own: None if refused."""
    trans = TCyMemoryBuffer(message.payload)
    trans.read(message.header.body)
    args = METHODS["Log"].args()
    TCyBinaryProtocol(trans, strict_read=False, decode_response=False).read_struct(args)
    entries = args.messages or []
    if any(e.category is None or e.message is None for e in entries):
        return None
    return LogBatch.from_entries(entries)


@given(log_calls())
def test_unknown_fields_are_skipped_as_thriftpy2_skips_them(payload: bytes) -> None:
    limits = CodecLimits()
    message = message_of_frame(payload, limits.scan_limits())
    event = ServerConnection(limits).decode_general(message)
    expected = thriftpy2_batch(message)
    if expected is None:
        assert isinstance(event, RejectedCall) and isinstance(event.error, BadArguments)
    else:
        assert isinstance(event, Call), event
        assert event.log_batch == expected


def test_a_call_with_unknown_fields_takes_the_column_decoder() -> None:
    entry = _entry([(1, (11, _string(b"c"))), (9, (10, bytes(8))), (2, (11, _string(b"m")))])
    payload = _i32(3) + b"Log" + b"\x01" + _i32(1)
    payload += _field(15, 1, b"\x0c" + _i32(2) + entry * 2) + b"\x00"
    message = message_of_frame(payload, CodecLimits().scan_limits())
    call = ServerConnection().decode_general(message)
    assert isinstance(call, Call)
    assert call.args is None  # no thriftpy2 object was made
    assert call.log_batch == LogBatch([b"c", b"c"], [b"m", b"m"], None)


def test_more_entries_than_allowed_are_refused_before_any_is_read() -> None:
    body = _field(15, 1, b"\x0c" + _i32(5)) + b"\x00"
    with pytest.raises(TooManyEntries):
        walked_log_columns(body, 0, 4)
