"""The HTTP layer: routing rules without sockets, then the h11 loop over a real socket (limits,
bad requests, keep-alive, the connection bound)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing

from pipeline.http import (
    HttpConfig,
    HttpServer,
    Request,
    RequestRejected,
    Response,
    Route,
    Router,
    json_response,
    serve_http,
)


async def hello(request: Request) -> Response:
    return json_response(200, {"hello": request.query.get("name", ["world"])[0]})


async def refuse(_request: Request) -> Response:
    raise RequestRejected(422, "parameter 'name': must not be empty")


ROUTER = Router([Route("/hello", hello, frozenset({"name"})), Route("/refuse", refuse)])


def body(response: Response) -> dict[str, object]:
    document: dict[str, object] = json.loads(response.body)
    return document


async def test_a_known_path_is_served_with_its_parameters() -> None:
    response = await ROUTER.handle(Request("GET", "/hello", {"name": ["journal"]}))
    assert (response.status, body(response)) == (200, {"hello": "journal"})


async def test_an_unknown_path_is_404_naming_the_known_ones() -> None:
    response = await ROUTER.handle(Request("GET", "/nope"))
    assert response.status == 404
    assert body(response) == {"error": "no such path '/nope' (known: /hello, /refuse)"}


async def test_another_method_is_405_with_allow() -> None:
    response = await ROUTER.handle(Request("POST", "/hello"))
    assert response.status == 405
    assert ("Allow", "GET, HEAD") in response.headers
    assert "POST" in str(body(response)["error"])


async def test_an_unknown_query_parameter_is_400_naming_it() -> None:
    response = await ROUTER.handle(Request("GET", "/hello", {"nmae": ["x"]}))
    assert response.status == 400
    assert body(response) == {"error": "unknown query parameter 'nmae' on /hello (known: name)"}


async def test_a_handler_refusal_becomes_its_status_and_problem() -> None:
    response = await ROUTER.handle(Request("GET", "/refuse"))
    assert (response.status, body(response)) == (
        422,
        {"error": "parameter 'name': must not be empty"},
    )


# -- over a socket ------------------------------------------------------------------------------

CONFIG = HttpConfig(
    port=0,
    max_request_head_bytes=1024,
    max_request_body_bytes=16,
    max_connections=2,
    read_timeout_s=0.5,
)


@asynccontextmanager
async def running(config: HttpConfig = CONFIG) -> AsyncIterator[HttpServer]:
    async with trio.open_nursery() as nursery:
        server: HttpServer = await nursery.start(serve_http, ROUTER, config)
        yield server
        nursery.cancel_scope.cancel()


async def exchange(server: HttpServer, data: bytes) -> bytes:
    """Send ``data``, then read until the server closes the connection."""
    stream = await trio.open_tcp_stream(*server.address)
    async with stream:
        await stream.send_all(data)
        received = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                received += chunk
    return received


def status_and_body(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, rest = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(rest)


async def test_a_request_is_answered_and_the_connection_kept_alive() -> None:
    async with running() as server:
        request = b"GET /hello?name=a HTTP/1.1\r\nHost: x\r\n\r\n"
        closing = b"GET /hello?name=b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        raw = await exchange(server, request + closing)
    assert raw.count(b"HTTP/1.1 200 OK") == 2
    assert b'{"hello": "a"}' in raw and b'{"hello": "b"}' in raw


async def test_head_answers_the_headers_only() -> None:
    async with running() as server:
        raw = await exchange(
            server, b"HEAD /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
    assert raw.startswith(b"HTTP/1.1 200 OK")
    assert raw.endswith(b"\r\n\r\n")  # no body
    assert b"Content-Length: 19" in raw  # {"hello": "world"}\n


async def test_garbage_gets_400_naming_the_problem_and_a_closed_connection() -> None:
    async with running() as server:
        raw = await exchange(server, b"NOT HTTP AT ALL\r\n\r\n")
    status, document = status_and_body(raw)
    assert status == 400
    assert str(document["error"]).startswith("bad request: ")


async def test_a_head_over_the_limit_is_431_naming_the_setting() -> None:
    async with running() as server:
        raw = await exchange(
            server, b"GET /hello HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 4096 + b"\r\n\r\n"
        )
    assert status_and_body(raw) == (
        431,
        {"error": "request head is over http.max_request_head_bytes (1024)"},
    )


async def test_a_body_over_the_limit_is_413_before_it_is_read() -> None:
    async with running() as server:
        raw = await exchange(
            server, b"GET /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
        )
    assert status_and_body(raw) == (
        413,
        {"error": "request body of 1000000 bytes is over http.max_request_body_bytes (16)"},
    )


async def test_a_chunked_body_over_the_limit_is_413() -> None:
    chunked = b"GET /hello HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked += b"20\r\n" + b"a" * 32 + b"\r\n0\r\n\r\n"
    async with running() as server:
        raw = await exchange(server, chunked)
    assert status_and_body(raw) == (
        413,
        {"error": "request body is over http.max_request_body_bytes (16)"},
    )


async def test_an_unknown_path_over_the_socket_is_404() -> None:
    async with running() as server:
        raw = await exchange(
            server, b"GET /secret HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
    assert status_and_body(raw)[0] == 404


async def test_a_request_that_never_completes_gets_408() -> None:
    async with running() as server:
        raw = await exchange(server, b"GET /hello HTTP/1.1\r\nHost:")
    assert status_and_body(raw) == (408, {"error": "request not received in 0.5 s"})


async def test_an_idle_connection_is_closed_quietly_after_the_read_timeout() -> None:
    async with running() as server:
        assert await exchange(server, b"") == b""


async def test_beyond_max_connections_a_new_connection_gets_503() -> None:
    async with running() as server:
        first = await trio.open_tcp_stream(*server.address)
        second = await trio.open_tcp_stream(*server.address)
        async with first, second:
            await trio.testing.wait_all_tasks_blocked(0.05)
            assert server.connections == 2
            raw = await exchange(server, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        assert server.refused_connections == 1
    assert status_and_body(raw) == (
        503,
        {"error": "too many connections (http.max_connections = 2)"},
    )
