"""Backpressure through the whole daemon: TRY_LATER, never an OK without durability.

``serve_pipeline`` runs in-process with a ``FileIO`` whose ``fdatasync`` can block or fail and
whose ``pwritev`` can raise ENOSPC; clients talk to it over TCP like any Scribe client.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import pytest
import trio

from journal import FileIO, PartitionId
from journal.fileio import Buffer
from scribe_compat import (
    AsyncScribeClient,
    BadReplyError,
    FbStatus,
    LogEntry,
    ResultCode,
    prepare_log,
)

from .conftest import make_config, read_partition, run_pipeline, running_daemon, verify_journal

pytestmark = pytest.mark.timeout(60)

OK, TRY_LATER = ResultCode.OK, ResultCode.TRY_LATER


class FaultyIO(FileIO):
    """The journal's write path with switchable faults (set from the test, read in workers)."""

    def __init__(self) -> None:
        self.blocking = False
        self.entered = threading.Event()
        self.released = threading.Event()
        self.fsync_error: int | None = None
        self.write_error: int | None = None

    def fdatasync(self, fd: int) -> None:
        if self.fsync_error is not None:
            raise OSError(self.fsync_error, os.strerror(self.fsync_error))
        if self.blocking:
            self.entered.set()
            self.released.wait(30)  # bounded, so a failing test cannot hang the suite
        super().fdatasync(fd)

    def pwritev(self, fd: int, buffers: Sequence[Buffer], offset: int) -> int:
        if self.write_error is not None:
            raise OSError(self.write_error, os.strerror(self.write_error))
        return super().pwritev(fd, buffers, offset)

    def release(self) -> None:
        self.blocking = False
        self.released.set()


def entry(category: bytes, message: bytes) -> LogEntry:
    return LogEntry(category=category, message=message)


async def connect(daemon: object) -> AsyncScribeClient:
    host, port = daemon.address  # type: ignore[attr-defined]
    return await AsyncScribeClient.connect(host, port, 10.0)


async def log_once(daemon: object, entries: list[LogEntry]) -> ResultCode:
    async with await connect(daemon) as client:
        return await client.log(entries)


async def wait_for(predicate: Callable[[], bool], limit_s: float = 5.0) -> None:
    """Poll: the states waited for change in worker threads, which set no trio event."""
    with trio.fail_after(limit_s):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.005)


def messages(journal_dir: Path, category: bytes, partition: int = 0) -> list[bytes]:
    return [m.message for m in read_partition(journal_dir, PartitionId(category, partition))]


async def test_full_queue_answers_try_later_at_once(tmp_path: Path) -> None:
    io = FaultyIO()
    journal_dir = tmp_path / "journal"
    limit = 4000
    config = make_config(
        journal_dir, admission={"max_pending_bytes": limit, "min_free_disk_bytes": 0}
    )
    async with running_daemon(config, io) as daemon:
        journal = daemon.service.journal
        assert await log_once(daemon, [entry(b"q", b"warm")]) == OK
        assert await log_once(daemon, []) == OK  # the probe, with room

        io.blocking = True
        results: dict[int, ResultCode] = {}
        latency: dict[int, float] = {}

        async def call(i: int, message: bytes) -> None:
            began = trio.current_time()
            results[i] = await log_once(daemon, [entry(b"q", message)])
            latency[i] = trio.current_time() - began

        def payload(i: int) -> bytes:
            return b"%04d" % i + b"x" * 96

        def queued_or_answered(i: int, before: int) -> bool:
            return i in results or journal.pending_bytes != before

        admitted: list[int] = []
        refused: list[int] = []
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(call, 0, payload(0))
                await trio.to_thread.run_sync(io.entered.wait, 5)
                assert io.entered.is_set(), "the first append never reached fdatasync"
                admitted.append(0)
                i = 1
                while len(refused) < 5:
                    assert i < 200, "the queue never filled"
                    nursery.start_soon(call, i, payload(i))
                    # Wait until this call is queued (pending grows) or answered.
                    await wait_for(partial(queued_or_answered, i, journal.pending_bytes))
                    if i in results:
                        assert results[i] == TRY_LATER
                        assert latency[i] < 1.0, "TRY_LATER must come at once, not after a wait"
                        refused.append(i)
                    else:
                        admitted.append(i)
                    i += 1
                # Appends piled up behind the blocked fdatasync, and none was answered yet.
                assert len(admitted) >= 10
                assert all(results.get(a) is None for a in admitted)
                # Fill the queue to the byte: the probe must then answer TRY_LATER.
                room = limit - journal.pending_bytes
                if room > 0:
                    nursery.start_soon(call, 999, b"f" * room)
                    await wait_for(lambda: journal.pending_bytes >= limit)
                    admitted.append(999)
                assert await log_once(daemon, []) == TRY_LATER
                counters = daemon.service.get_counters()
                assert counters["q:denied for queue size"] == len(refused)
                assert counters["scribe_overall:denied for queue size"] == len(refused)
                assert counters["q:received good"] == 1  # only the warm-up so far
                io.release()
        finally:
            io.release()
        assert all(results[a] == OK for a in admitted)
        assert daemon.service.get_counters()["q:received good"] == 1 + len(admitted)
        assert await log_once(daemon, []) == OK  # drained: room again

    expected = [b"warm"] + [b"f" * room if a == 999 else payload(a) for a in admitted]
    assert messages(journal_dir, b"q") == expected
    assert not verify_journal(journal_dir)


async def test_failed_fsync_is_never_acknowledged(tmp_path: Path) -> None:
    io = FaultyIO()
    journal_dir = tmp_path / "journal"
    config = make_config(journal_dir, admission={"min_free_disk_bytes": 0})
    async with running_daemon(config, io) as daemon:
        async with await connect(daemon) as client:
            assert await client.log([entry(b"doomed", b"warm")]) == OK
            assert await client.log([entry(b"healthy", b"warm")]) == OK
            io.fsync_error = errno.EIO
            assert await client.log([entry(b"doomed", b"never acked")]) == TRY_LATER
            io.fsync_error = None  # "fixed": the writer must still never acknowledge again
            for _ in range(3):
                assert await client.log([entry(b"doomed", b"again")]) == TRY_LATER
            # A call touching the failed partition is refused whole.
            both = [entry(b"healthy", b"with doomed"), entry(b"doomed", b"with healthy")]
            assert await client.log(both) == TRY_LATER
            assert await client.log([entry(b"healthy", b"fine")]) == OK
            # The probe cannot promise capacity while a writer has failed.
            assert await client.log([]) == TRY_LATER
            assert await client.get_status() == FbStatus.WARNING
            details = await client.get_status_details()
            counters = await client.get_counters()
        assert daemon.service.get_status() == FbStatus.WARNING
        assert "doomed/0" in details and "journal writer failed" in details
        assert "healthy" not in details
        assert counters["doomed:denied for failed writer"] >= 4
        assert counters["doomed:received good"] == 1
        assert counters["healthy:received good"] == 2

        # scribe_ctrl's view of the same server.
        port = str(daemon.address[1])
        done = await trio.to_thread.run_sync(lambda: run_pipeline("ctl", "status", port))
        assert done.returncode == 3, done
        assert done.stdout.decode().startswith("WARNING - journal writer failed: doomed/0")

        # Nothing of the failed batch is visible to readers.
        assert messages(journal_dir, b"doomed") == [b"warm"]
    assert messages(journal_dir, b"healthy") == [b"warm", b"fine"]


async def test_enospc_answers_try_later_and_recovers(tmp_path: Path) -> None:
    io = FaultyIO()
    journal_dir = tmp_path / "journal"
    config = make_config(
        journal_dir, admission={"min_free_disk_bytes": 0, "disk_check_interval_s": 0.1}
    )
    async with running_daemon(config, io) as daemon, await connect(daemon) as client:
        assert await client.log([entry(b"full", b"before")]) == OK
        io.write_error = errno.ENOSPC
        assert await client.log([entry(b"full", b"no space " * 100)]) == TRY_LATER
        assert await client.log([entry(b"other", b"no space either")]) == TRY_LATER
        assert await client.log([]) == TRY_LATER
        assert await client.get_status() == FbStatus.WARNING
        assert "disk is full" in await client.get_status_details()
        counters = await client.get_counters()
        assert counters["full:denied for disk space"] == 1
        assert counters["other:denied for disk space"] == 1
        assert "full:denied for failed writer" not in counters
        assert not verify_journal(journal_dir)
        assert messages(journal_dir, b"full") == [b"before"]
        io.write_error = None
        began = time.monotonic()
        while (result := await client.log([entry(b"full", b"after")])) != OK:
            assert result == TRY_LATER
            assert time.monotonic() - began < 5, "writes never resumed after ENOSPC"
            await trio.sleep(0.05)
        assert await client.get_status() == FbStatus.ALIVE
    read = read_partition(journal_dir, PartitionId(b"full", 0))
    assert [(m.offset, m.message) for m in read] == [(0, b"before"), (1, b"after")]
    assert not verify_journal(journal_dir)


async def receive_result(stream: trio.SocketStream, prepared: object) -> ResultCode:
    data = b""
    with trio.fail_after(5):
        while True:
            chunk = await stream.receive_some(65536)
            assert chunk, "the server closed the connection without replying"
            data += chunk
            try:
                return prepared.parse_reply(data)  # type: ignore[attr-defined,no-any-return]
            except BadReplyError:
                continue


async def test_probe_and_log_answer_try_later_while_stopping(tmp_path: Path) -> None:
    journal_dir = tmp_path / "journal"
    config = make_config(journal_dir, admission={"min_free_disk_bytes": 0})
    probe = prepare_log([])
    call = prepare_log([entry(b"late", b"during drain")], strict=True)
    async with running_daemon(config) as daemon:
        assert await log_once(daemon, []) == OK
        assert await log_once(daemon, [entry(b"early", b"x")]) == OK
        host, port = daemon.address
        # Half-sent requests keep these connections busy, so the drain waits for them.
        streams = [await trio.open_tcp_stream(host, port) for _ in range(2)]
        try:
            await streams[0].send_all(probe.request[:5])
            await streams[1].send_all(call.request[:7])
            await trio.sleep(0.1)
            daemon.request_stop()
            await wait_for(lambda: daemon.service.admission.stopping)
            assert daemon.service.get_status() == FbStatus.STOPPING
            await streams[0].send_all(probe.request[5:])
            await streams[1].send_all(call.request[7:])
            assert await receive_result(streams[0], probe) == TRY_LATER
            assert await receive_result(streams[1], call) == TRY_LATER
            counters = daemon.service.get_counters()
            assert counters["scribe_overall:denied for stopping"] == 1
            assert "late:received good" not in counters
        finally:
            for stream in streams:
                await stream.aclose()
    assert not (journal_dir / "late").exists()
    assert messages(journal_dir, b"early") == [b"x"]
