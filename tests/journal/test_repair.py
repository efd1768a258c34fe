"""Repair of damage in the middle of a partition: what it cuts is documented (a gap that verify
accepts and readers continue over), every segment keeps an index, and the intact batches after
the damage are salvaged at new offsets above the high-water mark."""

from __future__ import annotations

import random
from itertools import pairwise
from pathlib import Path

import pytest

from journal import (
    JournalConfig,
    JournalMessage,
    OffsetOutOfRange,
    PartitionId,
    open_journal,
    open_reader,
    repair,
    verify,
)
from journal.format import GAP_ENTRY_SIZE, HEADER_SIZE, Gap, decode_gaps
from journal.gaps import documented, gaps_path, read_gaps
from journal.salvage import find_batches

PID = PartitionId(b"dmg", 0)
BATCHES, PER_BATCH = 11, 10  # 110 messages, as the operator who found it wrote them


def part(directory: Path) -> Path:
    return directory / "dmg" / "0"


def message(n: int) -> bytes:
    return b"message-%03d" % n


async def write(directory: Path, config: JournalConfig, batches: int = BATCHES) -> int:
    async with open_journal(directory, config) as journal:
        for b in range(batches):
            batch = [message(b * PER_BATCH + k) for k in range(PER_BATCH)]
            await journal.append(PID.category, 0, batch)
        return journal.high_water_mark(PID)


def batch_positions(segment: Path) -> list[int]:
    return [found.position for found in find_batches(segment, 1 << 20)]


def read_everything(directory: Path, offset: int = 0) -> tuple[list[JournalMessage], list]:
    with open_reader(directory, PID, offset) as reader:  # no skip_gaps: a repaired gap is known
        got: list[JournalMessage] = []
        while chunk := reader.read():
            got += chunk
        return got, [(*r, reader.skip_reasons[r]) for r in reader.skipped]


def flip(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))


async def test_a_repaired_partition_verifies_clean_and_keeps_what_follows_the_damage(
    tmp_path: Path,
) -> None:
    config = JournalConfig()
    hwm = await write(tmp_path, config)
    segment = part(tmp_path) / f"{0:020d}.log"
    positions = batch_positions(segment)
    flip(segment, 500)
    damaged = max(i for i, p in enumerate(positions) if p <= 500)
    cut_offset = damaged * PER_BATCH
    assert [p.fatal for p in verify(tmp_path)] == [True]

    result = repair(tmp_path, PID)

    assert (result.cut_file, result.cut_position) == (segment, positions[damaged])
    assert verify(tmp_path) == []  # no "gap", no "index missing"
    after = list(range((damaged + 1) * PER_BATCH, hwm))
    assert (result.salvaged_messages, result.salvaged_batches) == (len(after), len(after) // 10)
    assert result.gap == (cut_offset, hwm)
    assert result.next_offset == hwm + len(after)
    # the gap is written down, with how many of its messages were kept after it
    assert read_gaps(part(tmp_path))[0] == [
        Gap(cut_offset, hwm, len(after), read_gaps(part(tmp_path))[0][0].made_ms)
    ]
    got, skipped = read_everything(tmp_path)
    assert [m.message for m in got] == [*map(message, range(cut_offset)), *map(message, after)]
    assert [m.offset for m in got] == [*range(cut_offset), *range(hwm, result.next_offset)]
    assert skipped == [(cut_offset, hwm, "cut by repair")]
    # times strictly increase along the partition, across the gap too
    assert all(a.timestamp_us < b.timestamp_us for a, b in pairwise(got))
    # the cut bytes stay in their side file
    assert result.side_files[0].read_bytes()[:1] != b""
    # every segment has an index that matches its log
    for log in part(tmp_path).glob("*.log"):
        assert log.with_suffix(".index").exists()

    async with open_journal(tmp_path, config) as journal:
        assert journal.failures() == []
        appended = await journal.append(PID.category, 0, [b"after repair"])
        assert appended.base_offset == result.next_offset
    assert verify(tmp_path) == []
    assert read_everything(tmp_path)[0][-1].message == b"after repair"


async def test_without_salvage_the_gap_reaches_the_high_water_mark_and_is_documented(
    tmp_path: Path,
) -> None:
    hwm = await write(tmp_path, JournalConfig())
    flip(part(tmp_path) / f"{0:020d}.log", 500)
    result = repair(tmp_path, PID, salvage=False)
    assert result.salvaged_messages == 0
    assert result.gap is not None and result.gap[1] == hwm == result.next_offset
    assert verify(tmp_path) == []
    got, skipped = read_everything(tmp_path)
    assert [m.offset for m in got] == list(range(result.gap[0]))
    assert skipped == [(result.gap[0], hwm, "cut by repair")]  # and the reader is caught up


async def test_salvage_finds_batches_after_garbage_and_across_moved_segments(
    tmp_path: Path, kit
) -> None:
    """Garbage over a batch boundary (the length field too), in a small-segment partition:
    the search resynchronises byte by byte; later segments moved aside are salvaged as well,
    into segments that roll at segment_bytes."""
    record = kit.record_size([message(0) for _ in range(PER_BATCH)])
    config = JournalConfig(segment_bytes=3 * record, index_interval_bytes=1)
    hwm = await write(tmp_path, config)
    segments = sorted(part(tmp_path).glob("*.log"))
    assert len(segments) == 4
    second = segments[1]  # offsets 30..59
    data = bytearray(second.read_bytes())
    rng = random.Random(9)
    start = record - 7  # the end of batch 3 and the header of batch 4
    data[start : start + HEADER_SIZE] = rng.randbytes(HEADER_SIZE)
    second.write_bytes(bytes(data))

    result = repair(tmp_path, PID, config)

    # batches 3 and 4 (offsets 30..49) are lost, 5 and every later one is kept
    after = list(range(50, hwm))
    assert result.gap == (30, hwm)
    assert result.salvaged_messages == len(after)
    assert [p.name for p in result.side_files] == [
        second.name + ".cut-1",
        *(s.name + ".cut-1" for s in segments[2:]),
    ]
    assert verify(tmp_path, config=config) == []
    got, _ = read_everything(tmp_path)
    assert [m.message for m in got] == [*map(message, range(30)), *map(message, after)]
    salvage_segments = [p for p in sorted(part(tmp_path).glob("*.log")) if int(p.stem) >= hwm]
    assert len(salvage_segments) == 2  # 6 batches, 3 a segment
    assert all(p.stat().st_size <= config.segment_bytes for p in salvage_segments)


async def test_repair_is_idempotent(tmp_path: Path) -> None:
    await write(tmp_path, JournalConfig())
    flip(part(tmp_path) / f"{0:020d}.log", 500)
    first = repair(tmp_path, PID)
    files = {p.name: p.read_bytes() for p in part(tmp_path).iterdir()}
    second = repair(tmp_path, PID)
    assert (second.cut_file, second.gap, second.salvaged_messages) == (None, None, 0)
    assert second.next_offset == first.next_offset
    assert {p.name: p.read_bytes() for p in part(tmp_path).iterdir()} == files
    assert verify(tmp_path) == []


async def test_a_reader_in_another_process_sees_the_repaired_high_water_mark(
    tmp_path: Path,
) -> None:
    """Readers keep the hwm file open: repair rewrites it in place, so a caught-up reader reads
    the salvaged messages instead of polling a replaced file for good."""
    hwm = await write(tmp_path, JournalConfig())
    reader = open_reader(tmp_path, PID, hwm)
    try:
        assert reader.read() == []
        flip(part(tmp_path) / f"{0:020d}.log", 500)
        result = repair(tmp_path, PID)
        got = reader.read()
        assert [m.offset for m in got] == list(range(hwm, result.next_offset))
    finally:
        reader.close()


async def test_an_undocumented_gap_is_still_reported(tmp_path: Path) -> None:
    """Only what repair wrote down is accepted: the same gap without the file is a problem for
    verify and a reader that does not skip gaps."""
    hwm = await write(tmp_path, JournalConfig())
    flip(part(tmp_path) / f"{0:020d}.log", 500)
    result = repair(tmp_path, PID, salvage=False)
    assert result.gap is not None
    gaps_path(part(tmp_path)).unlink()
    assert [p.reason for p in verify(tmp_path)] == [
        f"offsets {result.gap[0]}..{hwm - 1} are missing (gap)"
    ]
    async with open_journal(tmp_path, JournalConfig()) as journal:
        await journal.append(PID.category, 0, [b"x"])
    with pytest.raises(OffsetOutOfRange):
        read_everything(tmp_path)


def test_gap_file_entries_and_damage() -> None:
    gaps = [Gap(5, 10, 3, 1_700_000_000_000), Gap(10, 12, 0, 1_700_000_000_001)]
    data = b"".join(g.encode() for g in gaps)
    assert len(data) == 2 * GAP_ENTRY_SIZE
    assert decode_gaps(data) == (gaps, False)
    assert decode_gaps(data + b"\0") == (gaps, True)  # a torn append: the prefix counts
    flipped = bytearray(data)
    flipped[GAP_ENTRY_SIZE + 3] ^= 1
    assert decode_gaps(bytes(flipped)) == (gaps[:1], True)
    assert decode_gaps(Gap(5, 5, 0, 0).encode()) == ([], True)  # empty
    assert decode_gaps(gaps[1].encode() + gaps[0].encode()) == ([gaps[1]], True)  # not in order
    assert documented(gaps, 5, 12) == gaps
    assert documented(gaps, 7, 11) == gaps
    assert documented(gaps, 4, 10) is None
    assert documented(gaps, 11, 13) is None


async def test_verify_reports_a_damaged_gap_file(tmp_path: Path) -> None:
    await write(tmp_path, JournalConfig())
    flip(part(tmp_path) / f"{0:020d}.log", 500)
    repair(tmp_path, PID)
    with gaps_path(part(tmp_path)).open("ab") as f:
        f.write(b"junk")
    problems = verify(tmp_path)
    assert [(p.file, p.fatal) for p in problems] == [(gaps_path(part(tmp_path)), False)]


async def test_a_second_repair_further_back_replaces_the_first_gap(tmp_path: Path) -> None:
    """Damage found later before an earlier repair's gap: the new cut moves the salvaged
    segment aside too, salvages it again, and one gap covers both."""
    hwm = await write(tmp_path, JournalConfig())
    segment = part(tmp_path) / f"{0:020d}.log"
    positions = batch_positions(segment)
    flip(segment, 500)
    first = repair(tmp_path, PID)
    assert first.gap is not None
    flip(segment, positions[0] + HEADER_SIZE + 1)  # the first batch, this time

    second = repair(tmp_path, PID)

    assert second.gap == (0, first.next_offset)
    [gap] = read_gaps(part(tmp_path))[0]
    assert (gap.start, gap.end, gap.salvaged) == (0, first.next_offset, second.salvaged_messages)
    assert verify(tmp_path) == []
    got, skipped = read_everything(tmp_path)
    lost = set(range(PER_BATCH)) | set(range(first.gap[0], first.gap[0] + PER_BATCH))
    assert [m.message for m in got] == [message(n) for n in range(hwm) if n not in lost]
    assert [m.offset for m in got] == list(range(first.next_offset, second.next_offset))
    assert skipped == [(0, first.next_offset, "cut by repair")]
