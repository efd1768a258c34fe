"""The consumer runtime against a real journal, the local coordinator and real or fake sinks."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel
from coordinator_contract import wait_until

from consumers import (
    CategoryMatcher,
    ConsumerRuntime,
    CoordinationError,
    FileSink,
    FileSinkConfig,
    GroupConfig,
    Lease,
    LocalCoordinator,
    LocalCoordinatorConfig,
    Sink,
    SinkError,
)
from journal import Journal, JournalConfig, JournalMessage, PartitionId, open_journal


def fast_group(categories: tuple[str, ...] = ("web*", "api"), **overrides: Any) -> GroupConfig:
    settings: dict[str, Any] = {
        "name": "g",
        "categories": categories,
        "batch_wait_s": 0.01,
        "commit_interval_s": 0.05,
        "discover_interval_s": 0.05,
    }
    settings.update(overrides)
    return GroupConfig(**settings)


class RecordingSink:
    """Keeps every delivered message; fails the first ``failures`` writes with SinkError."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.delivered: dict[PartitionId, list[int]] = {}
        self.batches = 0
        self.in_write = 0

    async def write(self, pid: PartitionId, messages: Sequence[JournalMessage]) -> None:
        self.in_write += 1
        try:
            await trio.lowlevel.checkpoint()
            if self.failures:
                self.failures -= 1
                raise SinkError("recording", pid, "injected failure")
            self.delivered.setdefault(pid, []).extend(m.offset for m in messages)
            self.batches += 1
        finally:
            self.in_write -= 1

    def metrics(self) -> dict[str, int]:
        return {"batches": self.batches}

    async def aclose(self) -> None:
        pass

    def count(self) -> int:
        return sum(map(len, self.delivered.values()))


async def produce(journal: Journal, category: bytes, partition: int, count: int) -> None:
    for start in range(0, count, 50):
        batch = [
            f"{category.decode()}-{partition}-{n}".encode()
            for n in range(start, min(count, start + 50))
        ]
        await journal.append(category, partition, batch)


class Member:
    def __init__(self, runtime: ConsumerRuntime, scope: trio.CancelScope) -> None:
        self.runtime = runtime
        self.scope = scope


@asynccontextmanager
async def running(
    tmp_path: Path,
    sink: Sink,
    *,
    member_id: str = "m1",
    group: GroupConfig | None = None,
) -> AsyncIterator[ConsumerRuntime]:
    """A runtime serving until the block ends; then it leaves gracefully."""
    group = group or fast_group()
    coordinator = LocalCoordinator(
        LocalCoordinatorConfig(state_dir=tmp_path / "state", rescan_interval_s=0.05),
        group.name,
        member_id,
    )
    runtime = ConsumerRuntime(
        tmp_path / "journal", group, coordinator, sink, journal_config=JournalConfig()
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(runtime.serve)
        yield runtime
        runtime.stop()


def admin(tmp_path: Path) -> LocalCoordinator:
    return LocalCoordinator(LocalCoordinatorConfig(state_dir=tmp_path / "state"), "g", "admin")


def file_lines(root: Path, category: str) -> list[str]:
    directory = root / category
    names = sorted(
        n for n in os.listdir(directory) if not n.startswith(".") and "_current" not in n
    )
    return b"".join((directory / n).read_bytes() for n in names).decode().split("\n")[:-1]


def assert_in_order_at_least_once(
    lines: list[str], category: str, partition: int, count: int
) -> None:
    mine = [
        int(line.rsplit("-", 1)[1]) for line in lines if line.startswith(f"{category}-{partition}-")
    ]
    assert set(mine) == set(range(count)), "a message is missing"
    # In order, except that a redelivered tail may start again from an earlier offset.
    for previous, current in itertools.pairwise(mine):
        assert current == previous + 1 or current <= previous


async def test_every_message_reaches_the_file_sink_in_order_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    async with open_journal(tmp_path / "journal", JournalConfig()) as journal:
        for partition in range(2):
            await produce(journal, b"web", partition, 300)
        await produce(journal, b"api", 0, 100)
        await produce(journal, b"other", 0, 10)  # not the group's
        sink = FileSink(FileSinkConfig(file_path=out, add_newlines=True, max_size=4000))
        async with running(tmp_path, sink) as runtime:
            await produce(journal, b"web", 0, 0)
            await produce(journal, b"webnew", 0, 40)  # a category appearing while running
            await wait_until(
                lambda: runtime.metrics()["messages consumed"] == 740, 10, "all consumed"
            )
            metrics = runtime.metrics()
            assert metrics["partitions owned"] == 4
            assert all(p["lag"] == 0 for p in metrics["partitions"].values())
            assert metrics["batches"] >= 4
            assert metrics["sink"]["messages"] == 740
        await sink.aclose()
        assert not (out / "other").exists()
        web = file_lines(out, "web")
        assert len(web) == 600  # graceful stop committed everything: no duplicates
        for partition in range(2):
            assert_in_order_at_least_once(web, "web", partition, 300)
        assert_in_order_at_least_once(file_lines(out, "api"), "api", 0, 100)
        assert_in_order_at_least_once(file_lines(out, "webnew"), "webnew", 0, 40)
        offsets = admin(tmp_path)
        assert await offsets.committed(PartitionId(b"web", 0)) == 300
        assert await offsets.committed(PartitionId(b"api", 0)) == 100
        assert await offsets.committed(PartitionId(b"other", 0)) is None

        # A restart resumes from the committed offsets: only the new messages are written.
        for n in range(300, 350):
            await journal.append(b"web", 1, [f"web-1-{n}".encode()])
        sink = FileSink(FileSinkConfig(file_path=out, add_newlines=True, max_size=4000))
        async with running(tmp_path, sink, member_id="m2") as runtime:
            await wait_until(lambda: runtime.metrics()["messages consumed"] == 50, 10)
        await sink.aclose()
        web = file_lines(out, "web")
        assert len(web) == 650
        assert_in_order_at_least_once(web, "web", 1, 350)
        assert await offsets.committed(PartitionId(b"web", 1)) == 350


async def test_sink_errors_pause_the_partition_and_skip_nothing(tmp_path: Path) -> None:
    async with open_journal(tmp_path / "journal", JournalConfig()) as journal:
        await produce(journal, b"api", 0, 200)
        sink = RecordingSink(failures=3)
        group = fast_group(("api",), batch_messages=64, backoff_initial_s=0.01)
        async with running(tmp_path, sink, group=group) as runtime:
            await wait_until(lambda: sink.count() == 200, 10)
            assert runtime.metrics()["sink retries"] == 3
        assert sink.delivered[PartitionId(b"api", 0)] == list(range(200))
        assert await admin(tmp_path).committed(PartitionId(b"api", 0)) == 200


async def test_batches_respect_count_and_bytes(tmp_path: Path) -> None:
    async with open_journal(tmp_path / "journal", JournalConfig()) as journal:
        await journal.append(b"api", 0, [b"x" * 100] * 50)
        sizes: list[tuple[int, int]] = []

        class Sizes(RecordingSink):
            async def write(self, pid: PartitionId, messages: Sequence[JournalMessage]) -> None:
                sizes.append((len(messages), sum(len(m.message) for m in messages)))
                await super().write(pid, messages)

        sink = Sizes()
        group = fast_group(("api",), batch_messages=20, batch_bytes=1500)
        async with running(tmp_path, sink, group=group):
            await wait_until(lambda: sink.count() == 50, 10)
        assert all(n <= 20 and b <= 1500 for n, b in sizes)
        assert sizes[0] == (15, 1500)


async def test_crash_redelivers_only_the_uncommitted_tail(tmp_path: Path) -> None:
    async with open_journal(tmp_path / "journal", JournalConfig()) as journal:
        await produce(journal, b"api", 0, 100)
        # The first batch is committed at once, the rest only after an hour: a crash before
        # then leaves offsets 10..99 delivered but uncommitted.
        group = fast_group(
            ("api",),
            batch_messages=10,
            commit_interval_s=3600,
        )
        first = RecordingSink()
        with trio.CancelScope() as scope:
            async with running(tmp_path, first, group=group):
                await wait_until(lambda: first.count() == 100, 10)
                scope.cancel()  # abrupt: no graceful commit
        assert await admin(tmp_path).committed(PartitionId(b"api", 0)) == 10
        second = RecordingSink()
        async with running(tmp_path, second, group=group, member_id="m2"):
            await wait_until(lambda: second.count() == 90, 10)
        assert second.delivered[PartitionId(b"api", 0)] == list(range(10, 100))
        assert await admin(tmp_path).committed(PartitionId(b"api", 0)) == 100


async def test_forced_reset_fences_the_owner_which_restarts_from_the_reset(tmp_path: Path) -> None:
    pid = PartitionId(b"api", 0)
    async with open_journal(tmp_path / "journal", JournalConfig()) as journal:
        await produce(journal, b"api", 0, 50)
        sink = RecordingSink()
        group = GroupConfig(name="g", categories=("api",))
        async with running(tmp_path, sink, group=group) as runtime:
            await wait_until(lambda: sink.count() == 50, 10)
            await wait_until(
                lambda: runtime.metrics()["partitions"][str(pid)]["committed"] == 50, 10
            )
            await admin(tmp_path).reset(pid, 20, force=True)
            await wait_until(lambda: sink.count() == 80, 10, "redelivery from the reset offset")
            assert runtime.metrics()["lost"] == 1
        assert sink.delivered[pid] == list(range(50)) + list(range(20, 50))
        assert await admin(tmp_path).committed(pid) == 50


async def test_lost_ownership_stops_writing_at_once(tmp_path: Path) -> None:
    pid = PartitionId(b"api", 0)
    async with open_journal(tmp_path / "journal", JournalConfig()) as journal:
        await produce(journal, b"api", 0, 10)
        release = trio.Event()

        class Stuck(RecordingSink):
            async def write(self, pid: PartitionId, messages: Sequence[JournalMessage]) -> None:
                self.in_write += 1
                try:
                    await release.wait()
                finally:
                    self.in_write -= 1

        sink = Stuck()
        group = fast_group(("api",))
        async with running(tmp_path, sink, group=group) as runtime:
            await wait_until(lambda: sink.in_write == 1, 10)
            # What the coordinator does when its session is suspended or lost:
            runtime.lost(Lease(pid, runtime.metrics()["partitions"][str(pid)]["epoch"]))
            with trio.fail_after(1):
                while sink.in_write:
                    await trio.lowlevel.checkpoint()
            assert runtime.metrics()["partitions"] == {}
            release.set()


def test_category_patterns() -> None:
    match: Callable[[bytes], bool] = CategoryMatcher(["web", "api*"])
    assert match(b"web") and match(b"api") and match(b"api.v2")
    assert not match(b"webx") and not match(b"other")
    assert CategoryMatcher(["default"])(b"\xff\x00anything")
    assert CategoryMatcher(["*"])(b"")


def test_group_config_validation() -> None:
    with pytest.raises(ValueError, match="categories"):
        GroupConfig(name="g", categories=("a*b",))
    with pytest.raises(ValueError, match="sink"):
        GroupConfig(name="g", sink="kafka")
    with pytest.raises(ValueError, match="name"):
        GroupConfig(name="")


class FlakyCoordinator(LocalCoordinator):
    """Reading a committed offset fails ``failures`` times, as with ZooKeeper unreachable."""

    failures = 2

    async def committed(self, pid: PartitionId) -> int | None:
        if self.failures:
            self.failures -= 1
            raise CoordinationError("connection loss (injected)")
        return await super().committed(pid)


async def test_an_unreadable_committed_offset_pauses_the_partition_only(tmp_path: Path) -> None:
    async with open_journal(tmp_path / "journal", JournalConfig()) as journal:
        await produce(journal, b"web", 0, 100)
        group = fast_group(backoff_initial_s=0.01)
        coordinator = FlakyCoordinator(
            LocalCoordinatorConfig(state_dir=tmp_path / "state", rescan_interval_s=0.05), "g", "m1"
        )
        sink = RecordingSink()
        runtime = ConsumerRuntime(
            tmp_path / "journal", group, coordinator, sink, journal_config=JournalConfig()
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.serve)
            await wait_until(lambda: sink.count() == 100, 10, "consumed after the failures")
            runtime.stop()
    assert coordinator.failures == 0
    assert sink.delivered[PartitionId(b"web", 0)] == list(range(100))
