"""Opening a journal on a full disk: the index is a hint, so failing to rewrite it refuses
nothing; what does need space (cutting a torn tail aside) makes the partition unavailable for
now, and it opens by itself once space is back.  No temporary or half-written file stays, and
every log line names its file."""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

from journal import (
    FileIO,
    JournalConfig,
    JournalFull,
    PartitionId,
    open_journal,
    open_reader,
    verify,
)
from journal.fileio import write_file_atomic
from journal.format import decode_index

PID = PartitionId(b"full", 0)
OTHER = PartitionId(b"other", 0)


class FullDisk(FileIO):
    """Every write that needs space fails with ENOSPC while ``full`` (none stores a byte)."""

    def __init__(self) -> None:
        self.full = False

    def pwritev(self, fd: int, buffers: Sequence[bytes | memoryview], offset: int) -> int:
        if self.full:
            raise OSError(errno.ENOSPC, "injected: no space left on device")
        return super().pwritev(fd, buffers, offset)


def part(directory: Path, pid: PartitionId = PID) -> Path:
    return directory / pid.category.decode() / str(pid.partition)


def leftovers(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if ".tmp-" in p.name)


def read_all(directory: Path, pid: PartitionId = PID) -> list[bytes]:
    with open_reader(directory, pid, 0) as reader:
        out = []
        while chunk := reader.read():
            out += [m.message for m in chunk]
        return out


def named_files(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    """The ``file`` of every journal line at ``level`` or above; fails on a line without one."""
    files = []
    for record in caplog.records:
        if record.name.startswith("journal") and record.levelno >= level:
            file = getattr(record, "file", None)
            assert file, f"{record.getMessage()!r} names no file"
            files.append(str(file))
    return files


CONFIG = JournalConfig(index_interval_bytes=1, transient_retry_interval_s=0.05)


async def written(directory: Path, n: int = 5) -> None:
    async with open_journal(directory, CONFIG) as journal:
        for i in range(n):
            await journal.append(PID.category, 0, [b"m%d" % i])
            await journal.append(OTHER.category, 0, [b"o%d" % i])


def test_write_file_atomic_leaves_nothing_behind_and_names_the_file(tmp_path: Path) -> None:
    io = FullDisk()
    target = tmp_path / "hwm"
    target.write_bytes(b"old")
    io.full = True
    with pytest.raises(OSError) as caught:
        write_file_atomic(io, target, b"new")
    assert caught.value.errno == errno.ENOSPC
    assert caught.value.filename == str(target)
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


async def test_an_index_that_cannot_be_rewritten_refuses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await written(tmp_path)
    index = next(part(tmp_path).glob("*.index"))
    on_disk = index.read_bytes()
    index.write_bytes(on_disk[: len(on_disk) // 2 + 3])  # damaged: recovery must rewrite it
    io = FullDisk()
    io.full = True
    caplog.set_level(logging.INFO)
    async with open_journal(tmp_path, CONFIG, file_io=io) as journal:
        assert journal.failures() == []
        assert leftovers(tmp_path) == []
        assert str(index) in named_files(caplog)
        # What is left of the index matches the log exactly, so the writer appends after it.
        entries, damaged = decode_index(index.read_bytes(), 0, 1 << 30)
        assert not damaged and len(entries) == 2
        io.full = False
        for i in range(5, 8):
            assert (await journal.append(PID.category, 0, [b"m%d" % i])).base_offset == i
        # Seeks use the index: every start offset reads on to the end.
        for start in range(8):
            with journal.open_reader(PID, start) as reader:
                assert [m.offset for m in reader.read()] == list(range(start, 8))
    assert verify(tmp_path) == []
    assert read_all(tmp_path) == [b"m%d" % i for i in range(8)]


async def test_a_torn_tail_on_a_full_disk_waits_for_space_then_opens(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await written(tmp_path)
    segment = next(part(tmp_path).glob("*.log"))
    with segment.open("ab") as f:
        f.write(b"\x07torn tail" * 10)  # cut aside at recovery: that copy needs space
    io = FullDisk()
    io.full = True
    caplog.set_level(logging.INFO)
    async with open_journal(tmp_path, CONFIG, file_io=io) as journal:
        [failure] = journal.failures()
        assert failure.pid == PID and failure.transient
        assert str(segment.with_name(segment.name + ".torn-1")) in str(failure.error)
        assert named_files(caplog, logging.ERROR) == [
            str(segment.with_name(f"{segment.name}.torn-1"))
        ]
        with pytest.raises(JournalFull):
            await journal.append(PID.category, 0, [b"refused"])
        await trio.sleep(0.2)  # retries meanwhile, still full: quietly
        assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
        assert list(part(tmp_path).glob("*.torn-*")) == []  # no half copy stays
        assert leftovers(tmp_path) == []

        io.full = False  # space is back
        with trio.fail_after(5):
            while journal.failures():  # noqa: ASYNC110 (the journal retries on its own)
                await trio.sleep(0.01)
        assert (await journal.append(PID.category, 0, [b"m5"])).base_offset == 5
        assert (await journal.append(OTHER.category, 0, [b"o5"])).base_offset == 5
    assert segment.with_name(segment.name + ".torn-1").read_bytes() == b"\x07torn tail" * 10
    assert read_all(tmp_path) == [b"m%d" % i for i in range(6)]
    assert leftovers(tmp_path) == []
    assert verify(tmp_path) == []


async def test_temporary_files_of_dead_processes_are_removed(tmp_path: Path) -> None:
    await written(tmp_path, 1)
    gone = await trio.run_process(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_stdout=True
    )
    dead_pid = int(gone.stdout)
    stale = [
        part(tmp_path) / f"00000000000000000000.index.tmp-{dead_pid}",
        part(tmp_path) / f"hwm.tmp-{dead_pid}",
        part(tmp_path).parent / f"category.tmp-{dead_pid}",
    ]
    live = part(tmp_path) / f"00000000000000000000.index.tmp-{os.getppid()}"
    for path in [*stale, live]:
        path.write_bytes(b"half written")
    async with open_journal(tmp_path, CONFIG) as journal:
        assert journal.failures() == []
    assert [p for p in stale if p.exists()] == []
    assert live.exists()  # its process may still be writing it
