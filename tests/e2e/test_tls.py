"""TLS on the Scribe port of a real ``pipeline serve``, driven by Apache Thrift's ``TSSLSocket``,
and on the fetch port of a daemon, driven by the fetch client; certificates made by trustme.

A client with a listed certificate logs (the message is in the journal); one without a
certificate, one with an unlisted certificate, a plaintext client and one that never starts its
handshake are each closed with one log line and counted, and a good client works after each.
"""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
from tls_certs import Certificates, make_certificates

from consumers import RemoteReadConfig, open_remote_source
from scribe_compat import AsyncFetchClient, TransportError

from .conftest import (
    ServerFactory,
    ServerProcess,
    journal_messages,
    make_config,
    running_daemon,
    write_config,
)

pytestmark = pytest.mark.timeout(90)

HANDSHAKE_TIMEOUT_S = 1.0


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path / "certs")


def tls_table(certs: Certificates) -> str:
    return (
        "[server.tls]\n"
        f'cert = "{certs.server_pem}"\n'
        f'ca = "{certs.ca_pem}"\n'
        'allowed_clients = ["DNS:app1.example"]\n'
        f"handshake_timeout_s = {HANDSHAKE_TIMEOUT_S}\n"
    )


def apache_tls_client(
    apache: SimpleNamespace, server: ServerProcess, certs: Certificates, client: str | None
) -> tuple[Any, Any]:
    from thrift.protocol.TBinaryProtocol import TBinaryProtocolFactory
    from thrift.transport import TSSLSocket, TTransport

    extra = {} if client is None else {"certfile": str(certs.client_pem(client))}
    sock = TSSLSocket.TSSLSocket(*server.address, ca_certs=str(certs.ca_pem), **extra)
    sock.setTimeout(10_000)
    transport = TTransport.TFramedTransport(sock)
    protocol = TBinaryProtocolFactory(strictWrite=False).getProtocol(transport)
    return apache.scribe.Client(protocol), transport


def log_over_tls(
    apache: SimpleNamespace,
    server: ServerProcess,
    certs: Certificates,
    client: str | None,
    message: bytes,
) -> int:
    scribe, transport = apache_tls_client(apache, server, certs, client)
    transport.open()
    try:
        return int(scribe.Log([apache.ttypes.LogEntry(category=b"tls", message=message)]))
    finally:
        transport.close()


def refused_lines(server: ServerProcess) -> list[str]:
    return [
        line
        for line in server.new_log().decode("utf-8", "replace").splitlines()
        if "tls connection refused" in line
    ]


def wait_for_lines(server: ServerProcess, count: int, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while len(lines := refused_lines(server)) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return lines


def test_scribe_port_with_tls_admits_listed_clients_only(
    apache: SimpleNamespace, pipeline_server: ServerFactory, certs: Certificates, tmp_path: Path
) -> None:
    from thrift.transport.TTransport import TTransportException

    config = write_config(tmp_path / "tls.toml", tls_table(certs))
    server = pipeline_server(config=config).start()
    assert "tls=on" in server.new_log().decode() and "client_certs=required" in (
        server.new_log().decode()
    )
    sent = [b"good 0"]
    assert log_over_tls(apache, server, certs, "app1.example", sent[-1]) == 0

    # Each kind of bad client: refused with one log line, and a good client works after it.
    bad_clients = {
        "no certificate": lambda: log_over_tls(apache, server, certs, None, b"x"),
        "unlisted certificate": lambda: log_over_tls(apache, server, certs, "other.example", b"x"),
    }
    for number, (kind, attempt) in enumerate(bad_clients.items(), 1):
        with pytest.raises(TTransportException):
            attempt()
        lines = wait_for_lines(server, number)
        assert len(lines) == number, kind
        sent.append(f"good {number}".encode())
        assert log_over_tls(apache, server, certs, "app1.example", sent[-1]) == 0, kind
    no_cert, unlisted = refused_lines(server)
    assert "certificate" in no_cert
    assert "not in allowed_clients" in unlisted and "DNS:other.example" in unlisted

    # A plaintext Scribe client on the TLS port: a closed connection and one log line.
    from thrift.protocol.TBinaryProtocol import TBinaryProtocolFactory
    from thrift.transport import TSocket, TTransport

    plain = TTransport.TFramedTransport(TSocket.TSocket(*server.address))
    plain.open()
    try:
        with pytest.raises(TTransportException):
            apache.scribe.Client(TBinaryProtocolFactory().getProtocol(plain)).Log(
                [apache.ttypes.LogEntry(category=b"tls", message=b"plain")]
            )
    finally:
        plain.close()
    lines = wait_for_lines(server, 3)
    assert len(lines) == 3 and "handshake failed" in lines[-1]
    sent.append(b"good after plaintext")
    assert log_over_tls(apache, server, certs, "app1.example", sent[-1]) == 0

    # A client that connects and never handshakes is closed after the handshake timeout.
    started = time.monotonic()
    with socket.create_connection(server.address, timeout=10) as silent:
        assert silent.recv(1) == b""
    waited = time.monotonic() - started
    assert HANDSHAKE_TIMEOUT_S * 0.9 <= waited < HANDSHAKE_TIMEOUT_S + 5
    lines = wait_for_lines(server, 4)
    assert len(lines) == 4 and "handshake not complete" in lines[-1]
    sent.append(b"good after silence")
    assert log_over_tls(apache, server, certs, "app1.example", sent[-1]) == 0

    scribe, transport = apache_tls_client(apache, server, certs, "app1.example")
    transport.open()
    try:
        counters = {
            (k.decode() if isinstance(k, bytes) else k): v for k, v in scribe.getCounters().items()
        }
    finally:
        transport.close()
    assert counters["server:tls connections refused"] == 4
    assert counters["server:tls handshake timeouts"] == 1
    assert server.running()
    assert server.terminate() == 0
    assert journal_messages(server.journal_dir)[b"tls"] == sent


def test_optional_client_certificates_admit_clients_without_one(
    apache: SimpleNamespace, pipeline_server: ServerFactory, certs: Certificates, tmp_path: Path
) -> None:
    table = f'[server.tls]\ncert = "{certs.server_pem}"\nca = "{certs.ca_pem}"\n'
    config = write_config(tmp_path / "optional.toml", table + 'client_certs = "optional"\n')
    server = pipeline_server(config=config).start()
    assert log_over_tls(apache, server, certs, None, b"anonymous") == 0
    assert log_over_tls(apache, server, certs, "anyone.example", b"signed") == 0
    assert server.terminate() == 0
    assert journal_messages(server.journal_dir)[b"tls"] == [b"anonymous", b"signed"]


# ------------------------------------------------------------------------- the fetch port


def fetch_tls_config(journal_dir: Path, certs: Certificates) -> Any:
    tls = {
        "cert": str(certs.server_pem),
        "ca": str(certs.ca_pem),
        "allowed_clients": ["consumer.example"],
        "handshake_timeout_s": HANDSHAKE_TIMEOUT_S,
    }
    return make_config(journal_dir, fetch={"port": 0, "tls": tls})


async def describe(address: tuple[str, int], context: ssl.SSLContext | None) -> str:
    client = await AsyncFetchClient.connect(*address, timeout=10, tls=context)
    async with client:
        return (await client.describe()).journal_id


async def test_fetch_port_with_tls_admits_listed_consumers_only(
    tmp_path: Path, certs: Certificates
) -> None:
    async with running_daemon(fetch_tls_config(tmp_path / "j", certs)) as daemon:
        address = daemon.fetch_server.address
        good = certs.client_context("consumer.example")
        journal_id = await describe(address, good)
        bad = {
            "no certificate": certs.client_context(None),
            "unlisted": certs.client_context("stranger.example"),
            "plaintext": None,
        }
        for kind, context in bad.items():
            with pytest.raises(TransportError):
                await describe(address, context)
            assert await describe(address, good) == journal_id, kind
        # One that never handshakes is closed after the timeout.
        with trio.fail_after(HANDSHAKE_TIMEOUT_S + 5):
            silent = await trio.open_tcp_stream(*address)
            async with silent:
                assert await silent.receive_some(1) == b""
        counters = daemon.fetch_server.counters()
        assert counters["fetch:tls connections refused"] == 4
        assert counters["fetch:tls handshake timeouts"] == 1
        # A consumer's remote reader reads through it with the group's TLS settings.
        read = RemoteReadConfig(tls=good, tls_server_name="localhost")
        async with open_remote_source(*address, read) as source:
            assert (await source.describe()).journal_id == journal_id
