"""The trio fetch server: a thin loop around ``fetch_codec.FetchServerConnection``.

One task per connection reads a call, asks the handler, writes the reply, and only then reads
the next call: a connection never has more than one response in memory, and a consumer that
reads slowly holds the server to exactly that (its send waits; nothing else is buffered for it
but the few bytes of requests it may pipeline, bounded by the codec's limits).  The handler
decides what a call costs (its own limits on bytes per response and on fetches at once).

Before that, the connection passes the gate (``gate.ConnectionGate``): a peer outside the
allowlist is closed at accept, and with TLS the handshake and the client allowlist come first.
A connection whose bytes are not the fetch protocol gets a log line (at most one a second) and
is closed; the server goes on.  A handler failure answers that call with a TApplicationException
and the connection goes on.
"""

from __future__ import annotations

import logging
import math
import socket
from dataclasses import dataclass
from typing import Annotated, Protocol

import trio
from annotated_types import Interval

from scribe_compat.codec import CLOSED, NEED_DATA
from scribe_compat.errors import FetchRefused, ProtocolError, TlsRefused
from scribe_compat.fetch_codec import (
    FetchCall,
    FetchRequest,
    FetchResult,
    FetchServerConnection,
    JournalDescription,
    RejectedFetchCall,
    ReplyValue,
    TimeLookup,
)
from scribe_compat.gate import ConnectionGate, ConnectionPolicy, peer_of
from scribe_compat.idl import AppErrorType

log = logging.getLogger(__name__)

_RECEIVE_SIZE = 65536
_LOG_INTERVAL_S = 1.0


class FetchHandler(Protocol):
    """What the application implements; each call raises ``FetchRefused`` to refuse."""

    async def describe(self) -> JournalDescription: ...
    async def fetch(self, request: FetchRequest) -> FetchResult: ...
    async def offset_for_time(self, lookup: TimeLookup) -> int: ...


@dataclass(frozen=True)
class FetchServerConfig:
    """Where the fetch service listens, and how long it waits for its clients."""

    host: str = "127.0.0.1"
    port: Annotated[int, Interval(ge=0, le=65535)] = 0
    # Each connection is a task, a descriptor and at most one response: one per consumer
    # partition reader is plenty at 256 (a member reads each partition it owns on its own
    # connection); past it new connections are refused until one closes.
    max_connections: Annotated[int, Interval(ge=1, le=65536)] = 256
    # A request is a few dozen bytes: one that takes longer than this to arrive is not coming.
    read_timeout_s: Annotated[float, Interval(gt=0, le=3600)] = 30.0
    # A reply the consumer does not take within this time is dropped with its connection, so a
    # stuck consumer does not hold its response's memory for ever.
    send_timeout_s: Annotated[float, Interval(gt=0, le=3600)] = 60.0


class FetchServer:
    """Handle to a running fetch server: its bound address and counters."""

    def __init__(
        self,
        handler: FetchHandler,
        config: FetchServerConfig,
        listener: trio.SocketListener,
        policy: ConnectionPolicy | None = None,
    ) -> None:
        self.handler = handler
        # Who may connect (peer allowlist, TLS); a reload may replace ``gate.policy``.
        self.gate = ConnectionGate(policy or ConnectionPolicy(), "fetch")
        self.config = config
        sockname = listener.socket.getsockname()
        self.address: tuple[str, int] = (sockname[0], sockname[1])
        self._listener = listener
        self.connections = 0
        self.refused_connections = 0
        self.protocol_errors = 0
        self._last_log = -math.inf

    def counters(self) -> dict[str, int]:
        return {
            "fetch:connections open": self.connections,
            "fetch:connections refused": self.refused_connections,
            "fetch:protocol errors": self.protocol_errors,
            **self.gate.counters(),
        }

    def _log_due(self) -> bool:
        now = trio.current_time()
        if now - self._last_log < _LOG_INTERVAL_S:
            return False
        self._last_log = now
        return True

    async def _accept(self, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await self._listener.accept()
            except OSError as exc:
                log.error("fetch accept failed: %s", exc)
                await trio.sleep(0.1)
                continue
            if not self.gate.admits(stream):  # before a byte is read, or a slot taken
                await trio.aclose_forcefully(stream)
                continue
            if self.connections >= self.config.max_connections:
                self.refused_connections += 1
                if self._log_due():
                    log.warning(
                        "fetch connection refused: max_connections=%d reached",
                        self.config.max_connections,
                    )
                await trio.aclose_forcefully(stream)
                continue
            self.connections += 1
            nursery.start_soon(self._serve_connection, stream)

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        try:
            await self._serve_calls(await self.gate.secure(stream, peer_of(stream)[1]))
        except TlsRefused:
            pass  # logged and counted by the gate
        except ProtocolError as exc:
            self.protocol_errors += 1
            if self._log_due():
                log.warning("fetch protocol error: closing connection reason=%r", exc.reason)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError):
            pass  # the consumer went away or stalled: its reader reconnects
        finally:
            self.connections -= 1
            await trio.aclose_forcefully(stream)

    async def _serve_calls(self, stream: trio.abc.Stream) -> None:
        codec = FetchServerConnection()
        config = self.config
        while True:
            event = codec.next_event()
            if event is CLOSED:
                return
            if event is NEED_DATA:
                if codec.buffered:
                    with trio.fail_after(config.read_timeout_s):
                        data = await stream.receive_some(_RECEIVE_SIZE)
                else:
                    # Idle between calls: a consumer may wait as long as it likes.
                    data = await stream.receive_some(_RECEIVE_SIZE)
                codec.receive_data(data)
                continue
            reply = await self._answer(codec, event)
            with trio.fail_after(config.send_timeout_s):
                # The records go out as they were read, between the reply's own bytes:
                # joining them would copy a whole response on the event loop.
                for part in reply:
                    await stream.send_all(part)
            del reply  # the one response this connection holds is gone before the next read

    async def _answer(
        self, codec: FetchServerConnection, event: FetchCall | RejectedFetchCall
    ) -> list[bytes | memoryview]:
        if isinstance(event, RejectedFetchCall):
            return [codec.reply_rejected(event)]
        try:
            value = await self._call(event)
        except FetchRefused as refused:
            return [codec.reply_refused(event, refused)]
        except Exception:
            log.exception("fetch handler failed: method=%s", event.name)
            return [
                codec.reply_exception(
                    event, AppErrorType.INTERNAL_ERROR, f"internal error in {event.name}"
                )
            ]
        return codec.reply_parts(event, value)

    async def _call(self, call: FetchCall) -> ReplyValue:
        request = call.request
        if isinstance(request, FetchRequest):
            return await self.handler.fetch(request)
        if isinstance(request, TimeLookup):
            return await self.handler.offset_for_time(request)
        return await self.handler.describe()


async def serve_fetch(
    handler: FetchHandler,
    config: FetchServerConfig | None = None,
    *,
    policy: ConnectionPolicy | None = None,
    task_status: trio.TaskStatus[FetchServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the fetch interface on ``config.host:config.port`` until cancelled; reports a
    ``FetchServer`` (with its bound address) through ``task_status`` once listening.
    ``policy`` says who may connect (every peer, in plaintext, when None)."""
    config = config or FetchServerConfig()
    listeners = await trio.open_tcp_listeners(config.port, host=config.host)
    listener = listeners[0]
    for extra in listeners[1:]:
        await extra.aclose()  # one address is enough: a host names one interface
    listener.socket.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    server = FetchServer(handler, config, listener, policy)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server._accept, nursery)
            task_status.started(server)
    finally:
        listener.socket.close()
