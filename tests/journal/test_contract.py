"""The journal's contract, at segment sizes of one, two and three records so that every segment
boundary is crossed (reads, seeks, index lookups and deletions land on each side of one)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from journal import (
    JournalConfig,
    OffsetOutOfRange,
    PartitionId,
    RetentionPolicy,
    open_journal,
    open_reader,
    verify,
)
from journal.format import decode_index
from journal.segments import build_index, list_segments

PID = PartitionId(b"contract", 3)
BATCH = 2  # messages per append
N_BATCHES = 7


def batch(i: int) -> list[bytes]:
    return [b"batch-%03d-message-%d" % (i, k) for k in range(BATCH)]


def expected(n_batches: int, start: int = 0) -> list[bytes]:
    return [m for i in range(start, n_batches) for m in batch(i)]


@pytest.fixture(params=[1, 2, 3], ids=["1-record", "2-records", "3-records"])
def per_segment(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture
def config(per_segment: int, kit) -> JournalConfig:
    # Every batch has the same size, so a segment holds exactly ``per_segment`` of them; one
    # index entry per batch so that index lookups land on every batch.
    return JournalConfig(
        segment_bytes=per_segment * kit.record_size(batch(0)), index_interval_bytes=1
    )


def part_dir(directory: Path) -> Path:
    return directory / "contract" / "3"


async def fill(journal, n: int, start: int = 0) -> list[int]:
    bases = []
    for i in range(start, start + n):
        result = await journal.append(PID.category, PID.partition, batch(i))
        assert result.count == BATCH
        bases.append(result.base_offset)
    return bases


def read_all(reader, max_messages: int = 1000) -> list:
    out = []
    while chunk := reader.read(max_messages):
        out += chunk
    return out


@pytest.mark.parametrize("reader_kind", ["in-process", "other-process"])
async def test_round_trip_dense_offsets_and_segments(
    tmp_path: Path, config: JournalConfig, per_segment: int, reader_kind: str
) -> None:
    async with open_journal(tmp_path, config) as journal:
        bases = await fill(journal, N_BATCHES)
        assert bases == [i * BATCH for i in range(N_BATCHES)]
        assert journal.high_water_mark(PID) == N_BATCHES * BATCH
        if reader_kind == "in-process":
            reader = journal.open_reader(PID, 0)
        else:
            reader = open_reader(tmp_path, PID, 0, config)
        with reader:
            messages = read_all(reader, max_messages=3)
            assert reader.read() == []
            assert reader.position == N_BATCHES * BATCH
    assert [m.offset for m in messages] == list(range(N_BATCHES * BATCH))
    assert [m.message for m in messages] == expected(N_BATCHES)
    assert all(m.metadata is None for m in messages)
    segments = list_segments(part_dir(tmp_path))
    assert len(segments) == -(-N_BATCHES // per_segment)
    assert verify(tmp_path) == []  # default config: another index interval is no problem
    assert segments == [i * per_segment * BATCH for i in range(len(segments))]


async def test_reopen_continues_offsets(tmp_path: Path, config: JournalConfig) -> None:
    async with open_journal(tmp_path, config) as journal:
        await fill(journal, 4)
    async with open_journal(tmp_path, config) as journal:
        assert journal.partitions() == [PID]
        assert journal.high_water_mark(PID) == 4 * BATCH
        assert await fill(journal, 3, start=4) == [i * BATCH for i in range(4, 7)]
        with journal.open_reader(PID, 0) as reader:
            assert [m.message for m in read_all(reader)] == expected(7)


async def test_every_start_offset_reads_to_the_end(tmp_path: Path, config: JournalConfig) -> None:
    async with open_journal(tmp_path, config) as journal:
        await fill(journal, N_BATCHES)
        total = N_BATCHES * BATCH
        for start in range(total + 1):
            with journal.open_reader(PID, start) as reader:
                got = read_all(reader, max_messages=1)
            assert [m.offset for m in got] == list(range(start, total))
            assert [m.message for m in got] == expected(N_BATCHES)[start:]
        with pytest.raises(OffsetOutOfRange):
            journal.open_reader(PID, total + 1)


async def test_read_limits(tmp_path: Path, config: JournalConfig) -> None:
    async with open_journal(tmp_path, config) as journal:
        await fill(journal, N_BATCHES)
        with journal.open_reader(PID, 1) as reader:
            assert [m.offset for m in reader.read(max_messages=2)] == [1, 2]
            # max_bytes: at least one message, then only whole messages within the budget
            assert len(reader.read(max_bytes=1)) == 1
            size = len(batch(0)[0])
            assert len(reader.read(max_bytes=2 * size)) == 2
            assert reader.position == 6


async def test_roll_by_age(tmp_path: Path, per_segment: int, kit) -> None:
    clock = kit.FakeClock()
    config = JournalConfig(
        segment_bytes=per_segment * kit.record_size(batch(0)), segment_age_s=10.0
    )
    async with open_journal(tmp_path, config, clock=clock) as journal:
        await fill(journal, 1)
        clock.advance(10.0)
        await fill(journal, 1, start=1)  # the first segment is 10 s old: roll before this one
        assert list_segments(part_dir(tmp_path)) == [0, BATCH]
        clock.advance(9.9)
        if per_segment > 1:
            await fill(journal, 1, start=2)  # not old enough yet
            assert list_segments(part_dir(tmp_path)) == [0, BATCH]
    async with open_journal(tmp_path, config, clock=clock) as journal:
        # the age survives a reopen: it is the first batch's timestamp
        clock.advance(0.2)
        before = len(list_segments(part_dir(tmp_path)))
        await fill(journal, 1, start=3)
        assert len(list_segments(part_dir(tmp_path))) == before + 1


@pytest.mark.parametrize("damage", ["deleted", "garbled", "truncated", "wrong-offsets"])
async def test_index_rebuilt_when_missing_or_damaged(
    tmp_path: Path, config: JournalConfig, damage: str
) -> None:
    async with open_journal(tmp_path, config) as journal:
        await fill(journal, N_BATCHES)
    part = part_dir(tmp_path)
    indexes = sorted(part.glob("*.index"))
    assert indexes
    for index in indexes:
        data = index.read_bytes()
        if damage == "deleted":
            index.unlink()
        elif damage == "garbled":
            index.write_bytes(bytes(b ^ 0x5A for b in data) or b"\x01" * 30)
        elif damage == "truncated":
            index.write_bytes(data[: len(data) // 2 + 3])
        else:  # entries that pass their own checks but point at the wrong batches
            other = indexes[1] if index == indexes[0] and len(indexes) > 1 else indexes[0]
            index.write_bytes(other.read_bytes() if other != index else b"\0" * 28)
    async with open_journal(tmp_path, config) as journal:
        total = N_BATCHES * BATCH
        for start in range(total):
            with journal.open_reader(PID, start) as reader:
                got = read_all(reader)
            assert [m.offset for m in got] == list(range(start, total))
            assert [m.message for m in got] == expected(N_BATCHES)[start:]
    # every index is whole again and agrees with its log
    for base in list_segments(part):
        log_path = part / f"{base:020d}.log"
        fd = os.open(log_path, os.O_RDONLY)
        try:
            rebuilt, _ = build_index(fd, base, os.fstat(fd).st_size, 1, config.max_record_bytes)
        finally:
            os.close(fd)
        entries, damaged = decode_index(
            (part / f"{base:020d}.index").read_bytes(), base, log_path.stat().st_size
        )
        assert not damaged
        assert entries == rebuilt


async def test_seek_time(tmp_path: Path, config: JournalConfig, kit) -> None:
    clock = kit.FakeClock()
    stamps = []
    async with open_journal(tmp_path, config, clock=clock) as journal:
        for i in range(N_BATCHES):
            stamps.append(int(clock.now * 1000))
            await fill(journal, 1, start=i)
            clock.advance(1.0)
        with journal.open_reader(PID, 0) as reader:
            for i, ts in enumerate(stamps):
                reader.seek_time(ts)
                assert reader.position == i * BATCH
                reader.seek_time(ts - 500)  # between batches: the next batch
                assert reader.position == i * BATCH
                messages = reader.read(max_messages=1)
                assert messages[0].timestamp_ms == ts
            reader.seek_time(0)
            assert reader.position == 0
            reader.seek_time(stamps[-1] + 1)
            assert reader.position == N_BATCHES * BATCH
            assert reader.read() == []
    with open_reader(tmp_path, PID, 0) as reader:
        reader.seek_time(stamps[3])
        assert reader.position == 3 * BATCH


async def test_read_wait_follows_the_writer_across_segments(
    tmp_path: Path, config: JournalConfig
) -> None:
    got: list[int] = []
    async with open_journal(tmp_path, config) as journal:
        await fill(journal, 1)
        reader = journal.open_reader(PID, 0)

        async def follow() -> None:
            while len(got) < N_BATCHES * BATCH:
                got.extend(m.offset for m in await reader.read_wait(max_messages=3))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            for i in range(1, N_BATCHES):
                await trio.sleep(0.001)
                await fill(journal, 1, start=i)
        reader.close()
    assert got == list(range(N_BATCHES * BATCH))


async def test_segment_deletion_under_an_open_reader(
    tmp_path: Path, config: JournalConfig, per_segment: int
) -> None:
    async with open_journal(tmp_path, config) as journal:
        await fill(journal, N_BATCHES)
        reader = journal.open_reader(PID, 0)
        gap_reader = journal.open_reader(PID, 0, skip_gaps=True)
        first = reader.read(max_messages=1)
        gap_reader.read(max_messages=1)
        assert first[0].offset == 0
        deleted = journal.apply_retention(lambda c: RetentionPolicy(max_bytes=0), lambda p: None)
        active = list_segments(part_dir(tmp_path))
        assert len(active) == 1  # all sealed segments are gone, the active one stays
        assert [d.base_offset for d in deleted] == [
            b for b in range(0, active[0], per_segment * BATCH)
        ]
        # the open segment still reads to its end, whatever happened to its file
        rest = []
        try:
            while chunk := reader.read():
                rest += chunk
            gap = None
        except OffsetOutOfRange as exc:
            gap = exc
        first_segment_end = per_segment * BATCH
        if active[0] == first_segment_end:
            assert gap is None  # the next segment is the active one: no gap
            assert [m.offset for m in rest] == list(range(1, N_BATCHES * BATCH))
        else:
            assert gap is not None and gap.earliest == active[0]
            assert gap.offset == first_segment_end
            assert [m.offset for m in rest] == list(range(1, first_segment_end))
            reader.seek(gap.earliest)
            assert [m.offset for m in read_all(reader)] == list(range(active[0], N_BATCHES * BATCH))
            got = [m.offset for m in read_all(gap_reader)]
            assert got == [*range(1, first_segment_end), *range(active[0], N_BATCHES * BATCH)]
            assert gap_reader.skipped == [(first_segment_end, active[0])]
        # a new reader below the earliest offset is told where data begins
        with pytest.raises(OffsetOutOfRange) as info:
            journal.open_reader(PID, 0)
        assert info.value.earliest == active[0]
        reader.close()
        gap_reader.close()


async def test_metadata_round_trip(tmp_path: Path, config: JournalConfig) -> None:
    async with open_journal(tmp_path, config) as journal:
        await journal.append(b"meta", 0, [b"a", b"b", b"c"], [{b"k": b"v"}, None, {}])
        await journal.append(b"meta", 0, [b"d"], [None])  # all None: stored without metadata
        with journal.open_reader(PartitionId(b"meta", 0), 0) as reader:
            got = [(m.message, m.metadata) for m in reader.read()]
    assert got == [(b"a", {b"k": b"v"}), (b"b", None), (b"c", {}), (b"d", None)]


async def test_times_strictly_increase_across_segments_and_reopen(
    tmp_path: Path, config: JournalConfig, kit
) -> None:
    clock = kit.FakeClock()  # everything in one millisecond
    now_ms = int(clock.now * 1000)
    async with open_journal(tmp_path, config, clock=clock) as journal:
        await fill(journal, 4)
    async with open_journal(tmp_path, config, clock=clock) as journal:
        await fill(journal, 3, start=4)
        with journal.open_reader(PID, 0) as reader:
            got = read_all(reader, max_messages=3)
    # consecutive microseconds; after the reopen, from the millisecond after the last message's
    assert [m.timestamp_us for m in got] == [
        *(now_ms * 1000 + k for k in range(4 * BATCH)),
        *((now_ms + 1) * 1000 + k for k in range(3 * BATCH)),
    ]
    assert [m.timestamp_ms for m in got] == [now_ms] * 4 * BATCH + [now_ms + 1] * 3 * BATCH
    with open_reader(tmp_path, PID, 0) as reader:
        reader.seek_time(now_ms + 1)
        assert reader.position == 4 * BATCH
