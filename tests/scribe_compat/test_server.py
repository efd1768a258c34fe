"""The trio server with bad input, limits, draining, and our own clients."""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable

import pytest
import trio

from scribe_compat import (
    CLOSED,
    NEED_DATA,
    AsyncScribeClient,
    Call,
    ClientConnection,
    ClientTimeoutError,
    CodecLimits,
    FbStatus,
    LogEntry,
    RemoteApplicationError,
    ResultCode,
    ScribeClient,
    ScribeServer,
    ServerConfig,
    ServerConnection,
    TransportError,
    open_scribe_client,
    prepare_log,
    serve_scribe,
)
from scribe_compat.codec import encode_call
from scribe_compat.idl import METHODS, AppErrorType

from .conftest import FakeHandler

SMALL_LIMITS = CodecLimits(
    max_frame_bytes=4096, max_message_bytes=4096, max_unparsed_bytes=8192, max_entries_per_call=10
)


def config(**changes: object) -> ServerConfig:
    base: dict[str, object] = dict(
        port=0, read_timeout_s=5.0, idle_timeout_s=30.0, drain_timeout_s=2.0, limits=SMALL_LIMITS
    )
    base.update(changes)
    return ServerConfig(**base)  # type: ignore[arg-type]


async def start(nursery: trio.Nursery, handler: FakeHandler, cfg: ServerConfig) -> ScribeServer:
    server: ScribeServer = await nursery.start(serve_scribe, handler, cfg)
    return server


async def eventually(predicate: Callable[[], bool], limit_s: float = 5.0) -> None:
    """Poll ``predicate`` (for conditions only logs or counters reveal) until true."""
    for _ in range(int(limit_s / 0.01)):
        if predicate():
            return
        await trio.sleep(0.01)
    raise AssertionError("condition never became true")


async def read_until_closed(stream: trio.SocketStream, limit_s: float = 5.0) -> bytes:
    """Everything the server sends until it closes the connection (fails if it does not)."""
    data = b""
    with trio.fail_after(limit_s):
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:  # reset by peer: closed too
                return data
            if not chunk:
                return data
            data += chunk


def log_call(n: int = 1, *, seqid: int = 1, framed: bool = True, strict: bool = False) -> bytes:
    entries = [LogEntry(category=b"c", message=b"m%d" % i) for i in range(n)]
    args = METHODS["Log"].args(messages=entries)
    return encode_call("Log", args, seqid=seqid, framed=framed, strict=strict)


async def still_serves(server: ScribeServer) -> None:
    async with open_scribe_client(*server.address, timeout=5) as client:
        assert await client.log([LogEntry(category=b"ok", message=b"fine")]) == ResultCode.OK
        assert await client.get_name() == "fake-scribe"


def logged(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


BAD_INPUTS = {
    "oversized frame": struct.pack(">I", 5000) + b"\x80\x01",
    "too many entries": log_call(11),
    "garbage": b"\x80\x01\x00\x01" + b"\xff" * 64,
    "negative frame": b"\xff\xff\xff\xfe",
    "bad field type": struct.pack(">I", 19)
    + b"\x80\x01\x00\x01\x00\x00\x00\x03Log"
    + b"\x00\x00\x00\x01\x07\x00\x01\x00",
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
async def test_bad_input_closes_the_connection_and_the_server_stays_up(
    nursery: trio.Nursery, handler: FakeHandler, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    server = await start(nursery, handler, config())
    stream = await trio.open_tcp_stream(*server.address)
    # A good call first: it is answered; then the bad bytes close the connection.
    await stream.send_all(log_call(1, seqid=1) + BAD_INPUTS[name])
    data = await read_until_closed(stream)
    assert len(data) > 0  # the reply to the good call
    await stream.aclose()
    assert handler.batches == [[(b"c", b"m0", None)]]  # nothing of the bad call reached it
    lines = logged(caplog, "protocol error")
    assert len(lines) == 1
    assert "peer=127.0.0.1:" in lines[0] and "reason=" in lines[0]
    await still_serves(server)


async def test_truncated_frame_then_close(
    nursery: trio.Nursery, handler: FakeHandler, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start(nursery, handler, config())
    stream = await trio.open_tcp_stream(*server.address)
    await stream.send_all(log_call(3)[:-5])
    await stream.aclose()
    await eventually(lambda: bool(logged(caplog, "protocol error")))
    assert "inside a message" in logged(caplog, "protocol error")[0]
    assert handler.batches == []
    await still_serves(server)


async def test_slow_drip_is_closed_after_read_timeout(
    nursery: trio.Nursery, handler: FakeHandler, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start(nursery, handler, config(read_timeout_s=0.5))
    stream = await trio.open_tcp_stream(*server.address)
    data = log_call(5)
    start_time = trio.current_time()
    # One byte every 0.1 s: each read is quick, but the message never completes in time.
    with trio.move_on_after(5):
        for i in range(len(data)):
            try:
                await stream.send_all(data[i : i + 1])
            except trio.BrokenResourceError:
                break
            await trio.sleep(0.1)
            if logged(caplog, "read timeout"):
                break
    assert logged(caplog, "read timeout")
    assert trio.current_time() - start_time < 2.0
    assert await read_until_closed(stream) == b""
    await stream.aclose()
    assert handler.batches == []
    await still_serves(server)


async def test_idle_timeout(
    nursery: trio.Nursery, handler: FakeHandler, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start(nursery, handler, config(idle_timeout_s=0.2))
    stream = await trio.open_tcp_stream(*server.address)
    assert await read_until_closed(stream, limit_s=3) == b""
    await stream.aclose()
    assert logged(caplog, "idle timeout")


async def test_handler_exception_gives_internal_error(
    scribe_server: ScribeServer, handler: FakeHandler, caplog: pytest.LogCaptureFixture
) -> None:
    handler.fail_log = True
    async with open_scribe_client(*scribe_server.address, timeout=5) as client:
        with pytest.raises(RemoteApplicationError) as info:
            await client.log([LogEntry(category=b"c", message=b"m")])
        assert info.value.type == AppErrorType.INTERNAL_ERROR
        handler.fail_log = False
        assert await client.log([LogEntry(category=b"c", message=b"m")]) == ResultCode.OK
    assert logged(caplog, "handler failed")


async def test_unknown_method_over_the_wire(scribe_server: ScribeServer) -> None:
    stream = await trio.open_tcp_stream(*scribe_server.address)
    payload = b"\x80\x01\x00\x01\x00\x00\x00\x04nope\x00\x00\x00\x05\x00"
    await stream.send_all(struct.pack(">I", len(payload)) + payload + log_call(1, seqid=6))
    client = ClientConnection(framed=True, strict=True)
    client.expect("nope", 5)
    client.expect("Log", 6)
    answers: list[object] = []
    with trio.fail_after(5):
        while len(answers) < 2:
            try:
                event = client.next_event()
            except RemoteApplicationError as exc:
                answers.append(AppErrorType(exc.type))
                continue
            if event is NEED_DATA:
                client.receive_data(await stream.receive_some(65536))
                continue
            assert event is not CLOSED
            answers.append(event.value)
    assert answers == [AppErrorType.UNKNOWN_METHOD, ResultCode.OK]
    await stream.aclose()


@pytest.mark.parametrize("framed", [True, False])
@pytest.mark.parametrize("strict", [True, False])
async def test_pipelined_calls_answered_in_order(
    scribe_server: ScribeServer, handler: FakeHandler, framed: bool, strict: bool
) -> None:
    stream = await trio.open_tcp_stream(*scribe_server.address)
    calls = b"".join(
        log_call(i + 1, seqid=100 + i, framed=framed, strict=strict) for i in range(20)
    )
    await stream.send_all(calls)
    client = ClientConnection(framed=framed, strict=strict)
    for i in range(20):
        client.expect("Log", 100 + i)
    seqids = []
    with trio.fail_after(5):
        while len(seqids) < 20:
            event = client.next_event()
            if event is NEED_DATA:
                client.receive_data(await stream.receive_some(65536))
                continue
            assert event is not CLOSED
            seqids.append(event.seqid)
    assert seqids == list(range(100, 120))
    assert [len(b) for b in handler.batches] == list(range(1, 21))
    await stream.aclose()


@pytest.mark.parametrize("framed", [True, False])
@pytest.mark.parametrize("strict", [True, False])
async def test_async_client_every_call(
    scribe_server: ScribeServer, handler: FakeHandler, framed: bool, strict: bool
) -> None:
    async with open_scribe_client(
        *scribe_server.address, timeout=5, framed=framed, strict=strict
    ) as client:
        assert await client.log([LogEntry(category=b"\x00c", message=b"\xff")]) == ResultCode.OK
        assert await client.log([]) == ResultCode.OK
        assert await client.get_name() == "fake-scribe"
        assert await client.get_version() == "1.2.3"
        assert await client.get_status() is FbStatus.ALIVE
        assert await client.get_status_details() == "all good"
        assert (await client.get_counters())["x:y"] == 2**40
        assert await client.get_counter("x:y") == 2**40
        assert await client.get_selected_counters(["x:y"]) == {"x:y": 2**40}
        await client.set_option("a", "b")
        assert await client.get_option("a") == "b"
        assert await client.get_options() == {"base": "x", "a": "b"}
        assert await client.get_cpu_profile(2) == "profile 2"
        assert await client.alive_since() == 1_700_000_000
        await client.reinitialize()
        await client.shutdown()
        assert await client.get_name() == "fake-scribe"
        prepared = prepare_log(
            [LogEntry(category=b"p", message=b"q")] * 3, framed=framed, strict=strict, seqid=9
        )
        for _ in range(3):
            assert await client.log_prepared(prepared) == ResultCode.OK
    assert handler.batches[0] == [(b"\x00c", b"\xff", None)]
    assert len(handler.batches) == 5
    assert handler.calls.count("reinitialize") == handler.calls.count("shutdown") == 1


async def test_blocking_client_in_a_thread(
    scribe_server: ScribeServer, handler: FakeHandler
) -> None:
    host, port = scribe_server.address

    def work() -> tuple[ResultCode, FbStatus, dict[str, int], ResultCode]:
        with ScribeClient.connect(host, port, timeout=5, strict=True) as client:
            result = client.log([LogEntry(category=b"cat", message=b"\x00")])
            status = client.get_status()
            counters = client.get_counters()
            prepared = prepare_log([LogEntry(category=b"x", message=b"y")], strict=True)
            again = client.log_prepared(prepared)
            client.reinitialize()
            return result, status, counters, again

    result, status, counters, again = await trio.to_thread.run_sync(work)
    assert (result, status, again) == (ResultCode.OK, FbStatus.ALIVE, ResultCode.OK)
    assert counters["scribe_overall:received good"] == 1


async def test_prepared_log_parse_reply() -> None:
    prepared = prepare_log([LogEntry(category=b"a", message=b"b")], seqid=3)
    server = ServerConnection()
    server.receive_data(prepared.request)
    call = server.next_event()
    assert isinstance(call, Call)
    reply = server.reply(call, ResultCode.TRY_LATER)
    assert prepared.parse_reply(reply) == ResultCode.TRY_LATER


async def test_client_errors_are_translated(nursery: trio.Nursery, handler: FakeHandler) -> None:
    # Nothing listens: a TransportError, not an OSError.
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    with pytest.raises(TransportError):
        await AsyncScribeClient.connect("127.0.0.1", port, timeout=2)
    with pytest.raises(TransportError):
        await trio.to_thread.run_sync(lambda: ScribeClient.connect("127.0.0.1", port, timeout=2))
    # A server that never answers: a ClientTimeoutError; the client is then unusable.
    handler.release_log = trio.Event()
    server = await start(nursery, handler, config())
    client = await AsyncScribeClient.connect(*server.address, timeout=0.3)
    with pytest.raises(ClientTimeoutError):
        await client.log([LogEntry(category=b"c", message=b"m")])
    with pytest.raises(TransportError, match="unusable"):
        await client.get_name()
    handler.release_log.set()
    await client.aclose()


async def test_drain_finishes_calls_in_progress(
    nursery: trio.Nursery, handler: FakeHandler
) -> None:
    handler.release_log = trio.Event()
    cfg = config(drain_timeout_s=5.0)
    done = trio.Event()
    server_box: list[ScribeServer] = []

    async def run_server(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as inner:
            server_box.append(await inner.start(serve_scribe, handler, cfg))
            task_status.started()
        done.set()

    await nursery.start(run_server)
    server = server_box[0]
    idle = await trio.open_tcp_stream(*server.address)
    busy = await AsyncScribeClient.connect(*server.address, timeout=5)
    results: list[ResultCode] = []

    async def call() -> None:
        results.append(await busy.log([LogEntry(category=b"c", message=b"m")]))

    nursery.start_soon(call)
    await handler.log_started.wait()
    assert server.connection_count == 2
    nursery.start_soon(server.drain)
    # The idle connection is closed at once; the busy one waits for its call.
    assert await read_until_closed(idle) == b""
    await idle.aclose()
    assert server.connection_count == 1
    with pytest.raises(OSError):
        await trio.open_tcp_stream(*server.address)  # no longer accepting
    handler.release_log.set()
    with trio.fail_after(5):
        await done.wait()
    assert results == [ResultCode.OK]
    assert server.connection_count == 0
    await busy.aclose()


async def test_drain_timeout_cuts_stuck_calls(
    nursery: trio.Nursery, handler: FakeHandler, caplog: pytest.LogCaptureFixture
) -> None:
    handler.release_log = trio.Event()  # never set: the call is stuck
    server = await start(nursery, handler, config(drain_timeout_s=0.3))
    stream = await trio.open_tcp_stream(*server.address)
    await stream.send_all(log_call(1))
    await handler.log_started.wait()
    with trio.fail_after(5):
        await server.drain()
    assert server.connection_count == 0
    assert logged(caplog, "drain timeout")
    assert await read_until_closed(stream) == b""
    await stream.aclose()


def test_server_config_validates() -> None:
    with pytest.raises(ValueError, match="port"):
        ServerConfig(port=70000)
    with pytest.raises(ValueError, match="read_timeout_s"):
        ServerConfig(read_timeout_s=0)


async def test_server_logs_use_key_value(
    scribe_server: ScribeServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="scribe_compat")
    stream = await trio.open_tcp_stream(*scribe_server.address)
    await stream.send_all(b"\x80\x01\x00\x01\xff\xff\xff\xff")
    await read_until_closed(stream)
    await stream.aclose()
    (line,) = logged(caplog, "protocol error")
    assert "error=MalformedMessage" in line
    assert 'reason="method name length -1' in line
