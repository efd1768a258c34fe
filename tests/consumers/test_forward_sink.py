"""The forwarding sink against an in-test Scribe server (scribe_compat's own trio server)."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import pytest
import trio
from coordinator_contract import wait_until
from scribe_fakes import QuietFb303

from consumers import (
    ConsumerRuntime,
    ForwardSink,
    ForwardSinkConfig,
    GroupConfig,
    LocalCoordinator,
    LocalCoordinatorConfig,
    SinkError,
)
from consumers.origin import ORIGIN_KEY, Origin, decode_origin
from journal import JournalConfig, JournalMessage, PartitionId, open_journal
from scribe_compat import LogBatch, LogEntry, ResultCode, ServerConfig, serve_scribe

PID = PartitionId(b"web", 0)


class Upstream(QuietFb303):
    """A Scribe server's handler: records calls, answers TRY_LATER to the first ``busy`` calls."""

    def __init__(self, busy: int = 0) -> None:
        self.busy = busy
        self.calls: list[list[LogEntry]] = []
        self.stored: list[LogEntry] = []

    async def log(self, batch: LogBatch) -> ResultCode:
        entries = batch.entries()
        self.calls.append(entries)
        if self.busy:
            self.busy -= 1
            return ResultCode.TRY_LATER
        self.stored.extend(entries)
        return ResultCode.OK

    def messages(self) -> list[bytes]:
        return [e.message for e in self.stored]


def msgs(
    *payloads: bytes, start: int = 0, metadata: dict[bytes, bytes] | None = None
) -> list[JournalMessage]:
    return [JournalMessage(start + i, 0, p, metadata) for i, p in enumerate(payloads)]


def forward_config(port: int, **overrides: object) -> ForwardSinkConfig:
    settings: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "timeout_s": 5.0,
        "backoff_initial_s": 0.005,
        "backoff_max_s": 0.02,
    }
    settings.update(overrides)
    return ForwardSinkConfig(**settings)  # type: ignore[arg-type]


async def test_try_later_keeps_the_batch_and_retries_in_order(nursery: trio.Nursery) -> None:
    upstream = Upstream(busy=3)
    server = await nursery.start(serve_scribe, upstream, ServerConfig(port=0))
    sink = ForwardSink(forward_config(server.address[1]), rng=random.Random(1))
    await sink.write(PID, msgs(b"a", b"b"))
    await sink.write(PID, msgs(b"c", start=2))
    assert upstream.messages() == [b"a", b"b", b"c"]
    assert all(e.category == b"web" for e in upstream.stored)
    metrics = sink.metrics()
    assert metrics["sent"] == 3
    assert metrics["failed calls"] == 3
    assert metrics["try later"] == 3
    assert metrics["reconnects"] == 1  # TRY_LATER keeps the connection
    assert len(upstream.calls) == 5
    await sink.aclose()


async def test_probe_before_batches_over_4096_bytes(nursery: trio.Nursery) -> None:
    upstream = Upstream()
    server = await nursery.start(serve_scribe, upstream, ServerConfig(port=0))
    sink = ForwardSink(forward_config(server.address[1]))
    await sink.write(PID, msgs(b"x" * 4000))  # 4003 bytes with the category: no probe
    await sink.write(PID, msgs(b"y" * 2100, b"z" * 2100))
    assert [len(call) for call in upstream.calls] == [1, 0, 2]
    assert sink.metrics()["probes"] == 1
    await sink.aclose()


async def test_try_later_to_the_probe_holds_the_batch(nursery: trio.Nursery) -> None:
    upstream = Upstream(busy=2)
    server = await nursery.start(serve_scribe, upstream, ServerConfig(port=0))
    sink = ForwardSink(forward_config(server.address[1]))
    await sink.write(PID, msgs(b"y" * 5000))
    assert [len(call) for call in upstream.calls] == [0, 0, 0, 1]
    assert upstream.messages() == [b"y" * 5000]
    assert sink.metrics()["failed calls"] == 2
    await sink.aclose()


async def test_original_category_from_metadata(nursery: trio.Nursery) -> None:
    upstream = Upstream()
    server = await nursery.start(serve_scribe, upstream, ServerConfig(port=0))
    sink = ForwardSink(forward_config(server.address[1]))
    catch_all = PartitionId(b"scribe_unroutable", 0)
    await sink.write(catch_all, msgs(b"m", metadata={b"scribe_category": b"orig", b"k": b"v"}))
    await sink.write(catch_all, msgs(b"n", metadata={b"scribe_category": b"orig2"}))
    assert [(e.category, e.message) for e in upstream.stored] == [(b"orig", b"m"), (b"orig2", b"n")]
    assert upstream.stored[0].metadata == {b"k": b"v"}
    assert not upstream.stored[1].metadata
    await sink.aclose()


async def test_forwarded_entries_carry_their_origin_and_keep_an_earlier_one(
    nursery: trio.Nursery,
) -> None:
    upstream = Upstream()
    server = await nursery.start(serve_scribe, upstream, ServerConfig(port=0))
    journal_id = uuid.UUID("00000000-0000-4000-8000-00000000000a")
    sink = ForwardSink(forward_config(server.address[1]), journal_id=lambda: journal_id)
    earlier = Origin(uuid.UUID(int=7), b"leaf-category", 3, 99, 1_000_000)
    here = [JournalMessage(5, 1, b"new", None, 1_000_123)]
    passed_on = [JournalMessage(6, 1, b"old", {ORIGIN_KEY: earlier.encode(), b"k": b"v"}, 7)]
    await sink.write(PID, here)
    await sink.write(PID, passed_on)
    first, second = upstream.stored
    assert first.metadata is not None and second.metadata is not None
    assert decode_origin(first.metadata[ORIGIN_KEY]) == Origin(journal_id, b"web", 0, 5, 1_000_123)
    assert decode_origin(second.metadata[ORIGIN_KEY]) == earlier
    assert second.metadata[b"k"] == b"v"
    # A catch-all event keeps its original category beside the origin of its catch-all
    # partition, so every tier downstream sees the event as the leaf did.
    catch_all = PartitionId(b"scribe_unroutable", 0)
    await sink.write(catch_all, [JournalMessage(0, 1, b"m", {b"scribe_category": b"stray"}, 9)])
    third = upstream.stored[2]
    assert third.category == b"stray"
    assert third.metadata is not None and third.metadata[b"scribe_category"] == b"stray"
    assert decode_origin(third.metadata[ORIGIN_KEY]) == Origin(
        journal_id, b"scribe_unroutable", 0, 0, 9
    )
    await sink.aclose()


async def test_large_batches_split_by_entries_per_call(nursery: trio.Nursery) -> None:
    upstream = Upstream()
    server = await nursery.start(serve_scribe, upstream, ServerConfig(port=0))
    sink = ForwardSink(forward_config(server.address[1], max_entries_per_call=4))
    await sink.write(PID, msgs(*(str(i).encode() for i in range(10))))
    assert [len(call) for call in upstream.calls] == [4, 4, 2]
    assert upstream.messages() == [str(i).encode() for i in range(10)]
    await sink.aclose()


async def test_max_attempts_raises_sink_error(nursery: trio.Nursery) -> None:
    upstream = Upstream(busy=100)
    server = await nursery.start(serve_scribe, upstream, ServerConfig(port=0))
    sink = ForwardSink(forward_config(server.address[1], max_attempts=3))
    with pytest.raises(SinkError, match="TRY_LATER"):
        await sink.write(PID, msgs(b"a"))
    assert len(upstream.calls) == 3
    await sink.aclose()


async def test_give_up_after_raises_sink_error_naming_attempts_and_reason(
    nursery: trio.Nursery,
) -> None:
    upstream = Upstream(busy=10**6)
    server = await nursery.start(serve_scribe, upstream, ServerConfig(port=0))
    sink = ForwardSink(forward_config(server.address[1]), give_up_after_s=0.2)
    started = trio.current_time()
    with pytest.raises(
        SinkError, match=r"gave up after \d+ attempts in 0.2 s; the last: .*TRY_LATER"
    ):
        await sink.write(PID, msgs(b"a"))
    assert 0.2 <= trio.current_time() - started < 2
    assert len(upstream.calls) >= 3 and upstream.stored == []
    await sink.aclose()


async def test_reconnects_after_the_upstream_restarts() -> None:
    upstream = Upstream()
    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as first_life:
            server = await nursery.start(serve_scribe, upstream, ServerConfig(port=0))
        port = server.address[1]
        sink = ForwardSink(forward_config(port))
        await sink.write(PID, msgs(b"before"))
        await server.drain()
        first_life.cancel()

        done = trio.Event()

        async def write_while_down() -> None:
            await sink.write(PID, msgs(b"during", start=1))
            done.set()

        nursery.start_soon(write_while_down)
        await wait_until(lambda: sink.metrics()["failed calls"] >= 3, 5, "failed attempts")
        assert not done.is_set()
        second = await nursery.start(serve_scribe, upstream, ServerConfig(port=port))
        with trio.fail_after(5):
            await done.wait()
        await sink.write(PID, msgs(b"after", start=2))
        assert upstream.messages() == [b"before", b"during", b"after"]
        assert sink.metrics()["reconnects"] >= 2
        await sink.aclose()
        await second.drain()


async def test_runtime_forwards_a_journal_with_a_busy_upstream(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    upstream = Upstream(busy=5)
    server = await nursery.start(serve_scribe, upstream, ServerConfig(port=0))
    sink = ForwardSink(forward_config(server.address[1]))
    group = GroupConfig(
        name="fwd", categories=("web",), sink="forward", batch_wait_s=0.01, commit_interval_s=0.05
    )
    coordinator = LocalCoordinator(
        LocalCoordinatorConfig(state_dir=tmp_path / "state", rescan_interval_s=0.05), "fwd", "m"
    )
    expected: dict[int, list[bytes]] = {}
    async with open_journal(tmp_path / "journal", JournalConfig()) as journal:
        for partition in range(3):
            batch = [f"{partition}-{n}".encode() for n in range(200)]
            expected[partition] = batch
            await journal.append(b"web", partition, batch)
        runtime = ConsumerRuntime(tmp_path / "journal", group, coordinator, sink)
        async with trio.open_nursery() as inner:
            await inner.start(runtime.serve)
            await wait_until(lambda: sink.metrics()["sent"] == 600, 10, "all forwarded")
            runtime.stop()
    for partition, batch in expected.items():
        got = [m for m in upstream.messages() if m.startswith(f"{partition}-".encode())]
        assert got == batch
    assert sink.metrics()["failed calls"] == 5
    assert await coordinator.committed(PartitionId(b"web", 2)) == 200
    await sink.aclose()
