"""The on-disk format: sizes, round trips, and rejection of anything else."""

from __future__ import annotations

import contextlib
import struct
import uuid
import zlib
from pathlib import Path

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from journal import JournalConfig, JournalLocked, PartitionId, open_journal, repair, verify
from journal.format import (
    FLAG_METADATA,
    FORMAT_VERSION,
    HEADER,
    HEADER_SIZE,
    HWM_SIZE,
    INDEX_ENTRY_SIZE,
    JOURNAL_ID_SIZE,
    NO_BATCH,
    PACK_SLICE_ENTRIES,
    BatchHeader,
    FormatError,
    HighWaterMark,
    IndexEntry,
    batch_times,
    check_batch,
    decode_hwm,
    decode_index,
    decode_journal_id,
    decode_payload,
    encode_batch,
    encode_index_entry,
    encode_journal_id,
    encode_payload,
    parse_header,
    parse_segment_name,
    segment_name,
)

MAX = 1 << 20


def parse(data: bytes) -> tuple[BatchHeader, list[bytes], list[dict[bytes, bytes] | None] | None]:
    header = parse_header(data[:HEADER_SIZE], len(data), MAX)
    payload = data[HEADER_SIZE : header.size]
    check_batch(header, data[:HEADER_SIZE], payload)
    messages, metadata = decode_payload(header, payload)
    return header, messages, metadata


def test_sizes() -> None:
    assert (HEADER_SIZE, INDEX_ENTRY_SIZE, HWM_SIZE) == (40, 28, 68)


@given(
    st.lists(st.binary(max_size=300), min_size=1, max_size=20),
    st.integers(0, 1 << 62),
    st.integers(0, 1 << 50),
    st.booleans(),
)
def test_batch_round_trip(messages: list[bytes], base: int, ts: int, with_meta: bool) -> None:
    metadata = [({b"k": m[:3]} if i % 2 else None) for i, m in enumerate(messages)]
    data = encode_batch(messages, metadata if with_meta else None, base, ts)
    header, got, got_meta = parse(data)
    assert header.size == len(data)
    assert (header.base_offset, header.count, header.first_timestamp_ms) == (
        base,
        len(messages),
        ts,
    )
    assert got == messages
    assert got_meta == (metadata if with_meta else None)


@given(st.binary(min_size=HEADER_SIZE, max_size=200))
def test_random_bytes_are_rejected_cleanly(data: bytes) -> None:
    with contextlib.suppress(FormatError):
        parse(data)


@given(st.integers(0, 200), st.integers(0, 7))
def test_any_flipped_bit_is_detected(position: int, bit: int) -> None:
    data = bytearray(encode_batch([b"hello", b"world" * 10], None, 42, 1000))
    data[position % len(data)] ^= 1 << bit
    with pytest.raises(FormatError):
        parse(bytes(data))


def test_every_truncation_is_reported_as_truncated() -> None:
    data = encode_batch([b"hello", b"world"], None, 0, 1000)
    for cut in range(len(data)):
        with pytest.raises(FormatError) as info:
            parse(data[:cut])
        assert info.value.truncated


def test_unknown_version_is_named() -> None:
    import struct
    import zlib

    data = bytearray(encode_batch([b"x"], None, 0, 0))
    data[8] = 9
    struct.pack_into("<I", data, 4, zlib.crc32(bytes(data[8:])))
    with pytest.raises(FormatError, match="unknown format version 9") as info:
        parse(bytes(data))
    assert info.value.version == 9


def test_implausible_lengths_are_rejected() -> None:
    header = HEADER.pack(10, 0, 1, 0, 0, 0, 1, 0, 0)
    with pytest.raises(FormatError, match="implausible"):
        parse_header(header, 1000, MAX)
    header = HEADER.pack(MAX + 100, 0, 1, 0, 0, 0, 1, 0, 0)
    with pytest.raises(FormatError, match="implausible"):
        parse_header(header, 1 << 40, MAX)


def test_index_prefix_survives_damage() -> None:
    entries = [IndexEntry(10 * i, 100 * i, i) for i in range(1, 6)]
    data = b"".join(encode_index_entry(e.offset, e.position, e.max_timestamp_ms) for e in entries)
    assert decode_index(data, 0, 1000) == (entries, False)
    damaged = bytearray(data)
    damaged[3 * INDEX_ENTRY_SIZE + 5] ^= 1
    assert decode_index(bytes(damaged), 0, 1000) == (entries[:3], True)
    assert decode_index(data + b"\0", 0, 1000) == (entries, True)
    assert decode_index(data, 0, 300) == (entries[:2], True)  # beyond the log


def test_hwm_round_trip_and_damage() -> None:
    hwm = HighWaterMark(10, 5, 4, 200, 10, 150, 5, clean=True)
    assert decode_hwm(hwm.encode()) == hwm
    empty = HighWaterMark(0, -1, 0, 0, 0, NO_BATCH, -1)
    assert decode_hwm(empty.encode()) == empty
    data = bytearray(hwm.encode())
    for i in range(len(data)):
        data[i] ^= 0x10
        with pytest.raises(FormatError):
            decode_hwm(bytes(data))
        data[i] ^= 0x10
    with pytest.raises(FormatError):
        decode_hwm(hwm.encode()[:-1])


def test_segment_names() -> None:
    assert segment_name(42) == "00000000000000000042.log"
    assert parse_segment_name(segment_name(42)) == 42
    for name in ("42.log", "00000000000000000042.index", "00000000000000000042.log.torn-1",
                 "0000000000000000004x.log", "hwm", "\uff100000000000000000042.log"):  # fmt: skip
        assert parse_segment_name(name) is None


async def test_the_journal_directory_is_locked(tmp_path: Path) -> None:
    async with open_journal(tmp_path, JournalConfig()) as journal:
        await journal.append(b"c", 0, [b"x"])
        with pytest.raises(JournalLocked):
            async with open_journal(tmp_path, JournalConfig()):
                pass
        with pytest.raises(JournalLocked):
            repair(tmp_path, PartitionId(b"c", 0))
        assert verify(tmp_path) == []  # read-only tools work beside the writer
    assert repair(tmp_path, PartitionId(b"c", 0)).bytes_removed == 0


async def test_verify_reports_index_damage_as_not_fatal(tmp_path: Path) -> None:
    config = JournalConfig(segment_bytes=200, index_interval_bytes=1)
    async with open_journal(tmp_path, config) as journal:
        for i in range(10):
            await journal.append(b"c", 0, [b"message %d" % i])
    index = sorted((tmp_path / "c" / "0").glob("*.index"))[0]
    index.write_bytes(b"garbage" * 9)
    problems = verify(tmp_path, PartitionId(b"c", 0), config=config)
    assert [(p.file, p.fatal) for p in problems] == [(index, False)]
    seen = []
    verify(tmp_path, progress=lambda pid, path, size: seen.append(path.name))
    assert len(seen) == len(list((tmp_path / "c" / "0").glob("*.log")))
    result = repair(tmp_path, PartitionId(b"c", 0), config)
    assert result.indexes_rebuilt >= 1 and result.cut_file is None
    assert verify(tmp_path, config=config) == []


def raw_batch(
    version: int, first_us: int, count: int, first_ts: int, max_ts: int, base: int = 0
) -> bytes:
    """A batch built field by field (the crc matches), whatever the fields say."""
    payload, flags = encode_payload([b"m%d" % i for i in range(count)], None)
    rest = HEADER.pack(0, 0, version, flags, first_us, base, count, first_ts, max_ts)[8:]
    crc = zlib.crc32(payload, zlib.crc32(rest))
    return struct.pack("<II", len(rest) + 4 + len(payload), crc) + rest + payload


@given(st.integers(1, 3000), st.integers(0, 999), st.integers(0, 1 << 50), st.integers(0, 1 << 62))
def test_version_2_message_times(count: int, first_us: int, ts: int, base: int) -> None:
    header, _, _ = parse(encode_batch([b"m"] * count, None, base, ts, first_us))
    assert header.version == FORMAT_VERSION == 2
    assert (header.first_timestamp_ms, header.first_us) == (ts, first_us)
    assert header.first_timestamp_us == ts * 1000 + first_us
    assert header.last_timestamp_us == ts * 1000 + first_us + count - 1
    assert header.max_timestamp_ms == header.last_timestamp_us // 1000 == header.last_timestamp_ms
    assert batch_times(header.first_timestamp_us, count) == (ts, first_us, header.max_timestamp_ms)


def test_first_us_is_bytes_10_to_12() -> None:
    data = encode_batch([b"x"], None, 7, 1000, 999)
    assert data[10:12] == (999).to_bytes(2, "little")


@pytest.mark.parametrize("first_us", [1000, 1001, 0xFFFF])
def test_version_2_first_us_of_1000_or_more_is_refused(first_us: int) -> None:
    with pytest.raises(FormatError, match="first_us") as info:
        parse(raw_batch(2, first_us, 1, 1000, 1002))
    assert info.value.version is None  # damage, not a newer format


def test_version_2_max_ts_must_cover_the_last_message() -> None:
    assert parse(raw_batch(2, 998, 3, 1000, 1001))[0].last_timestamp_us == 1_001_000
    with pytest.raises(FormatError, match="last message"):
        parse(raw_batch(2, 998, 3, 1000, 1000))  # its last message is in ms 1001


def test_version_1_batch_reads_with_first_us_0() -> None:
    header, messages, _ = parse(raw_batch(1, 0, 3, 5000, 5000, base=9))
    assert (header.version, header.first_us, header.base_offset) == (1, 0, 9)
    assert messages == [b"m0", b"m1", b"m2"]
    assert header.first_timestamp_us == 5_000_000
    assert header.last_timestamp_ms == 5000
    # a version-1 batch stamped all its messages with one ms; more than 1000 spill past it
    spill = parse(raw_batch(1, 0, 2500, 5000, 5000))[0]
    assert (spill.max_timestamp_ms, spill.last_timestamp_ms) == (5000, 5002)


def test_version_1_reserved_bytes_must_still_be_zero() -> None:
    with pytest.raises(FormatError, match="reserved bytes are not zero"):
        parse(raw_batch(1, 5, 1, 5000, 5000))


def test_journal_id_round_trip_and_damage() -> None:
    journal_id = uuid.uuid4()
    data = encode_journal_id(journal_id)
    assert data == f"{journal_id}\n".encode() and len(data) == JOURNAL_ID_SIZE
    assert decode_journal_id(data) == journal_id
    for bad in (b"", data[:-1], data + b"\n", data.upper(), b" " + data[:-1], b"\0" * 37):
        with pytest.raises(FormatError, match="journal identity"):
            decode_journal_id(bad)


@pytest.mark.parametrize(
    "count", [0, 1, 15, 16, PACK_SLICE_ENTRIES, PACK_SLICE_ENTRIES + 1, 3 * PACK_SLICE_ENTRIES + 7]
)
def test_a_large_payload_packed_in_slices_is_the_same_bytes(count: int) -> None:
    messages = [bytes([i % 256]) * (i % 40) for i in range(count)]
    metadata = [{b"k": b"%d" % i} if i % 3 else None for i in range(count)]
    assert encode_payload(messages, None) == (msgpack.packb(messages, use_bin_type=True), 0)
    pairs = [list(pair) for pair in zip(messages, metadata, strict=True)]
    payload, flags = encode_payload(messages, metadata)
    assert (payload, flags) == (msgpack.packb(pairs, use_bin_type=True), FLAG_METADATA)
