"""Clients that hold resources, against a real ``pipeline serve`` process.

* Incomplete calls of the largest size on many connections: the server's memory stays within
  its buffer budget (``server.max_buffered_bytes``) and returns near its base once they close.
* Idle connections holding every slot: a new client still gets in (the longest-idle one is
  evicted), and evictions are counted and logged at a bounded rate.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scribe_compat import LogEntry, ResultCode

from .conftest import ServerFactory, ServerProcess, write_config

pytestmark = pytest.mark.timeout(120)

MiB = 1 << 20
FRAME = 16 * MiB  # the default max_frame_bytes
RECEIVE_SIZE = 262144  # the default receive_size: each connection's own read, outside the budget
BUDGET = 17039360  # the smallest allowed: the default max_unparsed_bytes, one call of each size
ATTACKERS = 48
# What the process may hold beyond the budget and one read per connection: allocator slack,
# the copy of the one frame being completed, the interpreter's own growth under load.
MARGIN = 48 * MiB
# After the attackers are gone, RSS returns this close to where it started.
BACK_NEAR_BASE = 32 * MiB


def counters(server: ServerProcess) -> dict[str, int]:
    with server.client() as client:
        result: dict[str, int] = client.get_counters()
        return result


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def settled_rss(server: ServerProcess, seconds: float = 1.0) -> int:
    """The largest RSS seen over ``seconds``."""
    peak = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        peak = max(peak, server.rss_bytes())
        time.sleep(0.05)
    return peak


@contextlib.contextmanager
def incomplete_max_size_calls(server: ServerProcess, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections, each sending all but the last KiB of a maximal frame, as fast as
    the server takes it; closed on exit."""
    payload = struct.pack(">I", FRAME) + b"\x00\x00\x00\x03Log\x01" + b"\x00" * (FRAME - 1024)
    socks = [socket.create_connection(server.address, timeout=5) for _ in range(count)]

    def send(sock: socket.socket) -> None:
        # Blocks once the server stops reading; the timeout ends the thread, not the connection.
        sock.settimeout(8)
        with contextlib.suppress(OSError):
            sock.sendall(payload)

    threads = [threading.Thread(target=send, args=(sock,), daemon=True) for sock in socks]
    for thread in threads:
        thread.start()
    try:
        yield socks
    finally:
        for sock in socks:
            # shutdown first: it wakes a sender blocked in sendall, which close alone does not.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in threads:
            thread.join(10)


def test_incomplete_calls_stay_within_the_buffer_budget_and_memory_comes_back(
    pipeline_server: ServerFactory, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "pipeline.toml", f"[server]\nmax_buffered_bytes = {BUDGET}\n")
    server = pipeline_server(config=config).start()
    with server.client() as client:
        assert client.log([LogEntry(category=b"warm", message=b"up")]) == ResultCode.OK
    base = settled_rss(server, 0.5)

    bound = BUDGET + ATTACKERS * RECEIVE_SIZE + MARGIN
    with incomplete_max_size_calls(server, ATTACKERS):
        wait_for(
            lambda: (
                counters(server).get("server:buffer budget waits", 0) >= 1
                or server.rss_bytes() - base > bound
            ),
            timeout=30,
            what="a connection to wait for the buffer budget",
        )
        time.sleep(1.0)  # every attacker has sent what the server would take
        peak = settled_rss(server)
        held = counters(server).get("server:buffered bytes reserved", 0)
        # Nothing buffered needs no budget: others are served while it is spent.
        with server.client() as client:
            assert client.log([LogEntry(category=b"during", message=b"x")]) == ResultCode.OK
    assert peak - base < bound, f"RSS {base / MiB:.0f} -> {peak / MiB:.0f} MiB during the attack"
    assert 0 < held <= BUDGET

    wait_for(
        lambda: counters(server)["server:connections open"] == 1,  # only the asking client
        timeout=30,
        what="the attackers' connections to close",
    )
    assert counters(server)["server:buffered bytes reserved"] == 0
    after = settled_rss(server)
    assert after - base < BACK_NEAR_BASE, f"RSS {base / MiB:.0f} -> {after / MiB:.0f} MiB after"
    assert server.running()


SLOTS = 8


@pytest.fixture
def small_server(pipeline_server: ServerFactory, tmp_path: Path) -> ServerProcess:
    config = write_config(tmp_path / "pipeline.toml", f"[server]\nmax_connections = {SLOTS}\n")
    return pipeline_server(config=config).start()


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_a_new_client_gets_in_while_idle_connections_hold_every_slot(
    small_server: ServerProcess,
) -> None:
    server = small_server
    idle = []
    for _ in range(SLOTS):
        idle.append(socket.create_connection(server.address, timeout=5))
        time.sleep(0.02)  # accepted in this order, so the first is idle the longest
    time.sleep(0.3)
    try:
        with server.client() as client:
            assert client.log([LogEntry(category=b"new", message=b"in")]) == ResultCode.OK
            got = client.get_counters()
        assert got["server:connections evicted"] == 1
        assert got["server:connections refused"] == 0
        assert closed_by_server(idle[0], timeout=5), "the longest-idle connection is still open"
        assert not closed_by_server(idle[1], timeout=0.2)
    finally:
        for sock in idle:
            sock.close()
    assert "connection evicted" in server.log()


def test_a_flood_of_idle_connections_locks_nobody_out(small_server: ServerProcess) -> None:
    server = small_server
    flood = [socket.create_connection(server.address, timeout=5) for _ in range(10 * SLOTS)]
    time.sleep(0.3)
    try:
        for i in range(20):
            with server.client() as client:
                assert client.log([LogEntry(category=b"c", message=b"%d" % i)]) == ResultCode.OK
        got = counters(server)
    finally:
        for sock in flood:
            sock.close()
    assert got["server:connections evicted"] >= 10 * SLOTS - SLOTS + 1
    assert got["server:connections refused"] == 0
    # Logged at most once a second, with the running total.
    lines = [line for line in server.log().splitlines() if "connection evicted" in line]
    assert 1 <= len(lines) <= 5, lines
    assert "evicted_total=" in lines[0]
