"""The tools that talk to a server, meeting the wrong one: nothing listening, an HTTP server,
a message over the server's limit, an address with an empty port, numbers out of range.
Each failure is one line on stderr and a non-zero exit, naming the peer once."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pipeline.cli import main

pytestmark = pytest.mark.timeout(30)


def invoke(*args: str | Path, input: bytes | None = None) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def one_line_error(result: Result) -> str:
    """The single line a failed command wrote on stderr (no traceback)."""
    assert "Traceback" not in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


class Listener:
    """A TCP server on 127.0.0.1 that answers each connection with ``reply`` (once it has
    read something, or at once when ``reply`` is None it only records), in a thread bounded
    by socket timeouts."""

    def __init__(self, reply: bytes | None) -> None:
        self.reply = reply
        self.received = bytearray()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(10)
        self.port = int(self.sock.getsockname()[1])
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(2)
            try:
                data = conn.recv(65536)
                self.received += data
                if self.reply is not None and data:
                    conn.sendall(self.reply)
                    return
                while data := conn.recv(65536):
                    self.received += data
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        self.thread.join(timeout=10)


@pytest.fixture
def http_server() -> Iterator[Listener]:
    server = Listener(
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\nContent-Length: 11\r\n\r\n"
        b"Bad Request"
    )
    yield server
    server.close()


@pytest.mark.parametrize("command", ["ingest", "fairness"])
def test_bench_with_nothing_listening_is_one_line(command: str) -> None:
    port = free_port()
    result = invoke("bench", command, "--target", f"127.0.0.1:{port}", "-d", "1", "--warmup", "0")
    assert result.exit_code == 1, result.output
    line = one_line_error(result)
    assert line == f"Error: 127.0.0.1:{port}: connect failed: Connection refused"


@pytest.mark.parametrize(
    "args",
    [
        ("bench", "ingest", "-b", "-5"),
        ("bench", "ingest", "-s", "-1"),
        ("bench", "ingest", "--connections", "0"),
        ("bench", "ingest", "-d", "0"),
        ("bench", "ingest", "--rate", "-1"),
        ("bench", "ingest", "--categories", "0"),
        ("bench", "machine", "--seconds", "-1"),
        ("bench", "machine", "--write-mb", "0"),
        ("bench", "fairness", "--entries", "0"),
        ("bench", "materialize", "--rows", "0"),
        ("cat", "--timeout", "0", "c"),
        ("cat", "--max-message-bytes", "0", "c"),
        ("ctl", "status", "0"),
        ("ctl", "--timeout", "-1", "status"),
    ],
)
def test_numbers_out_of_range_are_usage_errors(args: tuple[str, ...]) -> None:
    result = invoke(*args, input=b"")
    assert result.exit_code == 2, result.output
    assert "is not in the range" in result.stderr


def test_bench_machine_does_not_create_the_directory_it_is_given(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent" / "x"
    result = invoke("bench", "machine", "--dir", missing, "--seconds", "0.01", "--write-mb", "1")
    assert result.exit_code == 2, result.output
    assert "does not exist" in result.stderr
    assert not missing.parent.exists()


@pytest.mark.parametrize(
    "args",
    [
        ("bench", "ingest", "--target", "127.0.0.1:"),
        ("bench", "fairness", "--target", "127.0.0.1:"),
        ("bench", "materialize", "--cassandra", "127.0.0.1:"),
        ("cat", "-h", "127.0.0.1:", "c"),
        ("journal", "replay", "-c", "c", "--to-scribe", "127.0.0.1:"),
    ],
)
def test_an_empty_port_is_an_error_not_the_default(args: tuple[str, ...]) -> None:
    result = invoke(*args, input=b"x")
    assert result.exit_code == 2, result.output
    assert "empty port in '127.0.0.1:'" in result.stderr


def test_cat_to_an_http_server_says_it_does_not_speak_thrift(http_server: Listener) -> None:
    result = invoke("cat", "-h", f"127.0.0.1:{http_server.port}", "c", input=b"hello")
    assert result.exit_code == 1, result.output
    line = one_line_error(result)
    assert line.startswith(f"Error: 127.0.0.1:{http_server.port}: the peer does not speak framed")
    assert "b'HTTP/1.1 400 Bad' (they look like HTTP" in line
    assert line.count(str(http_server.port)) == 1


def test_bench_ingest_to_an_http_server_says_it_does_not_speak_thrift(
    http_server: Listener,
) -> None:
    target = f"127.0.0.1:{http_server.port}"
    # One small call: the server answers it whole before closing.
    args = (
        "--target",
        target,
        "--connections",
        "1",
        "-b",
        "1",
        "-s",
        "10",
        "-d",
        "1",
        "--warmup",
        "0",
    )
    result = invoke("bench", "ingest", *args)
    assert result.exit_code == 1, result.output
    assert "does not speak framed Thrift" in one_line_error(result)


def test_cat_refuses_a_message_over_the_limit_before_sending_it() -> None:
    listener = Listener(reply=None)
    try:
        target = f"127.0.0.1:{listener.port}"
        result = invoke("cat", "-h", target, "--max-message-bytes", "1000", "c", input=b"x" * 2000)
    finally:
        listener.close()
    assert result.exit_code == 1, result.output
    line = one_line_error(result)
    assert "over the server's limit of 1,000 bytes" in line
    assert "--max-message-bytes" in line and "not sent" in line
    assert listener.received == b""


def test_cat_limit_defaults_to_the_server_s(tmp_path: Path) -> None:
    listener = Listener(reply=None)
    try:
        target = f"127.0.0.1:{listener.port}"
        result = invoke("cat", "-h", target, "c", input=b"x" * (16 * 1024 * 1024))
    finally:
        listener.close()
    assert result.exit_code == 1, result.output
    assert "over the server's limit of 16,777,216 bytes" in one_line_error(result)
    assert listener.received == b""
