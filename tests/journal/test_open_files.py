"""The bound on open partition files: idle writers close theirs and reopen on demand, and
everything the journal promises still holds (dense offsets, group commit, readers here and in
other processes, recovery); running out of descriptors is a passing refusal, not a failure."""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

from journal import (
    CategoryLimitReached,
    Durability,
    JournalConfig,
    PartitionId,
    TooManyOpenFiles,
    open_journal,
    open_reader,
    verify,
)
from journal.open_files import FILES_PER_WRITER

N_PARTITIONS = 9
LIMIT = 2


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def pid(i: int) -> PartitionId:
    return PartitionId(b"cat%d" % (i % 3), i // 3)


def message(i: int, k: int) -> bytes:
    return b"p%d-m%03d" % (i, k)


def read_back(directory: Path, p: PartitionId) -> list[tuple[int, bytes]]:
    """As another process reads it: through the hwm file, never the writer."""
    with open_reader(directory, p, 0) as reader:
        out = []
        while chunk := reader.read():
            out += [(m.offset, m.message) for m in chunk]
        return out


@contextmanager
def no_descriptors_left() -> Iterator[None]:
    """Every open(2) fails with EMFILE, even after descriptors are closed: the soft limit is 3,
    and 0, 1 and 2 are open."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for fd in (0, 1, 2):
        os.fstat(fd)  # open, or this would not run out
    resource.setrlimit(resource.RLIMIT_NOFILE, (3, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("durability", list(Durability), ids=lambda d: d.value)
async def test_many_partitions_through_few_open_files(
    tmp_path: Path, durability: Durability, kit
) -> None:
    # Three records a segment: rolls happen while files come and go.  One I/O thread: only
    # one writer is inside a call at a time, so the bound holds at every moment.
    config = JournalConfig(
        io_threads=1,
        max_open_partitions=LIMIT,
        durability=durability,
        fsync_interval_ms=1,
        segment_bytes=3 * kit.record_size([message(0, 0)]),
        index_interval_bytes=1,
    )
    base = open_descriptors()
    async with open_journal(tmp_path, config) as journal:
        for k in range(12):
            for i in range(N_PARTITIONS):
                p = pid(i)
                result = await journal.append(p.category, p.partition, [message(i, k)])
                assert result.base_offset == k  # dense, whatever happened to the files
            assert journal.open_partition_files <= LIMIT * FILES_PER_WRITER
            # The lock file, and at most LIMIT writers' files.
            assert open_descriptors() <= base + 1 + LIMIT * FILES_PER_WRITER
        assert journal.reopened_partitions >= N_PARTITIONS
        await trio.sleep(0.05)  # INTERVAL: the periodic syncs publish the rest
        if durability is not Durability.NONE:
            for i in range(N_PARTITIONS):
                assert read_back(tmp_path, pid(i)) == [(k, message(i, k)) for k in range(12)]
    # After close (a clean checkpoint written through reopened files) and across a restart.
    assert verify(tmp_path) == []
    for i in range(N_PARTITIONS):
        assert read_back(tmp_path, pid(i)) == [(k, message(i, k)) for k in range(12)]
    async with open_journal(tmp_path, config) as journal:
        for i in range(N_PARTITIONS):
            p = pid(i)
            assert (await journal.append(p.category, p.partition, [b"after"])).base_offset == 12


async def test_group_commit_and_in_process_readers_survive_eviction(tmp_path: Path, kit) -> None:
    io = kit.CountingIO(delay_s=0.002)
    config = JournalConfig(max_open_partitions=1)
    async with open_journal(tmp_path, config, file_io=io) as journal:
        hot, other = PartitionId(b"hot", 0), PartitionId(b"other", 0)
        await journal.append(b"hot", 0, [b"warm"])
        seen: list[bytes] = []

        async def follow() -> None:
            with journal.open_reader(hot, 1) as reader:
                while len(seen) < 40:
                    seen.extend(m.message for m in await reader.read_wait())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            for round_ in range(4):
                # Evict the hot partition's files, then send it a burst of concurrent appends.
                await journal.append(b"other", 0, [b"x%d" % round_])
                before = io.fdatasyncs

                async def one(i: int, r: int = round_) -> None:
                    await journal.append(b"hot", 0, [b"r%d-%d" % (r, i)])

                async with trio.open_nursery() as burst:
                    for i in range(10):
                        burst.start_soon(one, i)
                # One reopen, then group commit as ever: far fewer fdatasyncs than appends.
                assert io.fdatasyncs - before < 10
        assert len(seen) == 40
        assert journal.high_water_mark(other) == 4
    assert [m for _, m in read_back(tmp_path, hot)][1:] == seen


async def test_out_of_descriptors_refuses_the_batch_and_the_writer_goes_on(
    tmp_path: Path,
) -> None:
    config = JournalConfig(max_open_partitions=1)
    async with open_journal(tmp_path, config) as journal:
        await journal.append(b"a", 0, [b"a0"])
        await journal.append(b"b", 0, [b"b0"])  # closes a's files
        with no_descriptors_left(), pytest.raises(TooManyOpenFiles) as caught:
            await journal.append(b"a", 0, [b"lost"])
        assert caught.value.pid == PartitionId(b"a", 0)
        with no_descriptors_left(), pytest.raises(TooManyOpenFiles):
            await journal.append(b"new", 0, [b"lost"])  # creating a partition, too
        assert journal.failures() == []
        assert (await journal.append(b"a", 0, [b"a1"])).base_offset == 1
        assert (await journal.append(b"new", 0, [b"n0"])).base_offset == 0
    assert [m for _, m in read_back(tmp_path, PartitionId(b"a", 0))] == [b"a0", b"a1"]


async def test_a_journal_with_more_partitions_than_descriptors_opens(tmp_path: Path) -> None:
    config = JournalConfig(max_open_partitions=4)
    async with open_journal(tmp_path, config) as journal:
        for i in range(60):
            await journal.append(b"many%d" % i, 0, [b"m"])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Fewer descriptors left than the journal has partitions (three files each).
    resource.setrlimit(resource.RLIMIT_NOFILE, (open_descriptors() + 40, hard))
    try:
        async with open_journal(tmp_path, config) as journal:
            assert len(journal.partitions()) == 60
            for i in range(60):
                assert (await journal.append(b"many%d" % i, 0, [b"n"])).base_offset == 1
            assert journal.failures() == []
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_categories_are_bounded(tmp_path: Path) -> None:
    config = JournalConfig(max_categories=3)
    async with open_journal(tmp_path, config) as journal:
        await journal.append(b"one", 0, [b"x"])
        assert journal.claim_category(b"two")  # claimed before its first append
        await journal.append(b"three", 0, [b"x"])
        assert not journal.claim_category(b"four")
        with pytest.raises(CategoryLimitReached) as caught:
            await journal.append(b"four", 0, [b"x"])
        assert (caught.value.category, caught.value.limit) == (b"four", 3)
        await journal.append(b"two", 0, [b"x"])
        await journal.append(b"one", 1, [b"x"])  # a new partition of a known category is fine
        assert journal.claim_category(b"catch-all", beyond_limit=True)
        await journal.append(b"catch-all", 0, [b"x"])
    async with open_journal(tmp_path, config) as journal:
        assert journal.category_count == 4  # what is on disk counts, even over the limit
        assert not journal.claim_category(b"five")
        await journal.append(b"three", 0, [b"y"])
