"""Durability modes, group commit, fsync failure, a full disk, and the append contract's edges."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import trio

from journal import (
    BatchRejected,
    Durability,
    JournalClosed,
    JournalConfig,
    JournalFull,
    PartitionId,
    WriterFailed,
    open_journal,
    verify,
)
from journal.format import HWM_FILE, decode_hwm

PID = PartitionId(b"dur", 0)


def hwm_file(directory: Path, pid: PartitionId = PID):
    return decode_hwm(
        (directory / pid.category.decode() / str(pid.partition) / HWM_FILE).read_bytes()
    )


def segment_bytes(directory: Path, pid: PartitionId = PID) -> int:
    part = directory / pid.category.decode() / str(pid.partition)
    return sum(p.stat().st_size for p in part.glob("*.log"))


def read_all(journal, pid: PartitionId = PID) -> list[bytes]:
    with journal.open_reader(pid, 0) as reader:
        out = []
        while chunk := reader.read():
            out += [m.message for m in chunk]
        return out


async def test_fsync_mode_acknowledges_after_fdatasync(tmp_path: Path, kit) -> None:
    io = kit.CountingIO()
    async with open_journal(tmp_path, JournalConfig(), file_io=io) as journal:
        await journal.append(b"dur", 0, [b"x"])
        before = io.fdatasyncs
        result = await journal.append(b"dur", 0, [b"a", b"b"])
        assert io.fdatasyncs == before + 1
        assert result.base_offset == 1
        assert journal.high_water_mark(PID) == 3
        cp = hwm_file(tmp_path)
        assert (cp.hwm, cp.cp_offset, cp.clean) == (3, 3, False)
    cp = hwm_file(tmp_path)
    assert cp.clean and cp.hwm == cp.cp_offset == 3


async def test_group_commit_covers_concurrent_appends_with_fewer_fsyncs(
    tmp_path: Path, kit
) -> None:
    io = kit.CountingIO(delay_s=0.005)
    n = 60
    async with open_journal(tmp_path, JournalConfig(), file_io=io) as journal:
        await journal.append(b"dur", 0, [b"warm-up"])
        before = io.fdatasyncs
        results = []

        async def one(i: int) -> None:
            results.append(await journal.append(b"dur", 0, [b"m%d" % i, b"n%d" % i]))

        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(one, i)
        syncs = io.fdatasyncs - before
        assert syncs < n / 3, f"{syncs} fdatasyncs for {n} appends: no group commit"
        assert sorted(r.base_offset for r in results) == list(range(1, 2 * n + 1, 2))
        assert journal.pending_bytes == 0


async def test_interval_mode_syncs_in_the_background(tmp_path: Path, kit) -> None:
    io = kit.CountingIO()
    config = JournalConfig(durability=Durability.INTERVAL, fsync_interval_ms=20)
    async with open_journal(tmp_path, config, file_io=io) as journal:
        await journal.append(b"dur", 0, [b"x"])
        before = io.fdatasyncs
        await journal.append(b"dur", 0, [b"y"])
        assert io.fdatasyncs == before  # acknowledged after the write
        assert journal.high_water_mark(PID) == 2
        cp = hwm_file(tmp_path)
        assert cp.hwm == 2  # readers may see it
        for _ in range(100):
            await trio.sleep(0.01)
            if hwm_file(tmp_path).cp_offset == 2:
                break
        assert hwm_file(tmp_path).cp_offset == 2  # the checkpoint follows within the interval
        assert io.fdatasyncs > before


async def test_none_mode_syncs_only_on_roll_and_close(tmp_path: Path, kit) -> None:
    io = kit.CountingIO()
    config = JournalConfig(durability=Durability.NONE)
    async with open_journal(tmp_path, config, file_io=io) as journal:
        await journal.append(b"dur", 0, [b"x"])
        before = io.fdatasyncs
        for i in range(20):
            await journal.append(b"dur", 0, [b"%d" % i])
        assert io.fdatasyncs == before
        cp = hwm_file(tmp_path)
        assert cp.hwm == 21 and cp.cp_offset < 21
        assert read_all(journal)[-1] == b"19"
    cp = hwm_file(tmp_path)
    assert cp.clean and cp.cp_offset == 21


async def test_failed_fsync_fails_the_writer_for_good(tmp_path: Path, kit, caplog) -> None:
    io = kit.FailingFsyncIO()
    async with open_journal(tmp_path, JournalConfig(), file_io=io) as journal:
        await journal.append(b"dur", 0, [b"ok"])
        await journal.append(b"other", 0, [b"ok"])
        io.failing = True
        with pytest.raises(WriterFailed) as info:
            await journal.append(b"dur", 0, [b"lost"])
        assert info.value.pid == PID
        assert isinstance(info.value.cause, OSError)
        io.failing = False  # the disk "recovers": the writer must not
        for _ in range(3):
            with pytest.raises(WriterFailed):
                await journal.append(b"dur", 0, [b"never"])
        assert journal.high_water_mark(PID) == 1
        assert [f.pid for f in journal.failures()] == [PID]
        assert read_all(journal) == [b"ok"]  # readers see only what was acknowledged
        # other partitions keep working
        assert (await journal.append(b"other", 0, [b"still"])).base_offset == 1
    assert "journal writer failed" in caplog.text


async def test_failed_fsync_fails_every_queued_append(tmp_path: Path, kit) -> None:
    io = kit.CountingIO(delay_s=0.01)
    outcomes: list[str] = []
    async with open_journal(tmp_path, JournalConfig(), file_io=io) as journal:
        await journal.append(b"dur", 0, [b"ok"])

        def failing(fd: int) -> None:
            raise OSError(5, "injected")

        async def one(i: int) -> None:
            try:
                await journal.append(b"dur", 0, [b"%d" % i])
                outcomes.append("ok")
            except WriterFailed:
                outcomes.append("failed")

        io.fdatasync = failing  # type: ignore[method-assign]
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(one, i)
    assert outcomes == ["failed"] * 20


async def test_full_disk_rolls_back_and_the_writer_keeps_working(tmp_path: Path, kit) -> None:
    io = kit.FullDiskIO()
    async with open_journal(tmp_path, JournalConfig(), file_io=io) as journal:
        await journal.append(b"dur", 0, [b"before"])
        size = segment_bytes(tmp_path)
        io.full = True
        for _ in range(3):
            with pytest.raises(JournalFull):
                await journal.append(b"dur", 0, [b"x" * 100, b"y" * 100])
            assert segment_bytes(tmp_path) == size  # nothing of the batch remains
        assert journal.pending_bytes == 0
        assert journal.failures() == []
        io.full = False
        result = await journal.append(b"dur", 0, [b"after"])
        assert result.base_offset == 1  # the failed batches' offsets were never visible
        assert read_all(journal) == [b"before", b"after"]
    assert verify(tmp_path) == []
    async with open_journal(tmp_path, JournalConfig()) as journal:
        assert read_all(journal) == [b"before", b"after"]


async def test_full_disk_across_a_roll_keeps_the_sealed_part(tmp_path: Path, kit) -> None:
    """A group spanning a roll: the part sealed by the roll stands, the rest fails."""
    record = kit.record_size([b"m000"])
    config = JournalConfig(segment_bytes=3 * record)

    class FullNewSegments(kit.BlockingFsyncIO):
        full = False

        def pwritev(self, fd, buffers, offset):
            if self.full and offset == 0:  # the new segment finds the disk full
                raise OSError(errno.ENOSPC, "injected")
            return super().pwritev(fd, buffers, offset)

    io = FullNewSegments()
    outcomes: dict[int, object] = {}
    async with open_journal(tmp_path, config, file_io=io) as journal:
        await journal.append(b"dur", 0, [b"m000"])
        io.block = True

        async def one(i: int) -> None:
            try:
                outcomes[i] = (await journal.append(b"dur", 0, [b"m%03d" % i])).base_offset
            except JournalFull:
                outcomes[i] = "full"

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, 1)  # second record of the segment; waits in fdatasync
            await trio.to_thread.run_sync(io.entered.wait)
            for i in range(2, 5):  # queued meanwhile: one group that rolls after m002
                nursery.start_soon(one, i)
                await trio.sleep(0.01)
            io.full = True
            io.block = False
            io.release.set()
        assert outcomes == {1: 1, 2: 2, 3: "full", 4: "full"}
        io.full = False
        assert (await journal.append(b"dur", 0, [b"m005"])).base_offset == 3
        assert read_all(journal) == [b"m000", b"m001", b"m002", b"m005"]
    assert verify(tmp_path) == []


async def test_pending_bytes_counts_until_durable(tmp_path: Path, kit) -> None:
    io = kit.BlockingFsyncIO()
    async with open_journal(tmp_path, JournalConfig(), file_io=io) as journal:
        await journal.append(b"dur", 0, [b"warm"])
        io.block = True
        async with trio.open_nursery() as nursery:
            nursery.start_soon(journal.append, b"dur", 0, [b"z" * 1000])
            await trio.to_thread.run_sync(io.entered.wait)
            assert journal.pending_bytes > 1000
            io.block = False
            io.release.set()
        assert journal.pending_bytes == 0


async def test_append_limits_and_closed(tmp_path: Path) -> None:
    config = JournalConfig(max_batch_messages=3, max_record_bytes=100)
    async with open_journal(tmp_path, config) as journal:
        assert (await journal.append(b"dur", 0, [])).count == 0
        with pytest.raises(BatchRejected):
            await journal.append(b"dur", 0, [b"a"] * 4)
        with pytest.raises(BatchRejected):
            await journal.append(b"dur", 0, [b"a" * 200])
        with pytest.raises(BatchRejected):
            await journal.append(b"dur", 0, ["text"])  # type: ignore[list-item]
        with pytest.raises(BatchRejected):
            await journal.append(b"dur", 0, [b"a"], [None, None])
        with pytest.raises(BatchRejected):
            await journal.append(b"dur", 0, [b"a"], [{b"k": "v"}])  # type: ignore[dict-item]
        with pytest.raises(ValueError, match="partition"):
            await journal.append(b"dur", -1, [b"a"])
        assert journal.partitions() == []
    with pytest.raises(JournalClosed):
        await journal.append(b"dur", 0, [b"late"])


async def test_close_drains_queued_appends(tmp_path: Path, kit) -> None:
    io = kit.BlockingFsyncIO()
    results = []

    async def release_later() -> None:
        await trio.sleep(0.05)
        io.block = False
        io.release.set()

    async with (
        trio.open_nursery() as nursery,
        open_journal(tmp_path, JournalConfig(), file_io=io) as journal,
    ):

        async def one(i: int) -> None:
            results.append((await journal.append(b"dur", 0, [b"%d" % i])).base_offset)

        await journal.append(b"dur", 0, [b"x"])
        io.block = True
        nursery.start_soon(one, 0)
        await trio.to_thread.run_sync(io.entered.wait)
        for i in range(1, 10):
            nursery.start_soon(one, i)
        while journal.pending_bytes < 10 * 4:  # noqa: ASYNC110 (no event to wait on)
            await trio.sleep(0.001)
        nursery.start_soon(release_later)
    # leaving the block closed the journal: everything queued was written first
    assert sorted(results) == list(range(1, 11))
    assert hwm_file(tmp_path).clean


def test_config_validation() -> None:
    for field, value in [
        ("segment_bytes", 0),
        ("segment_age_s", -1),
        ("index_interval_bytes", 1.5),
        ("fsync_interval_ms", 0),
        ("max_batch_messages", 1 << 32),
        ("max_record_bytes", 1 << 33),
        ("tail_poll_interval_s", 0),
        ("io_threads", 0),
        ("durability", "fsync"),
    ]:
        with pytest.raises(ValueError, match=field):
            JournalConfig(**{field: value})


def test_open_files_are_released(tmp_path: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))

    async def main() -> None:
        async with open_journal(tmp_path, JournalConfig()) as journal:
            for c in range(5):
                await journal.append(b"c%d" % c, 0, [b"x"])
            journal.open_reader(PartitionId(b"c0", 0), 0).close()

    trio.run(main)
    assert len(os.listdir("/proc/self/fd")) == before
