"""Message times: a microsecond per message, strictly increasing along a partition, stored on
disk (format version 2), across write groups, segments, restarts and recovery.

Invariant checked everywhere: read back in offset order, ``timestamp_us`` strictly increases and
``timestamp_ms`` (the batch's first ms) never decreases; a batch's messages have consecutive
microseconds.  The clock is a ``FakeClock`` standing still unless a test moves it.
"""

from __future__ import annotations

import itertools
import os
import shutil
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

from journal import (
    Durability,
    JournalConfig,
    JournalFull,
    JournalMessage,
    PartitionId,
    open_journal,
    open_reader,
    verify,
)
from journal.format import (
    HEADER,
    BatchHeader,
    HighWaterMark,
    decode_hwm,
    encode_batch,
    encode_payload,
)
from journal.segments import list_segments, scan, segment_path

PID = PartitionId(b"times", 0)
T = 1_700_000_000_000  # ms: the FakeClock's default start


def part(directory: Path) -> Path:
    return directory / "times" / "0"


def read_all(directory: Path) -> list[JournalMessage]:
    out: list[JournalMessage] = []
    with open_reader(directory, PID, None, skip_gaps=True) as reader:
        while chunk := reader.read(max_messages=333):
            out += chunk
    return out


def headers(directory: Path) -> list[BatchHeader]:
    found: list[BatchHeader] = []
    for base in list_segments(part(directory)):
        fd = os.open(segment_path(part(directory), base), os.O_RDONLY)
        try:
            end = scan(fd, 0, base, os.fstat(fd).st_size, 1 << 20, lambda _, h: found.append(h))
        finally:
            os.close(fd)
        assert end.error is None
    return found


def assert_increasing(messages: Sequence[JournalMessage]) -> None:
    us = [m.timestamp_us for m in messages]
    assert all(type(t) is int for t in us)
    assert all(a < b for a, b in itertools.pairwise(us)), "times do not strictly increase"
    ms = [m.timestamp_ms for m in messages]
    assert all(a <= b for a, b in itertools.pairwise(ms)), "ms timestamps went back"
    for m in messages:
        assert m.timestamp_ms * 1000 <= m.timestamp_us  # the batch's first ms, or earlier


def batch(i: int, n: int) -> list[bytes]:
    return [b"batch-%03d-%04d" % (i, k) for k in range(n)]


async def test_write_groups_in_one_millisecond(tmp_path: Path, kit) -> None:
    clock = kit.FakeClock()
    async with open_journal(tmp_path, JournalConfig(), clock=clock) as journal:
        for i, n in enumerate([1, 2, 3]):  # one group each
            await journal.append(PID.category, 0, batch(i, n))
        async with trio.open_nursery() as nursery:  # queued together: fewer, larger groups
            for i in range(3, 10):
                nursery.start_soon(journal.append, PID.category, 0, batch(i, 2))
    messages = read_all(tmp_path)
    assert len(messages) == 20
    assert_increasing(messages)
    # all in the clock's millisecond, one microsecond after another
    assert [m.timestamp_us for m in messages] == [T * 1000 + k for k in range(20)]
    assert {m.timestamp_ms for m in messages} == {T}
    for h in headers(tmp_path):
        assert (h.version, h.first_timestamp_ms, h.max_timestamp_ms) == (2, T, T)
        assert h.first_us == h.base_offset  # the batch starts at its first message's microsecond


async def test_more_than_1000_per_millisecond_runs_ahead_then_catches_up(
    tmp_path: Path, kit
) -> None:
    clock = kit.FakeClock()
    async with open_journal(tmp_path, JournalConfig(), clock=clock) as journal:
        await journal.append(PID.category, 0, batch(0, 2500))  # T000 .. T+2 499
        await journal.append(PID.category, 0, batch(1, 1))  # still T: next microsecond
        clock.advance(0.001)  # T+1: still behind the last message
        await journal.append(PID.category, 0, batch(2, 1))
        clock.advance(0.010)  # T+11: the wall clock again
        await journal.append(PID.category, 0, batch(3, 2))
        with journal.open_reader(PID, 0) as reader:
            for ms, offset in [(T, 0), (T + 1, 1000), (T + 2, 2000), (T + 3, 2502), (T + 11, 2502)]:
                reader.seek_time(ms)  # to the message, not just its batch
                assert reader.position == offset
            reader.seek_time(T + 12)
            assert reader.position == journal.high_water_mark(PID)
    messages = read_all(tmp_path)
    assert_increasing(messages)
    us = [m.timestamp_us for m in messages]
    assert us[:2502] == [T * 1000 + k for k in range(2502)]
    assert us[2502:] == [(T + 11) * 1000, (T + 11) * 1000 + 1]
    # timestamp_ms stays the batch's first ms for every message of the batch
    assert [m.timestamp_ms for m in messages[2499:]] == [T, T + 2, T + 2, T + 11, T + 11]
    assert [(h.first_timestamp_ms, h.first_us, h.max_timestamp_ms) for h in headers(tmp_path)] == [
        (T, 0, T + 2),
        (T + 2, 500, T + 2),
        (T + 2, 501, T + 2),
        (T + 11, 0, T + 11),
    ]


@pytest.mark.parametrize("per_segment", [1, 2, 3])
async def test_across_segment_rolls(tmp_path: Path, kit, per_segment: int) -> None:
    clock = kit.FakeClock()
    config = JournalConfig(
        segment_bytes=per_segment * kit.record_size(batch(0, 3)), index_interval_bytes=1
    )
    async with open_journal(tmp_path, config, clock=clock) as journal:
        for i in range(5):
            await journal.append(PID.category, 0, batch(i, 3))
        async with trio.open_nursery() as nursery:  # groups that span several segments
            for i in range(5, 12):
                nursery.start_soon(journal.append, PID.category, 0, batch(i, 3))
    assert len(list_segments(part(tmp_path))) == -(-12 // per_segment)
    messages = read_all(tmp_path)
    assert [m.timestamp_us for m in messages] == [T * 1000 + k for k in range(36)]
    assert verify(tmp_path, config=config) == []  # index entries agree with the headers


async def test_across_close_and_reopen(tmp_path: Path, kit) -> None:
    clock = kit.FakeClock()
    for round_ in range(3):
        async with open_journal(tmp_path, JournalConfig(), clock=clock) as journal:
            await journal.append(PID.category, 0, batch(round_, 1500))
        if round_ == 1:
            clock.advance(-5.0)  # the wall clock steps back between runs
    messages = read_all(tmp_path)
    assert_increasing(messages)
    starts = [m.timestamp_us for m in messages[::1500]]
    # each run resumes after the millisecond of the previous run's last message (T+1 .. T+1.499)
    assert starts == [T * 1000, (T + 2) * 1000, (T + 4) * 1000]


async def test_a_batch_the_disk_refused_gives_its_times_back(tmp_path: Path, kit) -> None:
    clock = kit.FakeClock()
    io = kit.FullDiskIO()
    async with open_journal(tmp_path, JournalConfig(), clock=clock, file_io=io) as journal:
        await journal.append(PID.category, 0, [b"before"])
        io.full = True
        with pytest.raises(JournalFull):
            await journal.append(PID.category, 0, batch(0, 5))
        io.full = False
        await journal.append(PID.category, 0, [b"after"])
    assert [m.timestamp_us for m in read_all(tmp_path)] == [T * 1000, T * 1000 + 1]


@pytest.mark.parametrize("damage", ["torn-tail", "stale-checkpoint", "lost-unsynced-tail"])
async def test_across_crash_recovery(tmp_path: Path, kit, damage: str) -> None:
    clock = kit.FakeClock()
    durability = Durability.NONE if damage == "lost-unsynced-tail" else Durability.FSYNC
    config = JournalConfig(durability=durability)
    live, image = tmp_path / "live", tmp_path / "image"
    async with open_journal(live, config, clock=clock) as journal:
        await journal.append(PID.category, 0, batch(0, 3))
        old_hwm = (part(live) / "hwm").read_bytes()
        for i in range(1, 5):
            await journal.append(PID.category, 0, batch(i, 3))
        with journal.open_reader(PID, 0) as reader:
            seen = reader.read()
        shutil.copytree(live, image)  # the crash (kill -9): taken while the journal is open
    assert len(seen) == 15
    segment = segment_path(part(image), list_segments(part(image))[-1])
    if damage == "torn-tail":  # an unacknowledged batch, half written
        with segment.open("ab") as f:
            f.write(encode_batch(batch(9, 3), None, 15, T, 15)[:50])
    elif damage == "stale-checkpoint":  # a power loss kept an older checkpoint: a longer scan
        (part(image) / "hwm").write_bytes(old_hwm)
    else:  # a power loss took the acknowledged, unsynced batches a reader had seen
        cp = decode_hwm((part(image) / "hwm").read_bytes())
        assert (cp.hwm, cp.cp_offset) == (15, 0)
        with segment.open("r+b") as f:
            f.truncate(cp.cp_position)
    async with open_journal(image, config, clock=clock) as journal:
        assert journal.failures() == []
        await journal.append(PID.category, 0, batch(5, 3))
    after = read_all(image)
    assert_increasing(after)
    new = after[-3:]
    assert [m.message for m in new] == batch(5, 3)
    # above every time a reader saw before the crash, whether it survived or not
    assert new[0].timestamp_us > seen[-1].timestamp_us
    assert new[0].timestamp_us == (T + 1) * 1000


def v1_batch(base: int, count: int, ts: int) -> bytes:
    """A batch as format version 1 wrote it: one ms for all, bytes 10 .. 12 reserved (zero)."""
    payload, flags = encode_payload(batch(base, count), None)
    rest = HEADER.pack(0, 0, 1, flags, 0, base, count, ts, ts)[8:]
    crc = zlib.crc32(payload, zlib.crc32(rest))
    return struct.pack("<II", len(rest) + 4 + len(payload), crc) + rest + payload


@pytest.mark.parametrize("checkpointed_by", ["scan", "older-code"])
async def test_version_1_batches_read_back_and_version_2_continues_above(
    tmp_path: Path, kit, checkpointed_by: str
) -> None:
    clock = kit.FakeClock()
    async with open_journal(tmp_path, JournalConfig(), clock=clock) as journal:
        await journal.append(PID.category, 0, [b"v2"])
    segment = segment_path(part(tmp_path), 0)
    small, large = v1_batch(1, 3, T + 5), v1_batch(4, 2500, T + 5)
    with segment.open("ab") as f:  # older code wrote on, later in the same run
        last_batch = f.tell() + len(small)
        f.write(small)
        f.write(large)  # more than 1000 messages: their times spill past max_ts_ms
        size = f.tell()
    if checkpointed_by == "older-code":  # its checkpoint: the large batch and its max_ts_ms
        checkpoint = HighWaterMark(2504, T + 5, 0, size, 2504, last_batch, T + 5, clean=True)
        (part(tmp_path) / "hwm").write_bytes(checkpoint.encode())
    # else recovery finds both batches in the tail after the checkpoint
    async with open_journal(tmp_path, JournalConfig(), clock=clock) as journal:
        assert journal.failures() == []
        assert journal.high_water_mark(PID) == 2504
        assert [h.first_us for h in headers(tmp_path)[1:]] == [0, 0]
        messages = read_all(tmp_path)
        assert messages[1:4] == [
            JournalMessage(1 + i, T + 5, m, None, (T + 5) * 1000 + i)
            for i, m in enumerate(batch(1, 3))
        ]
        assert [m.timestamp_us for m in messages[4:]] == [(T + 5) * 1000 + i for i in range(2500)]
        assert all(m.timestamp_ms == T + 5 for m in messages[4:])
        await journal.append(PID.category, 0, [b"v2 again"])
    last = read_all(tmp_path)[-1]
    assert last.message == b"v2 again"
    assert last.timestamp_us == (T + 8) * 1000  # after the large batch's last message, T+7.499
    assert headers(tmp_path)[-1].version == 2
