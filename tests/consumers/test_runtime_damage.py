"""The consumer runtime at damage in the middle of a partition: it delivers every message before
the damage, is held there, reports and counts it, and goes on by itself after ``repair``, which
it learns of without a restart; the offsets repair cut are skipped, logged and counted."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import trio
import trio.lowlevel
from coordinator_contract import wait_until

from consumers import ConsumerRuntime, GroupConfig, LocalCoordinator, LocalCoordinatorConfig
from consumers.source import LocalJournalSource, PartitionReader
from journal import JournalConfig, JournalMessage, PartitionId, open_journal, repair

PID = PartitionId(b"web", 0)


class OffsetSink:
    """Keeps the offsets and messages delivered."""

    def __init__(self) -> None:
        self.offsets: list[int] = []
        self.messages: list[bytes] = []

    async def write(self, pid: PartitionId, messages: Sequence[JournalMessage]) -> None:
        await trio.lowlevel.checkpoint()
        self.offsets += [m.offset for m in messages]
        self.messages += [m.message for m in messages]

    def metrics(self) -> dict[str, int]:
        return {}

    async def aclose(self) -> None:
        pass


def quick_group(backoff_max_s: float) -> GroupConfig:
    """Group "g" on category web, with short waits and retries starting at 10 ms."""
    return GroupConfig(
        name="g",
        categories=("web",),
        batch_wait_s=0.01,
        commit_interval_s=0.05,
        discover_interval_s=0.05,
        backoff_initial_s=0.01,
        backoff_max_s=backoff_max_s,
    )


def local_coordinator(tmp_path: Path) -> LocalCoordinator:
    return LocalCoordinator(
        LocalCoordinatorConfig(state_dir=tmp_path / "state", rescan_interval_s=0.05), "g", "m1"
    )


async def damaged_journal(directory: Path) -> tuple[int, int]:
    """110 messages in batches of 10, a byte flipped at 500; returns the high-water mark and
    the first offset of the damaged batch."""
    async with open_journal(directory, JournalConfig()) as journal:
        for b in range(11):
            await journal.append(b"web", 0, [b"m%03d" % (b * 10 + k) for k in range(10)])
        hwm = journal.high_water_mark(PID)
    segment = directory / "web" / "0" / f"{0:020d}.log"
    data = bytearray(segment.read_bytes())
    batch = len(data) // 11
    data[500] ^= 0xFF
    segment.write_bytes(bytes(data))
    return hwm, 500 // batch * 10


async def test_damage_holds_the_partition_after_what_precedes_it_until_repair(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal_dir = tmp_path / "journal"
    hwm, damaged = await damaged_journal(journal_dir)
    group = quick_group(backoff_max_s=0.05)
    coordinator = local_coordinator(tmp_path)
    sink = OffsetSink()
    runtime = ConsumerRuntime(journal_dir, group, coordinator, sink, journal_config=JournalConfig())
    async with trio.open_nursery() as nursery:
        await nursery.start(runtime.serve)
        await wait_until(lambda: runtime.metrics()["read errors"] >= 3, 10, "read errors")
        # everything before the damage is delivered (once), nothing after it
        assert sink.offsets == list(range(damaged))
        [damage] = runtime.damaged()
        assert (damage.pid, damage.offset) == (PID, damaged)
        assert damage.file == journal_dir / "web" / "0" / f"{0:020d}.log"
        assert damage.position <= 500 and damage.reason == "crc mismatch"
        assert "pipeline journal repair -c web -p 0" in damage.describe()
        assert runtime.metrics()["partitions"]["web/0"]["damage"] == damage.describe()
        assert any("journal repair" in str(getattr(r, "repair", "")) for r in caplog.records)

        # the operator repairs (no writer runs; the member keeps running)
        result = await trio.to_thread.run_sync(repair, journal_dir, PID)
        assert result.gap == (damaged, hwm)
        salvaged = list(range(hwm, result.next_offset))
        assert len(salvaged) == result.salvaged_messages == hwm - damaged - 10

        await wait_until(lambda: sink.offsets[-1:] == salvaged[-1:], 10, "the salvaged messages")
        assert sink.offsets == [*range(damaged), *salvaged]  # in order, nothing twice
        assert sink.messages[damaged:] == [b"m%03d" % n for n in range(damaged + 10, hwm)]
        assert runtime.damaged() == []
        assert runtime.metrics()["skipped messages"] == hwm - damaged
        skipped = [r for r in caplog.records if getattr(r, "reason", None) == "cut by repair"]
        assert any(getattr(r, "start", None) == damaged for r in skipped)
        await wait_until(
            lambda: runtime.metrics()["partitions"]["web/0"]["committed"] == result.next_offset,
            10,
            "the commit after the salvaged messages",
        )
        runtime.stop()


class FlakySource(LocalJournalSource):
    """The journal's files, but the first ``opens_failing`` opens fail, and a reader fails
    once when it reaches ``fail_at``."""

    def __init__(self, directory: Path, opens_failing: int, fail_at: int) -> None:
        super().__init__(directory, JournalConfig())
        self.opens_failing = opens_failing
        self.fail_at: int | None = fail_at

    async def open_reader(self, pid: PartitionId, offset: int) -> PartitionReader:
        if self.opens_failing > 0:
            self.opens_failing -= 1
            raise OSError("the disk hiccupped")
        return FlakyReader(await super().open_reader(pid, offset), self)


class FlakyReader:
    def __init__(self, reader: PartitionReader, source: FlakySource) -> None:
        self._reader = reader
        self._source = source
        self.skipped = reader.skipped
        self.skip_reasons = reader.skip_reasons

    @property
    def position(self) -> int:
        return self._reader.position

    def high_water_mark(self) -> int:
        return self._reader.high_water_mark()

    def _check(self) -> None:
        if self._source.fail_at is not None and self._reader.position >= self._source.fail_at:
            self._source.fail_at = None
            raise OSError("the disk hiccupped again")

    def read(self, max_messages: int = 1000, max_bytes: int = 1 << 20) -> list[JournalMessage]:
        self._check()
        return self._reader.read(min(max_messages, 5), max_bytes)

    async def read_wait(
        self, max_messages: int = 1000, max_bytes: int = 1 << 20
    ) -> list[JournalMessage]:
        self._check()
        return await self._reader.read_wait(min(max_messages, 5), max_bytes)

    def close(self) -> None:
        self._reader.close()


async def test_a_new_read_failure_after_progress_starts_from_the_shortest_delay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal_dir = tmp_path / "journal"
    async with open_journal(journal_dir, JournalConfig()) as journal:
        await journal.append(b"web", 0, [b"m%02d" % n for n in range(20)])
    group = quick_group(backoff_max_s=10.0)
    coordinator = local_coordinator(tmp_path)
    sink = OffsetSink()
    source = FlakySource(journal_dir, opens_failing=6, fail_at=10)
    runtime = ConsumerRuntime(journal_dir, group, coordinator, sink, source=source)
    with caplog.at_level("ERROR", logger="consumers.runtime"):
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.serve)
            await wait_until(lambda: len(sink.offsets) == 20, 20, "every message delivered")
            nursery.cancel_scope.cancel()
    delays = [r.delay_s for r in caplog.records if r.getMessage().startswith("cannot read")]
    assert len(delays) == 7, delays
    # Six failed opens in a row back off up to 0.32 s; the failure after ten messages were
    # delivered is a new incident, retried after the first delay again (0.64 s otherwise).
    assert 0.16 <= delays[5] <= 0.32
    assert delays[6] <= 0.01
    assert sink.offsets == list(range(20))
