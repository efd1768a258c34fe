"""A client cannot flood the server's log: repeated warnings of one kind are held back after the
first few, counted, and summed up in one line (against a real ``pipeline serve`` process)."""

from __future__ import annotations

import random
import re
import socket
import struct

import pytest

from pipeline.logs import SUPPRESSED_COUNTER

from .conftest import ServerFactory, ServerProcess

pytestmark = pytest.mark.timeout(120)

CALLS = 2000
SUMMARY = re.compile(r"msg=\"repeated log lines held back\" suppressed=(\d+) of=\"([^\"]*)\"")


def unknown_method_call(seqid: int) -> bytes:
    # Strict binary header, CALL, a method no Scribe server has, empty arguments.
    name = b"\x1b]0;pwned\x07noSuchMethod"
    message = b"\x80\x01\x00\x01" + struct.pack(">I", len(name)) + name
    message += struct.pack(">i", seqid) + b"\x00"
    return struct.pack(">I", len(message)) + message


def read_replies(sock: socket.socket, count: int) -> None:
    buffer = b""
    for _ in range(count):
        while len(buffer) < 4 or len(buffer) < 4 + struct.unpack(">I", buffer[:4])[0]:
            chunk = sock.recv(65536)
            assert chunk, "the server closed the connection"
            buffer += chunk
        buffer = buffer[4 + struct.unpack(">I", buffer[:4])[0] :]


def lines_of(server: ServerProcess, kind: str) -> tuple[int, int]:
    """Lines of ``kind`` written, and the lines the summaries say were held back."""
    text = server.log()
    written = sum(1 for line in text.splitlines() if f'msg="{kind}' in line)
    held = sum(int(n) for n, of in SUMMARY.findall(text) if of.startswith(kind))
    return written, held


def test_unknown_method_calls_give_a_few_lines_and_a_count(pipeline_server: ServerFactory) -> None:
    server = pipeline_server().start()
    with socket.create_connection(server.address, timeout=30) as sock:
        sock.sendall(b"".join(unknown_method_call(i) for i in range(CALLS)))
        read_replies(sock, CALLS)
    with server.client() as client:
        suppressed = client.get_counter(SUPPRESSED_COUNTER)
    assert server.terminate() == 0  # held-back lines are summed up at exit at the latest
    written, held = lines_of(server, "call rejected")
    assert written + held == CALLS
    assert held == suppressed
    assert written <= 50, f"{written} lines for {CALLS} bad calls"
    assert len(server.log().splitlines()) <= 80
    assert "\x1b" not in server.log() and "\x07" not in server.log()


def test_garbage_connections_give_a_few_lines_and_a_count(pipeline_server: ServerFactory) -> None:
    server = pipeline_server().start()
    rng = random.Random(8)
    connections = 300
    for _ in range(connections):
        with socket.create_connection(server.address, timeout=10) as sock:
            # A strict header with a bad version: a protocol error, the connection closed.
            sock.sendall(struct.pack(">I", 64) + b"\x80\x07" + rng.randbytes(62))
            sock.settimeout(10)
            while sock.recv(4096):
                pass
    with server.client() as client:
        assert client.get_counter(SUPPRESSED_COUNTER) > 0
    assert server.terminate() == 0
    written, held = lines_of(server, "protocol error")
    assert written + held == connections
    assert written <= 50, f"{written} lines for {connections} garbage connections"
