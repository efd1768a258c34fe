"""Hostile bytes and hostile categories against a real ``pipeline serve`` process.

Each test: the server keeps running and serves the next client, what was acknowledged before is
intact, nothing lands outside the journal directory, and protocol errors leave a clear log line.
The server runs with a 1 MiB frame limit and a 0.5 s read timeout so the limits are reached fast.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scribe_compat import FbStatus, LogEntry, ResultCode, prepare_log

from .conftest import (
    ServerFactory,
    ServerProcess,
    files_outside,
    journal_messages,
    verify_journal,
    write_config,
)

pytestmark = pytest.mark.timeout(120)

MiB = 1 << 20
READ_TIMEOUT_S = 0.5
CONFIG = f"""
[server]
read_timeout_s = {READ_TIMEOUT_S}

[server.limits]
max_frame_bytes = {MiB}
max_message_bytes = {MiB}
max_unparsed_bytes = {MiB + 256 * 1024}
"""

BASELINE = [b"first", b"second \x00 with NUL", b"\xff\xfe not utf-8"]


@dataclass
class Setup:
    server: ServerProcess
    outer: Path
    journal_dir: Path


@pytest.fixture
def setup(pipeline_server: ServerFactory, tmp_path: Path) -> Iterator[Setup]:
    outer = tmp_path / "outer"
    journal_dir = outer / "journal"
    config = write_config(tmp_path / "pipeline.toml", CONFIG)
    server = pipeline_server(journal_dir=journal_dir, config=config).start()
    with server.client() as client:
        result = client.log([LogEntry(category=b"baseline", message=m) for m in BASELINE])
    assert result == ResultCode.OK
    yield Setup(server, outer, journal_dir)


def assert_healthy(setup: Setup) -> None:
    """Still up, serves the next client, acknowledged data intact, nothing outside the journal."""
    server = setup.server
    assert server.running(), server.log()
    with server.client(strict=True) as client:
        assert client.log([LogEntry(category=b"after", message=b"next client")]) == ResultCode.OK
        assert client.get_status() == FbStatus.ALIVE
    assert journal_messages(setup.journal_dir)[b"baseline"] == BASELINE
    assert not [p for p in verify_journal(setup.journal_dir) if p.fatal]
    assert files_outside(setup.outer, setup.journal_dir) == []


def connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(server.address, timeout=5)


def wait_closed(sock: socket.socket, timeout: float) -> float:
    """Seconds until the server closed the connection (EOF or reset); fails after ``timeout``."""
    began = time.monotonic()
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the server did not close the connection within {timeout}s")
    return time.monotonic() - began


def send_quietly(sock: socket.socket, data: bytes) -> None:
    """Send what the server accepts before it hangs up on us."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(data)


def log_lines(server: ServerProcess, needle: str) -> list[str]:
    return [line for line in server.log().splitlines() if needle in line]


def framed_log(category: bytes, message: bytes, *, strict: bool = False) -> bytes:
    return prepare_log([LogEntry(category=category, message=message)], strict=strict).request


def unframed_log(category: bytes, message: bytes) -> bytes:
    entries = [LogEntry(category=category, message=message)]
    return prepare_log(entries, framed=False, strict=True).request


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(struct.pack(">I", 0x7FFF_FFFF) + b"\x80\x01\x00\x01", id="frame-2GiB"),
        pytest.param(framed_log(b"huge", b"h" * (2 * MiB)), id="frame-2MiB-real"),
        pytest.param(unframed_log(b"huge", b"h" * (2 * MiB)), id="unframed-2MiB-real"),
    ],
)
def test_oversized_input_closes_the_connection(setup: Setup, data: bytes) -> None:
    with connect(setup.server) as sock:
        send_quietly(sock, data)
        wait_closed(sock, timeout=5)
    assert_healthy(setup)
    assert b"huge" not in journal_messages(setup.journal_dir)
    lines = log_lines(setup.server, "protocol error")
    assert lines, setup.server.log()
    assert any("max_frame_bytes" in line or "max_message_bytes" in line for line in lines)


@pytest.mark.parametrize("framed", [True, False], ids=["framed", "unframed"])
def test_truncated_message_then_close(setup: Setup, framed: bool) -> None:
    request = (framed_log if framed else unframed_log)(b"truncated", b"t" * 1000)
    with connect(setup.server) as sock:
        sock.sendall(request[: len(request) // 2])
    deadline = time.monotonic() + 5
    while not log_lines(setup.server, "protocol error") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert_healthy(setup)
    assert b"truncated" not in journal_messages(setup.journal_dir)
    lines = log_lines(setup.server, "protocol error")
    assert lines and "peer=127.0.0.1:" in lines[-1], setup.server.log()


def test_slow_drip_hits_the_read_timeout_and_others_are_served(setup: Setup) -> None:
    request = framed_log(b"dripped", b"d" * 200)
    with connect(setup.server) as sock:
        began = time.monotonic()
        sent = 0
        closed = False
        while sent < len(request) and time.monotonic() - began < 5:
            try:
                sock.sendall(request[sent : sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            sent += 1
            if sent == 3:
                # Another client is served while this one drips.
                with setup.server.client() as other:
                    assert other.log([LogEntry(category=b"other", message=b"o")]) == ResultCode.OK
            time.sleep(0.05)
        if not closed:
            wait_closed(sock, timeout=5)
        elapsed = time.monotonic() - began
    assert sent < len(request), "the whole dripped request went through: no read timeout"
    assert READ_TIMEOUT_S <= elapsed < READ_TIMEOUT_S + 3
    assert log_lines(setup.server, "read timeout"), setup.server.log()
    assert_healthy(setup)
    assert b"dripped" not in journal_messages(setup.journal_dir)


def garbage(rng: random.Random, i: int) -> bytes:
    kind = i % 5
    if kind == 0:
        return rng.randbytes(rng.randint(1, 8192))
    if kind == 1:  # a frame just under the limit, abandoned half-way: the largest buffer
        return struct.pack(">I", MiB - 8) + rng.randbytes(512 * 1024)
    if kind == 2:
        return struct.pack(">I", 0x7FFF_FFFF) + rng.randbytes(100)
    if kind == 3:  # strict header, unknown method, garbage arguments
        name = rng.randbytes(rng.randint(1, 300))
        return b"\x80\x01\x00\x01" + struct.pack(">I", len(name)) + name + rng.randbytes(64)
    # a real request with bytes flipped
    request = bytearray(framed_log(b"flipped", rng.randbytes(64)))
    for _ in range(rng.randint(1, 8)):
        request[rng.randrange(4, len(request))] ^= 1 << rng.randrange(8)
    return bytes(request)


def test_garbage_connections_keep_memory_bounded(setup: Setup) -> None:
    rng = random.Random(1463)
    server = setup.server
    before = server.rss_bytes()
    peak = before
    for wave in range(4):
        socks = []
        for i in range(50):
            sock = connect(server)
            send_quietly(sock, garbage(rng, wave * 50 + i))
            socks.append(sock)
        peak = max(peak, server.rss_bytes())
        for sock in socks:
            sock.close()
    time.sleep(READ_TIMEOUT_S + 0.5)
    after = server.rss_bytes()
    assert peak - before < 100 * MiB, f"RSS grew from {before} to a peak of {peak}"
    assert after - before < 100 * MiB, f"RSS grew from {before} to {after}"
    assert log_lines(server, "protocol error"), server.log()
    assert_healthy(setup)
    # A flipped bit may leave a valid call: it is acknowledged whole or not at all, never torn.
    assert all(len(m) >= 64 for m in journal_messages(setup.journal_dir).get(b"flipped", []))


HOSTILE = [
    b"../x",
    b"/abs",
    b".",
    b"..",
    b"a/../../b",
    b"../../../../../../../../tmp/escaped",
    b"nul\x00byte",
    b"\x00",
    b"c" * 10240,
    b"../" * 3414,
    b"\xff\xfe\xc3\x28 not utf-8",
    b".hidden",
    b"%2E%2E",
    b"~",
    b"con",
    b" ",
]


def test_hostile_categories_stay_inside_the_journal(setup: Setup) -> None:
    assert not Path("/abs").exists() and not Path("/tmp/escaped").exists()
    with setup.server.client() as client:
        for category in HOSTILE:
            message = b"for " + category[:32]
            assert client.log([LogEntry(category=category, message=message)]) == ResultCode.OK
        # All of them again in one call.
        entries = [LogEntry(category=c, message=b"batch") for c in HOSTILE]
        assert client.log(entries) == ResultCode.OK
        counters = client.get_counters()
    assert files_outside(setup.outer, setup.journal_dir) == []
    assert not Path("/abs").exists() and not Path("/tmp/escaped").exists()
    stored = journal_messages(setup.journal_dir)
    blank = [c for c in HOSTILE if not c.strip()]  # Scribe's blank category: counted, dropped
    for category in HOSTILE:
        if category in blank:
            assert category not in stored
            continue
        assert stored[category] == [b"for " + category[:32], b"batch"], category[:40]
    assert counters["scribe_overall:received blank category"] == 2 * len(blank)
    for directory in setup.journal_dir.iterdir():
        assert not directory.name.startswith(".") or directory.name in (".lock", ".journal-id")
        assert len(directory.name) <= 255
    assert_healthy(setup)
