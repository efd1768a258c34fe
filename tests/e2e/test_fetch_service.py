"""The fetch service of a running daemon, read with the fetch client and the remote reader.

Each test runs ``serve_pipeline`` with ``[fetch] port = 0`` in this trio run and checks one edge:
the tail (long poll, woken by the append), segment boundaries (tiny segments), retention
deleting under a reader, a torn tail recovered, offsets out of range, garbage on the port.
The remote reader must read exactly what a local reader of the same files reads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import trio

from consumers import RemoteReadConfig, open_remote_source
from journal import JournalCorrupt, OffsetOutOfRange, PartitionId, RetentionPolicy
from scribe_compat import (
    AsyncFetchClient,
    AsyncScribeClient,
    FetchErrorCode,
    FetchRefused,
    FetchRequest,
    LogEntry,
    ResultCode,
)

from .conftest import make_config, read_partition, running_daemon

PID = PartitionId(b"fetched", 0)


def fetch_config(journal_dir: Path, **journal: Any) -> Any:
    return make_config(journal_dir, fetch={"port": 0}, journal=journal)


async def log(daemon: Any, messages: list[bytes], category: bytes = b"fetched") -> None:
    async with await AsyncScribeClient.connect(*daemon.address) as client:
        entries = [LogEntry(category=category, message=m) for m in messages]
        assert await client.log(entries) is ResultCode.OK


async def fetch_client(daemon: Any) -> AsyncFetchClient:
    return await AsyncFetchClient.connect(*daemon.fetch_server.address, timeout=10)


async def read_remote(daemon: Any, count: int, offset: int = 0) -> list[Any]:
    """``count`` messages of PID from ``offset`` through the remote reader."""
    host, port = daemon.fetch_server.address
    async with open_remote_source(host, port) as source:
        reader = await source.open_reader(PID, offset)
        got: list[Any] = []
        with trio.fail_after(20):
            while len(got) < count:
                got += await reader.read_wait(100, 1 << 20)
        reader.close()
        return got


def same(remote: list[Any], local: list[Any]) -> None:
    assert [(m.offset, m.message, m.timestamp_us, m.metadata) for m in remote] == [
        (m.offset, m.message, m.timestamp_us, m.metadata) for m in local
    ]


async def test_describe_names_the_journal_and_its_partitions(tmp_path: Path) -> None:
    async with running_daemon(fetch_config(tmp_path / "j")) as daemon:
        await log(daemon, [b"a", b"b", b"c"])
        async with await fetch_client(daemon) as client:
            description = await client.describe()
        assert description.journal_id == str(daemon.service.journal.journal_id)
        (state,) = description.partitions
        assert (state.category, state.partition, state.earliest, state.high_water_mark) == (
            b"fetched",
            0,
            0,
            3,
        )


async def test_a_fetch_at_the_tail_waits_for_the_append_and_no_longer(tmp_path: Path) -> None:
    async with running_daemon(fetch_config(tmp_path / "j")) as daemon:
        await log(daemon, [b"first"])
        async with await fetch_client(daemon) as client, trio.open_nursery() as nursery:
            empty = await client.fetch(FetchRequest(b"fetched", 0, 1, 0, 100, 0))
            assert empty.records == b"" and empty.high_water_mark == 1
            started = trio.current_time()
            nursery.start_soon(_log_later, daemon, 0.3)
            result = await client.fetch(FetchRequest(b"fetched", 0, 1, 0, 100, 8000))
            waited = trio.current_time() - started
        assert result.high_water_mark == 2 and result.next_offset == 2 and result.records
        assert 0.25 <= waited < 3, waited  # woken by the append, not by the 8 s timeout
        # With nothing coming, a fetch at the tail answers empty after its (capped) wait.
        async with await fetch_client(daemon) as client:
            started = trio.current_time()
            idle = await client.fetch(FetchRequest(b"fetched", 0, 2, 0, 100, 200))
            assert idle.records == b"" and idle.next_offset == 2
            assert trio.current_time() - started >= 0.19


async def _log_later(daemon: Any, delay: float) -> None:
    await trio.sleep(delay)
    await log(daemon, [b"second"])


async def test_the_remote_reader_crosses_segment_boundaries(tmp_path: Path) -> None:
    journal_dir = tmp_path / "j"
    # Tiny segments: every batch or two rolls a new one.
    async with running_daemon(fetch_config(journal_dir, segment_bytes=4096)) as daemon:
        for i in range(40):
            await log(daemon, [b"%d-%d " % (i, k) * 20 for k in range(5)])
        segments = list((journal_dir / "fetched" / "0").glob("*.log"))
        assert len(segments) >= 4
        local = read_partition(journal_dir, PID)
        same(await read_remote(daemon, 200), local)
        # From an offset inside a batch, too.
        same(await read_remote(daemon, 200 - 77, 77), local[77:])


async def test_offsets_beyond_the_high_water_mark_and_below_the_earliest(tmp_path: Path) -> None:
    journal_dir = tmp_path / "j"
    async with running_daemon(fetch_config(journal_dir, segment_bytes=4096)) as daemon:
        for i in range(30):
            await log(daemon, [b"m%d" % i * 100])
        async with await fetch_client(daemon) as client:
            try:
                await client.fetch(FetchRequest(b"fetched", 0, 31, 0, 10, 0))
                raise AssertionError("fetched beyond the high-water mark")
            except FetchRefused as refused:
                assert refused.code == FetchErrorCode.OFFSET_BEYOND_HIGH_WATER_MARK
                assert refused.high_water_mark == 30
            try:
                await client.fetch(FetchRequest(b"nothing", 0, 0, 0, 10, 0))
                raise AssertionError("fetched an unknown partition")
            except FetchRefused as refused:
                assert refused.code == FetchErrorCode.UNKNOWN_PARTITION
            # Retention deletes the old segments.
            journal = daemon.service.journal
            deleted = journal.apply_retention(
                lambda c: RetentionPolicy(max_bytes=0), lambda p: None
            )
            assert deleted
            earliest = min(int(p.stem) for p in (journal_dir / "fetched" / "0").glob("*.log"))
            try:
                await client.fetch(FetchRequest(b"fetched", 0, 0, 0, 10, 0))
                raise AssertionError("fetched below the earliest offset")
            except FetchRefused as refused:
                assert refused.code == FetchErrorCode.OFFSET_BELOW_EARLIEST
                assert refused.earliest == earliest > 0
        # The reader opened below the earliest raises as a local one does; from there it reads.
        host, port = daemon.fetch_server.address
        async with open_remote_source(host, port) as source:
            try:
                await source.open_reader(PID, 0)
                raise AssertionError("opened below the earliest offset")
            except OffsetOutOfRange as exc:
                assert exc.earliest == earliest
        same(
            await read_remote(daemon, 30 - earliest, earliest),
            read_partition(journal_dir, PID, earliest),
        )


async def test_retention_deleting_under_a_reader_is_a_reported_skip(tmp_path: Path) -> None:
    journal_dir = tmp_path / "j"
    async with running_daemon(fetch_config(journal_dir, segment_bytes=4096)) as daemon:
        for i in range(30):
            await log(daemon, [b"m%d" % i * 100])
        host, port = daemon.fetch_server.address
        # One batch per response, so that the deletion comes between two fetches.
        async with open_remote_source(host, port, RemoteReadConfig(max_bytes=1)) as source:
            reader = await source.open_reader(PID, 0)
            first = reader.read(1, 1 << 20)  # one message of the first response
            assert [m.offset for m in first] == [0]
            daemon.service.journal.apply_retention(
                lambda c: RetentionPolicy(max_bytes=0), lambda p: None
            )
            got: list[Any] = []
            with trio.fail_after(10):
                while not got or got[-1].offset < 29:
                    got += await reader.read_wait(1000, 1 << 20)
            reader.close()
        # What the first response held is delivered; then the deleted range is skipped and
        # reported, and the reader goes on where data continues.
        offsets = [m.offset for m in first + got]
        assert offsets == sorted(set(offsets)) and offsets[-1] == 29
        ((start, end),) = reader.skipped
        assert start == 1 and end == offsets[1]
        assert reader.skip_reasons[start, end] == "missing"


async def test_after_a_torn_tail_recovery_fetches_read_what_was_kept(tmp_path: Path) -> None:
    journal_dir = tmp_path / "j"
    async with running_daemon(fetch_config(journal_dir)) as daemon:
        await log(daemon, [b"kept %d" % i for i in range(10)])
    segment = next((journal_dir / "fetched" / "0").glob("*.log"))
    with segment.open("ab") as f:
        f.write(os.urandom(57))  # a torn write after the last batch
    async with running_daemon(fetch_config(journal_dir)) as daemon:
        assert list(segment.parent.glob("*.torn-*"))  # recovery cut it and kept it aside
        await log(daemon, [b"after %d" % i for i in range(5)])
        remote = await read_remote(daemon, 15)
        same(remote, read_partition(journal_dir, PID))
        assert [m.message for m in remote][9:11] == [b"kept 9", b"after 0"]


async def test_garbage_on_the_fetch_port_leaves_the_server_up(tmp_path: Path) -> None:
    async with running_daemon(fetch_config(tmp_path / "j")) as daemon:
        await log(daemon, [b"x"])
        host, port = daemon.fetch_server.address
        for garbage in (os.urandom(4096), b"\xff\xff\xff\xff", b"GET / HTTP/1.1\r\n\r\n"):
            stream = await trio.open_tcp_stream(host, port)
            await stream.send_all(garbage)
            with trio.move_on_after(5):
                while await stream.receive_some(65536):
                    pass  # until the server closes it
            await stream.aclose()
        async with await fetch_client(daemon) as client:
            result = await client.fetch(FetchRequest(b"fetched", 0, 0, 0, 10, 0))
        assert result.next_offset == 1
        counters = daemon.service.get_counters()
        assert counters["fetch:protocol errors"] >= 2
        assert counters["fetch:requests"] >= 1
        assert counters["fetch:bytes sent"] > 0


async def requests_made(daemon: Any) -> int:
    await trio.sleep(0.2)  # the reader's fetch task runs (or does not) meanwhile
    count: int = daemon.service.get_counters()["fetch:requests"]
    return count


async def test_the_next_fetch_starts_below_half_a_response_and_not_before(tmp_path: Path) -> None:
    journal_dir = tmp_path / "j"
    async with running_daemon(fetch_config(journal_dir)) as daemon:
        for i in range(60):
            await log(daemon, [b"%04d" % i * 250])  # one batch each, all of one size
        (segment,) = (journal_dir / "fetched" / "0").glob("*.log")
        host, port = daemon.fetch_server.address
        # Responses of ten batches, ten messages.
        config = RemoteReadConfig(max_bytes=10 * (segment.stat().st_size // 60))
        async with open_remote_source(host, port, config) as source:
            reader = await source.open_reader(PID, 0)
            assert await requests_made(daemon) == 1
            assert len(reader.read(5, 1 << 20)) == 5  # half is still there: no fetch yet
            assert await requests_made(daemon) == 1
            assert len(reader.read(1, 1 << 20)) == 1  # below half: the next one is on its way
            assert await requests_made(daemon) == 2
            # Fourteen messages decoded now: the reader holds what it has until it runs low.
            assert await requests_made(daemon) == 2
            got = reader.read(1000, 1 << 20)
            assert [m.offset for m in got] == list(range(6, 20))
            reader.close()


async def test_a_read_wait_cancelled_at_its_checkpoint_loses_nothing(tmp_path: Path) -> None:
    async with running_daemon(fetch_config(tmp_path / "j")) as daemon:
        await log(daemon, [b"m%d" % i for i in range(10)])
        host, port = daemon.fetch_server.address
        async with open_remote_source(host, port) as source:
            reader = await source.open_reader(PID, 0)
            with trio.CancelScope() as scope:
                scope.cancel()
                await reader.read_wait(5, 1 << 20)
            assert scope.cancelled_caught and reader.position == 0
            got = await reader.read_wait(100, 1 << 20)
            assert [m.message for m in got] == [b"m%d" % i for i in range(10)]
            reader.close()


async def test_damage_in_fetched_records_is_raised_after_what_came_before_it(
    tmp_path: Path,
) -> None:
    journal_dir = tmp_path / "j"
    async with running_daemon(fetch_config(journal_dir)) as daemon:
        for i in range(3):
            await log(daemon, [b"batch %d message %d" % (i, k) for k in range(4)])
        (segment,) = (journal_dir / "fetched" / "0").glob("*.log")
        size = segment.stat().st_size
        with segment.open("r+b") as f:  # the last byte of the middle batch's payload
            f.seek(2 * size // 3 - 1)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0xFF]))
        host, port = daemon.fetch_server.address
        async with open_remote_source(host, port) as source:
            reader = await source.open_reader(PID, 0)
            got = reader.read(100, 1 << 20)
            assert [m.offset for m in got] == [0, 1, 2, 3]
            with pytest.raises(JournalCorrupt) as caught:
                reader.read(100, 1 << 20)
            assert "crc" in caught.value.reason and f"{port}" in str(caught.value.file)
            with pytest.raises(JournalCorrupt):  # it stays where the damage is
                await reader.read_wait(100, 1 << 20)
            assert reader.position == 4
            reader.close()


async def test_a_damaged_batch_header_is_refused_naming_the_segment_and_byte(
    tmp_path: Path,
) -> None:
    journal_dir = tmp_path / "j"
    async with running_daemon(fetch_config(journal_dir)) as daemon:
        await log(daemon, [b"a", b"b", b"c"])
        (segment,) = (journal_dir / "fetched" / "0").glob("*.log")
        with segment.open("r+b") as f:  # the first batch's length: implausible
            f.write(b"\xff\xff\xff\xff")
        async with await fetch_client(daemon) as client:
            with pytest.raises(FetchRefused) as fetched:
                await client.fetch(FetchRequest(b"fetched", 0, 0, 0, 10, 0))
            assert fetched.value.code == FetchErrorCode.PARTITION_DAMAGED
            assert (fetched.value.file, fetched.value.position) == (str(segment), 0)
            assert fetched.value.high_water_mark == 3
            assert "implausible batch length" in fetched.value.reason
            with pytest.raises(FetchRefused) as looked_up:
                await client.offset_for_time(b"fetched", 0, 1 << 50)
            assert looked_up.value.code == FetchErrorCode.PARTITION_DAMAGED
            assert (looked_up.value.file, looked_up.value.position) == (str(segment), 0)
