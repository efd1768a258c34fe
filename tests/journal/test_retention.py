"""Retention by age and size, never at or above the consumer floor, never the active segment."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from journal import (
    JournalConfig,
    PartitionId,
    RetentionHold,
    RetentionPolicy,
    open_journal,
    open_reader,
)
from journal.segments import list_segments

PID = PartitionId(b"ret", 0)
KEEP = PartitionId(b"keep", 0)


def part(directory: Path, pid: PartitionId = PID) -> Path:
    return directory / pid.category.decode() / "0"


async def filled(tmp_path: Path, kit, clock, batches: int = 10):
    record = kit.record_size([b"message-%03d" % 0])
    config = JournalConfig(segment_bytes=2 * record)  # two batches (two offsets) per segment
    cm = open_journal(tmp_path, config, clock=clock)
    journal = await cm.__aenter__()
    for i in range(batches):
        await journal.append(PID.category, 0, [b"message-%03d" % i])
        await journal.append(KEEP.category, 0, [b"message-%03d" % i])
        clock.advance(60)
    return cm, journal, record


async def test_size_retention_respects_floor_and_active_segment(
    tmp_path: Path, kit, caplog
) -> None:
    clock = kit.FakeClock()
    cm, journal, record = await filled(tmp_path, kit, clock)
    try:
        assert list_segments(part(tmp_path)) == [0, 2, 4, 6, 8]
        policies = {PID.category: RetentionPolicy(max_bytes=0), KEEP.category: RetentionPolicy()}
        floors: dict[PartitionId, int | None] = {PID: 5, KEEP: None}
        with caplog.at_level(logging.INFO, logger="journal"):
            deleted = journal.apply_retention(policies.__getitem__, floors.__getitem__)
        # [4, 6) holds offset 5: at or above the floor, kept with everything after it
        assert [(d.pid, d.base_offset, d.end_offset, d.reason) for d in deleted] == [
            (PID, 0, 2, "size"),
            (PID, 2, 4, "size"),
        ]
        assert list_segments(part(tmp_path)) == [4, 6, 8]
        assert list_segments(part(tmp_path, KEEP)) == [0, 2, 4, 6, 8]
        logged = [r for r in caplog.records if r.getMessage() == "journal segment deleted"]
        assert [(r.base_offset, r.reason) for r in logged] == [(0, "size"), (2, "size")]  # type: ignore[attr-defined]
        # no floor: everything but the active segment goes
        deleted = journal.apply_retention(policies.__getitem__, lambda pid: None)
        assert [d.base_offset for d in deleted] == [4, 6]
        assert list_segments(part(tmp_path)) == [8]
        with journal.open_reader(PID, 8) as reader:
            assert [m.message for m in reader.read()] == [b"message-008", b"message-009"]
        # None: from the earliest offset kept, in this process and from another one
        with journal.open_reader(PID, None) as reader:
            assert reader.position == 8
        with open_reader(tmp_path, PID, None) as reader:
            assert [m.offset for m in reader.read()] == [8, 9]
        # the size limit keeps what fits
        await journal.append(PID.category, 0, [b"message-010"])
        for i in range(11, 16):
            await journal.append(PID.category, 0, [b"message-%03d" % i])
        deleted = journal.apply_retention(
            lambda c: RetentionPolicy(max_bytes=4 * record), lambda pid: None
        )
        assert sum(p.stat().st_size for p in part(tmp_path).glob("*.log")) <= 4 * record
        assert list_segments(part(tmp_path))[-1] == 14
    finally:
        await cm.__aexit__(None, None, None)


async def test_age_retention(tmp_path: Path, kit) -> None:
    clock = kit.FakeClock()
    start = clock.now
    cm, journal, _ = await filled(tmp_path, kit, clock)  # one batch a minute
    try:
        policy = RetentionPolicy(max_age_s=5 * 60 + 30)
        clock.now = start + 9 * 60 + 31  # the cut-off is minute 4:01
        deleted = journal.apply_retention(lambda c: policy, lambda pid: None)
        # a segment goes once the next segment's first message (a bound on its own newest one)
        # is older than 5.5 minutes: [0,2) (next starts at minute 2) and [2,4) (minute 4)
        assert {(d.pid, d.base_offset, d.reason) for d in deleted} == {
            (PID, 0, "age"),
            (PID, 2, "age"),
            (KEEP, 0, "age"),
            (KEEP, 2, "age"),
        }
        clock.advance(3600)
        journal.apply_retention(lambda c: policy, lambda pid: None)
        assert list_segments(part(tmp_path)) == [8]  # the active segment stays, however old
        assert journal.apply_retention(lambda c: RetentionPolicy(), lambda pid: None) == []
    finally:
        await cm.__aexit__(None, None, None)


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        RetentionPolicy(max_age_s=-1)
    with pytest.raises(ValueError):
        RetentionPolicy(max_bytes=-1)


async def test_a_segment_kept_for_the_floor_is_reported(tmp_path: Path, kit) -> None:
    clock = kit.FakeClock()
    cm, journal, record = await filled(tmp_path, kit, clock)
    try:
        holds: list[RetentionHold] = []
        policies = {PID.category: RetentionPolicy(max_bytes=0), KEEP.category: RetentionPolicy()}
        floors: dict[PartitionId, int | None] = {PID: 3, KEEP: 0}
        deleted = journal.apply_retention(policies.__getitem__, floors.__getitem__, holds.append)
        assert [d.base_offset for d in deleted] == [0]
        # [2, 4) holds offset 3, which a consumer has not committed: kept, and said so.  KEEP's
        # policy deletes nothing, so its floor holds nothing back.
        assert holds == [RetentionHold(PID, 2, 4, record * 2, "size", 3)]
        holds.clear()
        journal.apply_retention(policies.__getitem__, lambda pid: None, holds.append)
        assert holds == []
    finally:
        await cm.__aexit__(None, None, None)
