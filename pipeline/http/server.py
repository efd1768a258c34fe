"""The HTTP/1.1 server: h11's state machine driven by a small trio loop.

Why h11 and not hypercorn: h11 is sans-IO (bytes in, events out), as our own Thrift codec is
(STYLE 1), so every limit below sits in this module where a reader sees it, and it brings no
dependencies; hypercorn would add an ASGI layer, its own configuration language and a dozen
packages to serve three GET routes.  h11 checks the request's syntax and framing; this loop
adds what h11 leaves to its user: a size limit on bodies, a deadline per request, a bound on
connections, and the answer to each protocol error.

Per connection: read one request within ``read_timeout_s`` (head at most
``max_request_head_bytes``, else 431; body at most ``max_request_body_bytes``, else 413), hand
it to the router, send the response within ``send_timeout_s``, and keep the connection for the
next request unless either side asked to close.  A request h11 cannot parse gets its 4xx with
h11's reason and the connection closes.  Beyond ``max_connections`` a new connection gets 503.
"""

from __future__ import annotations

import http
import logging
import urllib.parse
from dataclasses import dataclass

import h11
import trio

from pipeline.http.config import HttpConfig
from pipeline.http.messages import Request, Response, error_response
from pipeline.http.router import Router

log = logging.getLogger(__name__)

# Bytes asked of the socket per read: a whole request head fits in one.
RECEIVE_BYTES = 64 * 1024
# How long a refused connection is read from before it is closed (see ``_linger``).
LINGER_S = 1.0


@dataclass
class HttpServer:
    """The running server, as ``serve_http`` reports it through ``task_status``."""

    address: tuple[str, int]
    connections: int = 0
    # Connections answered 503 because ``max_connections`` were open.
    refused_connections: int = 0


class _Closed(Exception):  # noqa: N818 (internal signal, never escapes)
    """The client closed the connection, or the request did not arrive in time."""


async def serve_http(
    router: Router,
    config: HttpConfig,
    *,
    task_status: trio.TaskStatus[HttpServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``router`` on ``config.host:config.port`` until cancelled."""
    assert config.port is not None, "serve_http needs [http] port"
    listeners = await trio.open_tcp_listeners(config.port, host=config.host)
    host, port = listeners[0].socket.getsockname()[:2]
    server = HttpServer((host, port))

    async def handle(stream: trio.SocketStream) -> None:
        await _serve_connection(stream, router, config, server)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, listeners)
        log.info("http listening", extra={"host": host, "port": port})
        task_status.started(server)


async def _serve_connection(
    stream: trio.SocketStream, router: Router, config: HttpConfig, server: HttpServer
) -> None:
    async with stream:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=config.max_request_head_bytes)
        if server.connections >= config.max_connections:
            server.refused_connections += 1
            problem = f"too many connections (http.max_connections = {config.max_connections})"
            await _respond(conn, stream, config, error_response(503, problem), head_only=False)
            await _linger(stream)
            return
        server.connections += 1
        try:
            await _serve_requests(conn, stream, router, config)
        except (_Closed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            server.connections -= 1


async def _serve_requests(
    conn: h11.Connection, stream: trio.SocketStream, router: Router, config: HttpConfig
) -> None:
    while True:
        with trio.move_on_after(config.read_timeout_s) as deadline:
            request, refusal = await _read_request(conn, stream, config)
        if deadline.cancelled_caught:
            if conn.their_state is h11.IDLE and not conn.trailing_data[0]:
                return  # an idle kept-alive connection: close it quietly
            refusal = error_response(408, f"request not received in {config.read_timeout_s} s")
        if refusal is not None:
            await _respond(conn, stream, config, refusal, head_only=False, close=True)
            await _linger(stream)
            return
        assert request is not None
        response = await router.handle(request)
        await _respond(conn, stream, config, response, head_only=request.method == "HEAD")
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return  # either side asked to close (HTTP/1.0, Connection: close)
        conn.start_next_cycle()


async def _linger(stream: trio.SocketStream) -> None:
    """Close our side and read what the client still sends, for a moment, before closing: a
    socket closed with unread input sends a reset, which can destroy the error response
    before the client reads it."""
    with trio.move_on_after(LINGER_S):
        await stream.send_eof()
        while await stream.receive_some(RECEIVE_BYTES):
            pass


async def _next_event(conn: h11.Connection, stream: trio.SocketStream) -> h11.Event:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(RECEIVE_BYTES))
            continue
        if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            raise _Closed
        assert isinstance(event, h11.Event)
        return event


async def _read_request(
    conn: h11.Connection, stream: trio.SocketStream, config: HttpConfig
) -> tuple[Request | None, Response | None]:
    """The next request, or the error response to send instead (then the connection closes)."""
    try:
        event = await _next_event(conn, stream)
        if not isinstance(event, h11.Request):
            return None, error_response(400, f"expected a request, got {type(event).__name__}")
        if _head_size(event) > config.max_request_head_bytes:
            # h11 bounds only what it buffers of an incomplete head; a whole one that came in
            # a single read is measured here.
            raise h11.RemoteProtocolError("head too large", error_status_hint=431)
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in event.headers}
        limit = config.max_request_body_bytes
        declared = headers.get("content-length")
        if declared is not None and int(declared) > limit:
            return None, error_response(
                413,
                f"request body of {declared} bytes is over http.max_request_body_bytes ({limit})",
            )
        received = 0
        while not isinstance(body := await _next_event(conn, stream), h11.EndOfMessage):
            if isinstance(body, h11.Data):
                received += len(body.data)
                if received > limit:
                    return None, error_response(
                        413, f"request body is over http.max_request_body_bytes ({limit})"
                    )
    except h11.RemoteProtocolError as exc:
        status = exc.error_status_hint
        if status == 431:
            limit = config.max_request_head_bytes
            problem = f"request head is over http.max_request_head_bytes ({limit})"
        else:
            problem = f"bad request: {exc}"
        return None, error_response(status, problem)
    return _request(event, headers), None


def _head_size(event: h11.Request) -> int:
    """The request head's size as sent, near enough: line and headers with their separators."""
    line = len(event.method) + len(event.target) + 11  # b" " + b" HTTP/1.1\r\n"
    return line + sum(len(name) + len(value) + 4 for name, value in event.headers) + 2


def _request(event: h11.Request, headers: dict[str, str]) -> Request:
    target = urllib.parse.urlsplit(event.target.decode("ascii", "replace"))
    query = urllib.parse.parse_qs(target.query, keep_blank_values=True)
    path = urllib.parse.unquote(target.path) or "/"
    return Request(event.method.decode("ascii"), path, query, headers)


async def _respond(
    conn: h11.Connection,
    stream: trio.SocketStream,
    config: HttpConfig,
    response: Response,
    *,
    head_only: bool,
    close: bool = False,
) -> None:
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return  # nothing can be said on this connection any more
    headers = [
        ("Content-Type", response.content_type),
        ("Content-Length", str(len(response.body))),
        *response.headers,
    ]
    if close:
        headers.append(("Connection", "close"))
    events: list[h11.Event] = [
        h11.Response(
            status_code=response.status,
            headers=headers,
            reason=http.HTTPStatus(response.status).phrase.encode(),
        )
    ]
    if response.body and not head_only:
        events.append(h11.Data(data=response.body))
    events.append(h11.EndOfMessage())
    try:
        data = b"".join(conn.send(event) or b"" for event in events)
    except h11.LocalProtocolError:
        log.exception("http response could not be framed")
        raise _Closed from None
    with trio.move_on_after(config.send_timeout_s) as deadline:
        await stream.send_all(data)
    if deadline.cancelled_caught:
        raise _Closed
