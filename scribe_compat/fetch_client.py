"""``AsyncFetchClient``: a trio client of the fetch interface over one TCP connection.

A thin loop around ``fetch_codec.FetchClientConnection``; it raises only this package's errors:
``TransportError`` (``ClientTimeoutError`` for timeouts) when the connection fails or the call
is cut short (the connection is unusable afterwards: reconnect), ``BadReplyError`` for bytes
that are not a reply, ``FetchRefused`` for a refused call and ``RemoteApplicationError`` for an
exception reply (after both the connection goes on).

With an ``ssl.SSLContext`` (``tls.client_context``) the connection speaks TLS: the handshake is
part of connecting (within its timeout), and the server's certificate must carry
``server_name`` (the host connected to, by default).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from scribe_compat.client import os_reason
from scribe_compat.codec import CLOSED, NEED_DATA
from scribe_compat.errors import (
    BadReplyError,
    ClientTimeoutError,
    FetchRefused,
    ProtocolError,
    RemoteApplicationError,
    TlsRefused,
    TransportError,
)
from scribe_compat.fetch_codec import (
    Describe,
    FetchClientConnection,
    FetchRequest,
    FetchResult,
    JournalDescription,
    ReplyValue,
    Request,
    TimeLookup,
)
from scribe_compat.tls import connect_tls

# Replies are up to a few MiB of records: large reads mean fewer trips through the loop.
_RECEIVE_SIZE = 1 << 20


class AsyncFetchClient:
    """Calls on one client must not overlap.  ``timeout`` bounds each call beyond the server's
    long-poll wait (which the call adds for ``fetch``)."""

    def __init__(self, stream: trio.abc.Stream, *, timeout: float = 30.0, peer: str = "") -> None:
        self._stream = stream
        self._conn = FetchClientConnection()
        self._broken = False
        self.timeout = timeout
        self.peer = peer

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        timeout: float = 30.0,  # noqa: ASYNC109 (kept by the client: it bounds every call)
        *,
        tls: ssl.SSLContext | None = None,
        server_name: str = "",
    ) -> AsyncFetchClient:
        peer = f"{host}:{port}"
        stream: trio.abc.Stream | None = None
        try:
            with trio.fail_after(timeout):
                stream = await trio.open_tcp_stream(host, port)
                if tls is not None:
                    stream = await connect_tls(stream, tls, server_name or host)
        except trio.TooSlowError as exc:
            await _close(stream)
            raise ClientTimeoutError(f"connect timed out after {timeout}s", peer) from exc
        except TlsRefused as exc:
            await _close(stream)
            raise TransportError(f"tls {exc.reason}", peer) from exc
        except OSError as exc:
            raise TransportError(f"connect failed: {os_reason(exc)}", peer) from exc
        return cls(stream, timeout=timeout, peer=peer)

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self._stream)

    async def __aenter__(self) -> AsyncFetchClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def describe(self) -> JournalDescription:
        value = await self._exchange(Describe(), 0)
        assert isinstance(value, JournalDescription)
        return value

    async def fetch(self, request: FetchRequest) -> FetchResult:
        value = await self._exchange(request, request.wait_ms / 1000)
        assert isinstance(value, FetchResult)
        return value

    async def offset_for_time(self, category: bytes, partition: int, timestamp_ms: int) -> int:
        value = await self._exchange(TimeLookup(category, partition, timestamp_ms), 0)
        assert isinstance(value, int)
        return value

    async def _exchange(self, request: Request, wait_s: float) -> ReplyValue:
        if self._broken:
            raise TransportError("connection unusable after an earlier failure", self.peer)
        # Mid-call until the reply is read: a failure or a cancellation in between leaves the
        # connection unusable, so it is marked broken up front.
        self._broken = True
        try:
            with trio.fail_after(self.timeout + wait_s):
                await self._stream.send_all(self._conn.call(request))
                value = await self._receive_reply()
        except (FetchRefused, RemoteApplicationError):
            self._broken = False
            raise
        except trio.TooSlowError as exc:
            raise ClientTimeoutError(_no_reply(self.timeout, wait_s), self.peer) from exc
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise TransportError(f"connection failed: {exc}", self.peer) from exc
        self._broken = False
        return value

    async def _receive_reply(self) -> ReplyValue:
        conn = self._conn
        while True:
            try:
                event = conn.next_event()
            except ProtocolError as exc:
                raise BadReplyError(exc.reason) from exc
            if event is CLOSED:
                raise TransportError("server closed the connection", self.peer)
            if event is not NEED_DATA:
                return event
            buffer = conn.receive_buffer()
            stream = self._stream
            if buffer is not None and isinstance(stream, trio.SocketStream):
                # A large reply goes straight into its own buffer (TLS decrypts into its own).
                conn.received(await stream.socket.recv_into(buffer))
            else:
                conn.receive_data(await stream.receive_some(_RECEIVE_SIZE))


def _no_reply(timeout: float, wait_s: float) -> str:
    # The whole bound, not the timeout alone: a fetch's includes the long poll it asked for.
    if not wait_s:
        return f"no reply within {timeout:g}s"
    return f"no reply within {timeout + wait_s:g}s (timeout {timeout:g}s + wait {wait_s:g}s)"


async def _close(stream: trio.abc.Stream | None) -> None:
    if stream is not None:
        await trio.aclose_forcefully(stream)


@asynccontextmanager
async def open_fetch_client(
    host: str,
    port: int,
    timeout: float = 30.0,  # noqa: ASYNC109 (kept by the client: it bounds every call)
    *,
    tls: ssl.SSLContext | None = None,
    server_name: str = "",
) -> AsyncIterator[AsyncFetchClient]:
    """``AsyncFetchClient.connect`` as an async context manager that closes the connection."""
    client = await AsyncFetchClient.connect(host, port, timeout, tls=tls, server_name=server_name)
    async with client:
        yield client
