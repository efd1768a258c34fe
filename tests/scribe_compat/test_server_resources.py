"""What the server shares between connections: slots, buffer memory, the event loop."""

from __future__ import annotations

import time

import pytest
import trio

from scribe_compat import (
    AsyncScribeClient,
    CodecLimits,
    LogBatch,
    LogEntry,
    PreparedLog,
    ResultCode,
    ScribeServer,
    TransportError,
    open_scribe_client,
)
from scribe_compat.codec import encode_call
from scribe_compat.idl import METHODS

from .conftest import FakeHandler
from .test_server import (
    config,
    eventually,
    log_call,
    logged,
    read_until_closed,
    start,
    still_serves,
)


async def test_a_new_connection_evicts_the_longest_idle_one(
    nursery: trio.Nursery, handler: FakeHandler, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start(nursery, handler, config(max_connections=2))
    oldest = await AsyncScribeClient.connect(*server.address, timeout=5)
    newer = await AsyncScribeClient.connect(*server.address, timeout=5)
    assert await oldest.get_name() == "fake-scribe"
    assert await newer.get_name() == "fake-scribe"  # so ``oldest`` has been idle the longest
    assert server.connection_count == 2
    async with await AsyncScribeClient.connect(*server.address, timeout=5) as third:
        assert await third.get_name() == "fake-scribe"
        assert await newer.get_name() == "fake-scribe"
        with pytest.raises(TransportError):
            await oldest.get_name()
        assert server.connection_count == 2
    assert server.evicted_connections == 1
    assert server.counters()["server:connections evicted"] == 1
    assert server.rejected_connections == 0
    assert logged(caplog, "connection evicted")
    await oldest.aclose()
    await newer.aclose()


async def test_connection_limit_refuses_when_no_connection_is_idle(
    nursery: trio.Nursery, handler: FakeHandler, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start(nursery, handler, config(max_connections=2))
    # A connection inside a call is never evicted: it has a read timeout of its own.
    busy = [await trio.open_tcp_stream(*server.address) for _ in range(2)]
    for stream in busy:
        await stream.send_all(log_call(3)[:10])
    await eventually(lambda: server.counters()["server:connections open"] == 2)
    await trio.sleep(0.05)  # both have read their partial call
    third = await trio.open_tcp_stream(*server.address)
    assert await read_until_closed(third) == b""
    await third.aclose()
    assert logged(caplog, "too many connections")
    assert server.rejected_connections == 1
    assert server.evicted_connections == 0
    await busy[0].aclose()
    await eventually(lambda: server.connection_count == 1)
    await still_serves(server)
    await busy[1].aclose()


async def test_evictions_are_logged_at_a_bounded_rate(
    nursery: trio.Nursery, handler: FakeHandler, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start(nursery, handler, config(max_connections=3))
    streams = []
    for _ in range(30):
        streams.append(await trio.open_tcp_stream(*server.address))
        await trio.sleep(0.005)  # accepted and waiting, so idle, before the next arrives
    await eventually(lambda: server.evicted_connections == 27)
    assert 1 <= len(logged(caplog, "connection evicted")) <= 2
    for stream in streams:
        await stream.aclose()


# -- the buffer budget ---------------------------------------------------------------------------

BUDGET_LIMITS = CodecLimits(
    max_frame_bytes=4096, max_message_bytes=4096, max_unparsed_bytes=8192, max_entries_per_call=10
)


def call_of(size: int, seqid: int) -> bytes:
    """A framed Log call of about ``size`` bytes."""
    entries = [LogEntry(category=b"c", message=b"x" * (size - 40))]
    return encode_call(
        "Log", METHODS["Log"].args(messages=entries), seqid=seqid, framed=True, strict=False
    )


async def test_a_connection_waits_for_the_budget_while_others_are_served(
    nursery: trio.Nursery, handler: FakeHandler, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start(
        nursery,
        handler,
        config(limits=BUDGET_LIMITS, receive_size=1024, max_buffered_bytes=8192),
    )
    calls = [call_of(4000, seqid) for seqid in (1, 2, 3)]
    streams = [await trio.open_tcp_stream(*server.address) for _ in calls]
    for stream, call in zip(streams, calls, strict=True):
        await stream.send_all(call[:-100])
        await trio.sleep(0.05)  # in this order, so the third is the one left short
    await eventually(lambda: server.counters()["server:buffer budget waits"] >= 1)
    # The first two hold their calls' whole size; the third cannot, and reads no further.
    assert server.counters()["server:buffered bytes reserved"] == 2 * len(calls[0])
    assert logged(caplog, "buffer budget spent")
    # Nothing buffered needs no budget: a new client's calls go through meanwhile.
    await still_serves(server)
    assert handler.calls.count("Log") == 1
    # The first calls complete and are answered: their bytes go back and the third reads on.
    for stream, call in zip(streams, calls, strict=True):
        await stream.send_all(call[-100:])
    with trio.fail_after(5):
        for stream in streams:
            assert await stream.receive_some(4096)
    assert handler.calls.count("Log") == 4
    for stream in streams:
        await stream.aclose()
    await eventually(lambda: server.connection_count == 0)
    assert server.counters()["server:buffered bytes reserved"] == 0


async def test_more_large_calls_than_the_budget_holds_all_complete_in_turn(
    nursery: trio.Nursery, handler: FakeHandler
) -> None:
    # Twelve connections send a 4 KB call each, all at once, to a budget for two: were the
    # budget spread over them as bytes arrive, none could finish before its read timeout.
    server = await start(
        nursery,
        handler,
        config(limits=BUDGET_LIMITS, receive_size=1024, max_buffered_bytes=8192),
    )
    answered = 0

    async def send(seqid: int) -> None:
        nonlocal answered
        async with await AsyncScribeClient.connect(*server.address, timeout=5) as client:
            entries = [LogEntry(category=b"c", message=b"x" * 3900)]
            assert await client.log(entries) == ResultCode.OK
            answered += 1

    with trio.fail_after(3):  # far below the 5 s read timeout
        async with trio.open_nursery() as senders:
            for seqid in range(12):
                senders.start_soon(send, seqid)
    assert answered == 12
    assert server.counters()["server:buffered bytes reserved"] == 0


async def test_a_budget_too_small_for_one_call_is_refused() -> None:
    with pytest.raises(ValueError, match="max_buffered_bytes"):
        config(limits=BUDGET_LIMITS, max_buffered_bytes=8191)


# -- the event loop ------------------------------------------------------------------------------


class QuickHandler(FakeHandler):
    """Answers Log without looking at the entries, so only the server's work is measured."""

    async def log(self, batch: LogBatch) -> ResultCode:
        self.calls.append("Log")
        return ResultCode.OK


def large_call(shape: str, entries: int) -> bytes:
    pairs = {b"k%d" % i: b"value%d" % i for i in range(4)} if shape == "metadata" else None
    batch = [LogEntry(category=b"big", message=b"m" * 40, metadata=pairs)] * entries
    return encode_call(
        "Log", METHODS["Log"].args(messages=batch), seqid=1, framed=True, strict=False
    )


async def probe_gaps(server: ScribeServer, until: trio.Event) -> list[float]:
    """Seconds between successive answers to one-message calls sent back to back.  The probe
    runs on the server's own event loop, so a loop held by a decode shows up as a long gap
    (a latency taken per call would miss it: the probe cannot send while the loop is held)."""
    gaps = []
    async with open_scribe_client(*server.address, timeout=10) as client:
        last = time.perf_counter()
        while not until.is_set():
            assert await client.log([LogEntry(category=b"probe", message=b"p")]) == ResultCode.OK
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
            await trio.sleep(0.005)
    return gaps


@pytest.mark.parametrize("shape", ["metadata", "plain"])
async def test_a_large_call_does_not_hold_up_a_small_one(nursery: trio.Nursery, shape: str) -> None:
    # A 100,000-entry call takes the decoder ~0.1 s (plain) to ~0.9 s (metadata): on the event
    # loop, the probe would wait that long.
    handler = QuickHandler()
    server = await start(nursery, handler, config(limits=CodecLimits(), read_timeout_s=30.0))
    request = large_call(shape, 100_000)
    done = trio.Event()
    gaps: list[float] = []

    async def probe() -> None:
        gaps.extend(await probe_gaps(server, done))

    nursery.start_soon(probe)
    await trio.sleep(0.1)
    stream = await trio.open_tcp_stream(*server.address)
    for _ in range(2):
        await stream.send_all(request)
        with trio.fail_after(20):
            assert await stream.receive_some(4096)
    done.set()
    await stream.aclose()
    await eventually(lambda: bool(gaps))
    assert max(gaps) < 0.25, f"a one-message Log waited up to {max(gaps):.3f} s"
    assert server.thread_decoded_calls == 2


async def test_large_calls_take_turns_while_small_ones_pass(
    nursery: trio.Nursery, handler: FakeHandler
) -> None:
    # One large call at a time (codec_threads = 1) from decoding to the handler's answer: the
    # second waits its turn, received; a small call on a third connection is answered meanwhile.
    held = handler.release_log = trio.Event()
    server = await start(nursery, handler, config(thread_decode_bytes=1024, codec_threads=1))
    first = await AsyncScribeClient.connect(*server.address, timeout=5)
    second = await AsyncScribeClient.connect(*server.address, timeout=5)
    answered: list[tuple[str, ResultCode]] = []

    async def send_large(name: str, client: AsyncScribeClient) -> None:
        entries = [LogEntry(category=name.encode(), message=b"x" * 200) for _ in range(10)]
        answered.append((name, await client.log(entries)))

    nursery.start_soon(send_large, "first", first)
    await handler.log_started.wait()
    handler.release_log = None  # calls after the first are answered at once
    nursery.start_soon(send_large, "second", second)
    await eventually(lambda: server.counters()["server:large calls waiting"] == 1)
    async with await AsyncScribeClient.connect(*server.address, timeout=5) as small:
        assert await small.log([LogEntry(category=b"small", message=b"m")]) == ResultCode.OK
    assert [batch[0][0] for batch in handler.batches] == [b"small"]
    assert server.counters()["server:large calls waiting"] == 1
    held.set()
    await eventually(lambda: len(answered) == 2)
    assert answered == [("first", ResultCode.OK), ("second", ResultCode.OK)]
    assert [batch[0][0] for batch in handler.batches] == [b"small", b"first", b"second"]
    assert server.counters()["server:large calls waiting"] == 0
    await first.aclose()
    await second.aclose()


class KeepingHandler(FakeHandler):
    """Keeps every batch it is given, to see what the server does with it afterwards."""

    def __init__(self) -> None:
        super().__init__()
        self.kept: list[LogBatch] = []

    async def log(self, batch: LogBatch) -> ResultCode:
        self.kept.append(batch)
        self.batches.append(
            [(c, m, None) for c, m in zip(batch.categories, batch.messages, strict=True)]
        )
        return ResultCode.OK


@pytest.mark.parametrize("shape", ["metadata", "plain"])
async def test_a_large_call_s_entries_are_let_go_once_it_is_answered(
    nursery: trio.Nursery, shape: str
) -> None:
    # Freeing them at once would hold the GIL for milliseconds: a worker thread frees them in
    # slices, after the answer, so the batch the handler was given is empty by then.
    handler = KeepingHandler()
    server = await start(nursery, handler, config(limits=CodecLimits(), thread_decode_bytes=1024))
    async with await AsyncScribeClient.connect(*server.address, timeout=5) as client:
        prepared = PreparedLog(large_call(shape, 5000), 1, True, False, 5000)
        assert await client.log_prepared(prepared) == ResultCode.OK
        assert await client.log([LogEntry(category=b"small", message=b"m")]) == ResultCode.OK
    large, small = handler.kept
    assert len(handler.batches[0]) == 5000  # what the handler saw while it ran
    assert (large.messages, large.categories, large.metadata or []) == ([], [], [])
    assert small.messages == [b"m"]  # small calls are left alone
