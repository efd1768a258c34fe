"""Closing a remote reader ends it wherever it waits, so that a journal registered at a new
fetch address is read there: a pending ``read_wait`` and a first fetch still retrying a dead
address raise ``JournalClosed``, and the cluster source closes the readers of an address its
journal left.  Real daemons (``serve_pipeline`` in this trio run) with ``[fetch] port = 0``.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import trio

from consumers import RemoteReadConfig, open_remote_source
from consumers.cluster_source import ClusterJournalSource
from consumers.coordination import Unit
from consumers.coordination.registry import Registration
from journal import JournalClosed, JournalMessage, PartitionId
from scribe_compat import AsyncScribeClient, LogEntry, ResultCode

from .conftest import make_config, running_daemon

PID = PartitionId(b"moved", 0)
# Retries of a dead address come fast, so that a test sees several within its bound.
QUICK = RemoteReadConfig(timeout_s=5.0, wait_ms=10_000, backoff_initial_s=0.05, backoff_max_s=0.2)


async def log(daemon: Any, messages: list[bytes]) -> None:
    async with await AsyncScribeClient.connect(*daemon.address) as client:
        entries = [LogEntry(category=PID.category, message=m) for m in messages]
        assert await client.log(entries) is ResultCode.OK


def registration(daemon: Any) -> Registration:
    host, port = daemon.fetch_server.address
    journal_id = daemon.service.journal.journal_id.hex
    return Registration(journal_id, host, port, "here", 1, (PID,))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_close_wakes_a_read_wait_at_the_tail(tmp_path: Path) -> None:
    config = make_config(tmp_path / "j", fetch={"port": 0})
    async with running_daemon(config) as daemon:
        await log(daemon, [b"a"])
        host, port = daemon.fetch_server.address
        async with open_remote_source(host, port, QUICK) as source:
            reader = await source.open_reader(PID, 1)  # at the tail: a long poll follows
            raised: list[BaseException] = []

            async def wait() -> None:
                try:
                    await reader.read_wait()
                except JournalClosed as exc:
                    raised.append(exc)

            with trio.fail_after(5):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(wait)
                    await trio.sleep(0.2)  # asleep in read_wait, the long poll on its way
                    assert source.close_readers("gone elsewhere") == 1
            assert reader.closed and reader.position == 1
            assert [str(e) for e in raised] == [f"{host}:{port}: gone elsewhere"]
            assert source.close_readers("again") == 0  # a closed reader is no longer open


async def test_close_ends_a_first_fetch_retrying_a_dead_address() -> None:
    async with open_remote_source("127.0.0.1", closed_port(), QUICK) as source:
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:

                async def close_soon() -> None:
                    await trio.sleep(0.5)  # several refused connections retried meanwhile
                    assert source.close_readers("moved") == 1

                nursery.start_soon(close_soon)
                with pytest.raises(JournalClosed, match="moved"):
                    await source.open_reader(PID, 0)
        assert source.reconnects >= 2


async def read(reader: Any, count: int) -> list[JournalMessage]:
    got: list[JournalMessage] = []
    with trio.fail_after(10):
        while len(got) < count:
            got += await reader.read_wait()
    return got


async def test_a_journal_registered_at_a_new_address_is_read_there(tmp_path: Path) -> None:
    """The server of a journal restarts on another fetch port: the reader waiting on the old
    one is closed by the scan that sees the new registration, and the unit reopened from its
    position reads the new server, nothing lost or repeated."""
    registry: dict[str, Registration] = {}

    async def registered() -> dict[str, Registration]:
        return dict(registry)

    journal_dir = tmp_path / "j"
    async with trio.open_nursery() as nursery:
        source = ClusterJournalSource(registered, nursery, QUICK)
        async with running_daemon(make_config(journal_dir, fetch={"port": 0})) as first:
            await log(first, [b"a", b"b", b"c"])
            old = registration(first)
            registry[old.journal_id] = old
            [unit] = await source.partitions()
            assert unit == Unit(PID.category, PID.partition, old.journal_id)
            reader = await source.open_reader(unit, 0)
            assert [m.message for m in await read(reader, 3)] == [b"a", b"b", b"c"]
        # The first server is gone; the reader's long poll retries its address meanwhile.
        raised: list[BaseException] = []

        async def wait() -> None:
            try:
                await reader.read_wait()
            except JournalClosed as exc:
                raised.append(exc)

        async with running_daemon(make_config(journal_dir, fetch={"port": 0})) as second:
            new = registration(second)
            assert new.journal_id == old.journal_id and new.fetch_port != old.fetch_port
            await log(second, [b"d", b"e"])
            with trio.fail_after(5):
                async with trio.open_nursery() as waiting:
                    waiting.start_soon(wait)
                    await trio.sleep(0.3)
                    # Registered again, elsewhere: the scan retires the old address.
                    registry[new.journal_id] = new
                    assert await source.partitions() == [unit]
            assert [str(e) for e in raised] == [
                f"{old.fetch_address}: journal {old.journal_id} moved to {new.fetch_address}"
            ]
            again = await source.open_reader(unit, reader.position)
            assert [(m.offset, m.message) for m in await read(again, 2)] == [(3, b"d"), (4, b"e")]
            again.close()
        await source.aclose()
