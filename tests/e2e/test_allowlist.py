"""The peer allowlist of a real ``pipeline serve`` (Scribe port) and of a daemon's fetch port.

Linux routes all of 127.0.0.0/8 to the loopback interface, so a server bound to 127.0.0.1 with
``allow = ["127.0.0.2/32"]`` hears from a client whose socket is bound to 127.0.0.2 and refuses
one connecting from 127.0.0.1.  Refusals happen at accept, are counted, and under a flood are
logged at a bounded rate (``log.repeat_burst`` lines per window).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import trio

from scribe_compat import AsyncFetchClient, LogEntry, ScribeClient, TransportError

from .conftest import (
    ServerFactory,
    ServerProcess,
    journal_messages,
    make_config,
    running_daemon,
    write_config,
)

pytestmark = pytest.mark.timeout(90)

ALLOWED_SOURCE = "127.0.0.2"
FLOOD = 300
BURST = 3


def client_from(source: str, server: ServerProcess) -> ScribeClient:
    sock = socket.create_connection(server.address, timeout=10, source_address=(source, 0))
    return ScribeClient(sock, framed=True, strict=False, peer=f"{server.address}")


def refusal_lines(server: ServerProcess) -> list[str]:
    text = server.new_log().decode("utf-8", "replace")
    return [line for line in text.splitlines() if "connection refused by allowlist" in line]


def test_scribe_port_admits_only_the_listed_networks_and_bounds_its_log_lines(
    pipeline_server: ServerFactory, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "allow.toml",
        f'[server]\nallow = ["{ALLOWED_SOURCE}/32"]\n[log]\nrepeat_burst = {BURST}\n',
    )
    server = pipeline_server(config=config).start()
    assert f"allow={ALLOWED_SOURCE}/32" in server.new_log().decode()

    with client_from(ALLOWED_SOURCE, server) as allowed:
        assert allowed.log([LogEntry(b"allowed", b"from 127.0.0.2")]) == 0
    with pytest.raises(TransportError), client_from("127.0.0.1", server) as refused:
        refused.log([LogEntry(b"refused", b"from 127.0.0.1")])

    # A flood of refused connections: each counted, a bounded number of log lines.
    for _ in range(FLOOD):
        with socket.create_connection(server.address, timeout=10) as sock:
            assert sock.recv(1) == b""  # closed at accept, before the client sends anything
    with client_from(ALLOWED_SOURCE, server) as allowed:
        assert allowed.log([LogEntry(b"allowed", b"after the flood")]) == 0
        counters = allowed.get_counters()
    assert counters["server:connections refused by allowlist"] == FLOOD + 1
    # Refused peers never took a connection slot.
    assert counters["server:connections evicted"] == 0
    lines = refusal_lines(server)
    assert 1 <= len(lines) <= BURST, lines
    assert "peer=127.0.0.1:" in lines[0]
    assert server.terminate() == 0
    messages = journal_messages(server.journal_dir)
    assert messages == {b"allowed": [b"from 127.0.0.2", b"after the flood"]}


def test_non_loopback_bind_without_allow_admits_private_networks_and_says_so(
    pipeline_server: ServerFactory, tmp_path: Path
) -> None:
    # The later --host wins over the fixture's 127.0.0.1.
    server = pipeline_server(extra=["--host", "0.0.0.0"]).start()
    line = next(
        line for line in server.new_log().decode().splitlines() if "admitting peers" in line
    )
    assert "10.0.0.0/8" in line and "127.0.0.0/8" in line and "0.0.0.0/0" not in line
    with client_from("127.0.0.1", server) as loopback:  # loopback is private: admitted
        assert loopback.log([LogEntry(b"lo", b"x")]) == 0
    assert server.terminate() == 0


async def fetch_client_from(source: str, address: tuple[str, int]) -> AsyncFetchClient:
    sock = trio.socket.socket()
    await sock.bind((source, 0))
    await sock.connect(address)
    return AsyncFetchClient(trio.SocketStream(sock), timeout=10, peer=str(address))


async def test_fetch_port_admits_only_the_listed_networks(tmp_path: Path) -> None:
    config = make_config(tmp_path / "j", fetch={"port": 0, "allow": [f"{ALLOWED_SOURCE}/32"]})
    async with running_daemon(config) as daemon:
        address = daemon.fetch_server.address
        async with await fetch_client_from(ALLOWED_SOURCE, address) as allowed:
            journal_id = (await allowed.describe()).journal_id
        assert journal_id
        with trio.fail_after(10):
            for _ in range(20):
                client = await AsyncFetchClient.connect(*address, timeout=10)
                async with client:
                    with pytest.raises(TransportError):
                        await client.describe()
        assert daemon.fetch_server.counters()["fetch:connections refused by allowlist"] == 20
        # The Scribe port's own rule is its own: bound to loopback, it admits every peer.
        assert daemon.server.counters()["server:connections refused by allowlist"] == 0
        started = time.monotonic()
        async with await fetch_client_from(ALLOWED_SOURCE, address) as allowed:
            assert (await allowed.describe()).journal_id == journal_id
        assert time.monotonic() - started < 5
