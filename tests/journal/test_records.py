"""``journal.records.decode_batches``: what a remote reader verifies in the records it fetched.

Invariants: the batches come out as they were encoded (messages, metadata, offsets, times), read
from a view without copying the records; a byte changed anywhere in a batch, a torn last batch
or a batch that does not follow the one before is ``JournalCorrupt`` naming the byte where
that batch begins.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from journal import JournalCorrupt
from journal.format import encode_batch
from journal.records import decode_batches

WHERE = Path("peer:1463/fetched/0")


def three_batches() -> tuple[bytes, list[int]]:
    """Three batches at offsets 10, 12 and 13, and where each begins."""
    batches = [
        encode_batch([b"a", b"b"], None, 10, 1_000),
        encode_batch([b"c"], [{b"k": b"v"}], 12, 1_001, 5),
        encode_batch([b"d" * 300, b"e", b""], None, 13, 1_002),
    ]
    starts = [0, len(batches[0]), len(batches[0]) + len(batches[1])]
    return b"".join(batches), starts


def test_batches_come_out_as_encoded_from_a_view() -> None:
    data, _ = three_batches()
    first, second, third = decode_batches(memoryview(data), WHERE)
    assert (first.base, first.end, first.messages, first.metadata) == (10, 12, [b"a", b"b"], None)
    assert (first.timestamp_ms, first.timestamp_us) == (1_000, 1_000_000)
    assert (second.base, second.end, second.metadata) == (12, 13, [{b"k": b"v"}])
    assert second.timestamp_us == 1_001_005
    assert (third.base, third.end, third.messages) == (13, 16, [b"d" * 300, b"e", b""])
    assert decode_batches(b"", WHERE) == []


@given(st.data())
def test_any_byte_changed_is_damage_at_its_batch(data: st.DataObject) -> None:
    records, starts = three_batches()
    i = data.draw(st.integers(0, len(records) - 1))
    damaged = bytearray(records)
    damaged[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(JournalCorrupt) as caught:
        decode_batches(memoryview(bytes(damaged)), WHERE)
    assert caught.value.file == WHERE
    # A damaged length may make the batch look longer or shorter; never is a later one blamed.
    assert caught.value.position <= max(s for s in starts if s <= i)


def test_a_torn_batch_and_a_batch_out_of_order_are_damage() -> None:
    records, starts = three_batches()
    with pytest.raises(JournalCorrupt) as torn:
        decode_batches(records[:-1], WHERE)
    assert torn.value.position == starts[2]
    out_of_order = records[: starts[1]] + encode_batch([b"x"], None, 20, 1_001)
    with pytest.raises(JournalCorrupt) as caught:
        decode_batches(out_of_order, WHERE)
    assert caught.value.position == starts[1] and "where 12 belongs" in caught.value.reason
