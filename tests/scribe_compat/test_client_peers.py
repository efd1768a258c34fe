"""The client side meeting a peer that is not a Scribe server, or a server's limit: the codec
says what the peer speaks instead of quoting a frame limit, and refuses a call the server
would refuse before a byte of it is sent."""

from __future__ import annotations

import socket

import pytest

from scribe_compat import (
    BadReplyError,
    ClientConnection,
    LogEntry,
    MalformedMessage,
    NotThrift,
    ProtocolError,
    Reply,
    RequestTooLargeError,
    ScribeClient,
    ServerConnection,
    TransportError,
    prepare_log,
)

HTTP_REPLY = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"


@pytest.mark.parametrize("framed", [True, False])
def test_an_http_reply_is_named_as_http(framed: bool) -> None:
    client = ClientConnection(framed=framed)
    client.call("getName")
    client.receive_data(HTTP_REPLY)
    with pytest.raises(NotThrift) as caught:
        client.next_event()
    kind = "framed" if framed else "unframed"
    assert str(caught.value).startswith(
        f"the peer does not speak {kind} Thrift: its reply begins b'HTTP/1.1 400 Bad'"
        " (they look like HTTP"
    )
    assert isinstance(caught.value, MalformedMessage)  # still the codec's protocol error


def test_an_html_body_and_other_bytes_are_not_thrift_either() -> None:
    client = ClientConnection()
    client.call("getName")
    client.receive_data(b"<!DOCTYPE HTML>\n<html>")
    with pytest.raises(NotThrift, match="look like HTML"):
        client.next_event()
    other = ClientConnection()
    other.call("getName")
    other.receive_data(b"\x00\x00\x00\x05SSH-2")  # a small frame that holds no Thrift header
    with pytest.raises(NotThrift, match=r"begins b'\\x00\\x00\\x00\\x05SSH-2'"):
        other.next_event()


def test_a_real_reply_is_not_mistaken_and_later_damage_is_not_blamed_on_the_peer() -> None:
    client = ClientConnection()
    server = ServerConnection()
    server.receive_data(client.call("getName"))
    call = server.next_event()
    client.receive_data(server.reply(call, "scribe"))  # type: ignore[arg-type]
    reply = client.next_event()
    assert isinstance(reply, Reply) and reply.value == "scribe"
    client.call("getName")
    client.receive_data(HTTP_REPLY)
    with pytest.raises(ProtocolError) as caught:
        client.next_event()
    assert not isinstance(caught.value, NotThrift)


def test_a_call_over_the_server_s_limit_is_refused_before_it_is_encoded_into_the_stream() -> None:
    client = ClientConnection(max_request_bytes=1000)
    big = [LogEntry(category=b"c", message=b"x" * 1000)]
    with pytest.raises(RequestTooLargeError) as caught:
        client.call("Log", messages=big)
    assert caught.value.maximum == 1000 and caught.value.size > 1000
    assert "over the server's limit of 1,000 bytes" in str(caught.value)
    assert client.pending == 0  # no reply is awaited for a call never sent
    assert client.call("Log", messages=[LogEntry(category=b"c", message=b"x")])
    # The size the server checks is the message's, without the frame's 4-byte length.
    exact = prepare_log(big)
    ClientConnection(max_request_bytes=len(exact.request) - 4).check_request("Log", exact.request)


def test_a_prepared_call_over_the_limit_is_not_sent() -> None:
    left, right = socket.socketpair()
    with left, right:
        client = ScribeClient(left, max_request_bytes=100, peer="p:1")
        prepared = prepare_log([LogEntry(category=b"c", message=b"x" * 200)])
        with pytest.raises(RequestTooLargeError):
            client.log_prepared(prepared)
        right.setblocking(False)
        with pytest.raises(BlockingIOError):
            right.recv(1)


def test_the_blocking_client_reports_an_http_server_as_a_bad_reply() -> None:
    left, right = socket.socketpair()
    with left, right:
        left.settimeout(5)
        client = ScribeClient(left, peer="p:1")
        right.sendall(HTTP_REPLY)
        with pytest.raises(BadReplyError, match="does not speak framed Thrift"):
            client.get_name()


def test_a_refused_connection_names_the_peer_once() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TransportError) as caught:
        ScribeClient.connect("127.0.0.1", port, timeout=5)
    assert str(caught.value) == f"127.0.0.1:{port}: connect failed: Connection refused"
