"""Scribe/fb303 clients: ``ScribeClient`` (blocking, for CLI tools), ``AsyncScribeClient`` (trio).

Both are thin loops around ``codec.ClientConnection`` and raise only ``ClientError`` subclasses:
socket and trio errors become ``TransportError`` (``ClientTimeoutError`` for timeouts), replies
that are not valid Thrift become ``BadReplyError`` (saying so plainly when the peer is not a
Thrift server at all: an HTTP server, say), exception replies ``RemoteApplicationError``, and
a call over the server's known limit (``max_request_bytes``) ``RequestTooLargeError``, unsent.
Defaults follow scribe_cat: framed, non-strict; scribe_ctrl's behaviour is ``strict=True``.

``prepare_log`` encodes one ``Log`` request once, for a load generator that resends the same
bytes; ``PreparedLog.parse_reply`` reads the answer back.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import trio

from scribe_compat.codec import CLOSED, NEED_DATA, ClientConnection, CodecLimits, encode_call
from scribe_compat.errors import (
    BadReplyError,
    ClientTimeoutError,
    ProtocolError,
    RemoteApplicationError,
    TransportError,
)
from scribe_compat.idl import METHODS, FbStatus, LogEntry, ResultCode

T = TypeVar("T")

DEFAULT_PORT = 1463
_RECEIVE_SIZE = 65536


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, str):
        return value
    raise BadReplyError(f"expected a string, got {type(value).__name__}")


def _int(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise BadReplyError(f"expected an integer, got {type(value).__name__}")


def _counters(value: object) -> dict[str, int]:
    if not isinstance(value, dict):
        raise BadReplyError(f"expected a map, got {type(value).__name__}")
    return {_text(k): _int(v) for k, v in value.items()}


def _options(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise BadReplyError(f"expected a map, got {type(value).__name__}")
    return {_text(k): _text(v) for k, v in value.items()}


def _result_code(value: object) -> ResultCode:
    try:
        return ResultCode(_int(value))
    except ValueError:
        raise BadReplyError(f"unknown ResultCode {value!r}") from None


def _status(value: object) -> FbStatus:
    try:
        return FbStatus(_int(value))
    except ValueError:
        raise BadReplyError(f"unknown fb_status {value!r}") from None


def _none(value: object) -> None:
    return None


@dataclass(frozen=True)
class PreparedLog:
    """One encoded ``Log`` request (``request``), to be sent as often as wanted."""

    request: bytes
    seqid: int
    framed: bool
    strict: bool
    entries: int

    def parse_reply(self, data: bytes) -> ResultCode:
        """The result in one complete reply to this request; raises ``ClientError``."""
        conn = ClientConnection(framed=self.framed, strict=self.strict)
        conn.expect("Log", self.seqid)
        conn.receive_data(data)
        try:
            reply = conn.next_event()
        except ProtocolError as exc:
            raise BadReplyError(exc.reason) from exc
        if reply is NEED_DATA or reply is CLOSED:
            raise BadReplyError(f"incomplete reply ({len(data)} bytes)")
        return _result_code(reply.value)


def prepare_log(
    entries: Sequence[LogEntry], *, framed: bool = True, strict: bool = False, seqid: int = 0
) -> PreparedLog:
    """Encode ``Log(entries)`` once."""
    args = METHODS["Log"].args(messages=list(entries))
    request = encode_call("Log", args, seqid=seqid, framed=framed, strict=strict)
    return PreparedLog(request, seqid, framed, strict, len(entries))


class ScribeClient:
    """A blocking client over one TCP connection (for ``cat`` and ``ctl``)."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        framed: bool = True,
        strict: bool = False,
        peer: str = "",
        limits: CodecLimits | None = None,
        max_request_bytes: int | None = None,
    ) -> None:
        self._sock = sock
        self._conn = ClientConnection(
            framed=framed, strict=strict, limits=limits, max_request_bytes=max_request_bytes
        )
        self._broken = False
        self.peer = peer

    @classmethod
    def connect(
        cls,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        timeout: float | None = 10.0,
        *,
        framed: bool = True,
        strict: bool = False,
        max_request_bytes: int | None = None,
    ) -> ScribeClient:
        """Connect; ``max_request_bytes`` (the server's limit, when known) refuses a larger
        call before it is sent (``RequestTooLargeError``)."""
        peer = f"{host}:{port}"
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except TimeoutError as exc:
            raise ClientTimeoutError(f"connect timed out after {timeout}s", peer) from exc
        except OSError as exc:
            raise TransportError(f"connect failed: {os_reason(exc)}", peer) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(
            sock, framed=framed, strict=strict, peer=peer, max_request_bytes=max_request_bytes
        )

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> ScribeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, convert: Callable[[object], T], name: str, **args: Any) -> T:
        data = self._conn.call(name, **args)
        return convert(self._exchange(data, not METHODS[name].oneway))

    def _exchange(self, data: bytes, want_reply: bool) -> object:
        if self._broken:
            raise TransportError("connection unusable after an earlier failure", self.peer)
        self._broken = True  # until the reply is read (see AsyncScribeClient._exchange)
        try:
            self._send(data)
            value = self._receive_reply() if want_reply else None
        except RemoteApplicationError:
            self._broken = False
            raise
        self._broken = False
        return value

    def _send(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except TimeoutError as exc:
            raise ClientTimeoutError("send timed out", self.peer) from exc
        except OSError as exc:
            raise TransportError(f"send failed: {exc}", self.peer) from exc

    def _receive_reply(self) -> object:
        conn = self._conn
        while (value := _next_reply(conn, self.peer)) is NEED_DATA:
            try:
                data = self._sock.recv(_RECEIVE_SIZE)
            except TimeoutError as exc:
                raise ClientTimeoutError("no reply within the timeout", self.peer) from exc
            except OSError as exc:
                raise TransportError(f"receive failed: {exc}", self.peer) from exc
            conn.receive_data(data)
        return value

    def log_prepared(self, prepared: PreparedLog) -> ResultCode:
        """Send pre-encoded bytes from ``prepare_log`` and return the result."""
        _check_prepared(prepared, self._conn)
        self._conn.expect("Log", prepared.seqid)
        return _result_code(self._exchange(prepared.request, True))

    # -- the interface --------------------------------------------------------------------------

    def log(self, entries: Sequence[LogEntry]) -> ResultCode:
        return self._call(_result_code, "Log", messages=list(entries))

    def get_name(self) -> str:
        return self._call(_text, "getName")

    def get_version(self) -> str:
        return self._call(_text, "getVersion")

    def get_status(self) -> FbStatus:
        return self._call(_status, "getStatus")

    def get_status_details(self) -> str:
        return self._call(_text, "getStatusDetails")

    def get_counters(self) -> dict[str, int]:
        return self._call(_counters, "getCounters")

    def get_counter(self, key: str) -> int:
        return self._call(_int, "getCounter", key=key)

    def get_selected_counters(self, keys: Sequence[str]) -> dict[str, int]:
        return self._call(_counters, "getSelectedCounters", keys=list(keys))

    def set_option(self, key: str, value: str) -> None:
        self._call(_none, "setOption", key=key, value=value)

    def get_option(self, key: str) -> str:
        return self._call(_text, "getOption", key=key)

    def get_options(self) -> dict[str, str]:
        return self._call(_options, "getOptions")

    def get_cpu_profile(self, seconds: int) -> str:
        return self._call(_text, "getCpuProfile", profileDurationInSec=seconds)

    def alive_since(self) -> int:
        return self._call(_int, "aliveSince")

    def reinitialize(self) -> None:
        self._call(_none, "reinitialize")

    def shutdown(self) -> None:
        self._call(_none, "shutdown")


def _next_reply(conn: ClientConnection, peer: str) -> object:
    """The value of the next complete reply, or ``NEED_DATA``; raises ``ClientError``."""
    try:
        event = conn.next_event()
    except ProtocolError as exc:
        raise BadReplyError(exc.reason) from exc
    if event is CLOSED:
        raise TransportError("server closed the connection", peer)
    if event is NEED_DATA:
        return NEED_DATA
    return event.value


def _check_prepared(prepared: PreparedLog, conn: ClientConnection) -> None:
    if prepared.framed != conn.framed:
        raise ValueError("the prepared request's framing differs from the client's")
    conn.check_request("Log", prepared.request)


def os_reason(exc: OSError) -> str:
    """Why a connect failed, without the address the caller names anyway: the system's words
    (``Connection refused``); trio's "all attempts to connect to H:P failed" gives way to
    those of the attempts it made (each one's errno: trio's text names the address too)."""
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        reasons = dict.fromkeys(os_reason(e) for e in cause.exceptions if isinstance(e, OSError))
        if reasons:
            return "; ".join(reasons)
    if exc.errno is not None and exc.errno > 0:  # a resolver's errors are negative
        return os.strerror(exc.errno)
    return exc.strerror or str(exc)


class AsyncScribeClient:
    """A trio client over one TCP connection (for forwarders and the load generator).

    ``timeout`` bounds each call (send and reply).  Calls on one client must not overlap.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        framed: bool = True,
        strict: bool = False,
        timeout: float = 30.0,
        peer: str = "",
        limits: CodecLimits | None = None,
        max_request_bytes: int | None = None,
    ) -> None:
        self._stream = stream
        self._conn = ClientConnection(
            framed=framed, strict=strict, limits=limits, max_request_bytes=max_request_bytes
        )
        self._broken = False
        self.timeout = timeout
        self.peer = peer

    @classmethod
    async def connect(
        cls,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        timeout: float = 30.0,  # noqa: ASYNC109 (kept by the client: it bounds every call)
        *,
        framed: bool = True,
        strict: bool = False,
    ) -> AsyncScribeClient:
        peer = f"{host}:{port}"
        try:
            with trio.fail_after(timeout):
                stream = await trio.open_tcp_stream(host, port)
        except trio.TooSlowError as exc:
            raise ClientTimeoutError(f"connect timed out after {timeout}s", peer) from exc
        except OSError as exc:
            raise TransportError(f"connect failed: {os_reason(exc)}", peer) from exc
        return cls(stream, framed=framed, strict=strict, timeout=timeout, peer=peer)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def __aenter__(self) -> AsyncScribeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _call(self, convert: Callable[[object], T], name: str, **args: Any) -> T:
        data = self._conn.call(name, **args)
        oneway = METHODS[name].oneway
        value = await self._exchange(data, None if oneway else name)
        return convert(value)

    async def _exchange(self, data: bytes, name: str | None) -> object:
        if self._broken:
            raise TransportError("connection unusable after an earlier failure", self.peer)
        # Until the reply is read, the connection is mid-call: a failure or cancellation in
        # between leaves it unusable, so it is marked broken up front.
        self._broken = True
        try:
            with trio.fail_after(self.timeout):
                await self._stream.send_all(data)
                value = None if name is None else await self._receive_reply()
            self._broken = False
            return value
        except RemoteApplicationError:
            self._broken = False
            raise
        except trio.TooSlowError as exc:
            raise ClientTimeoutError(f"no reply within {self.timeout}s", self.peer) from exc
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise TransportError(f"connection failed: {exc}", self.peer) from exc

    async def _receive_reply(self) -> object:
        conn = self._conn
        while (value := _next_reply(conn, self.peer)) is NEED_DATA:
            conn.receive_data(await self._stream.receive_some(_RECEIVE_SIZE))
        return value

    async def log_prepared(self, prepared: PreparedLog) -> ResultCode:
        """Send pre-encoded bytes from ``prepare_log`` and return the result."""
        _check_prepared(prepared, self._conn)
        self._conn.expect("Log", prepared.seqid)
        return _result_code(await self._exchange(prepared.request, "Log"))

    # -- the interface --------------------------------------------------------------------------

    async def log(self, entries: Sequence[LogEntry]) -> ResultCode:
        return await self._call(_result_code, "Log", messages=list(entries))

    async def get_name(self) -> str:
        return await self._call(_text, "getName")

    async def get_version(self) -> str:
        return await self._call(_text, "getVersion")

    async def get_status(self) -> FbStatus:
        return await self._call(_status, "getStatus")

    async def get_status_details(self) -> str:
        return await self._call(_text, "getStatusDetails")

    async def get_counters(self) -> dict[str, int]:
        return await self._call(_counters, "getCounters")

    async def get_counter(self, key: str) -> int:
        return await self._call(_int, "getCounter", key=key)

    async def get_selected_counters(self, keys: Sequence[str]) -> dict[str, int]:
        return await self._call(_counters, "getSelectedCounters", keys=list(keys))

    async def set_option(self, key: str, value: str) -> None:
        await self._call(_none, "setOption", key=key, value=value)

    async def get_option(self, key: str) -> str:
        return await self._call(_text, "getOption", key=key)

    async def get_options(self) -> dict[str, str]:
        return await self._call(_options, "getOptions")

    async def get_cpu_profile(self, seconds: int) -> str:
        return await self._call(_text, "getCpuProfile", profileDurationInSec=seconds)

    async def alive_since(self) -> int:
        return await self._call(_int, "aliveSince")

    async def reinitialize(self) -> None:
        await self._call(_none, "reinitialize")

    async def shutdown(self) -> None:
        await self._call(_none, "shutdown")


@asynccontextmanager
async def open_scribe_client(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    timeout: float = 30.0,  # noqa: ASYNC109 (kept by the client: it bounds every call)
    *,
    framed: bool = True,
    strict: bool = False,
) -> AsyncIterator[AsyncScribeClient]:
    """``AsyncScribeClient.connect`` as an async context manager that closes the connection."""
    client = await AsyncScribeClient.connect(host, port, timeout, framed=framed, strict=strict)
    async with client:
        yield client
