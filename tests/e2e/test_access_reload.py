"""A reload (fb303 reinitialize, SIGHUP) applies a new allowlist and new certificate files to
the connections accepted from then on; files that do not load leave the running policy."""

from __future__ import annotations

import ssl
from pathlib import Path

import trio
from tls_certs import Certificates, make_certificates

from pipeline import config as config_module
from scribe_compat import AsyncScribeClient, LogEntry, TransportError

from .conftest import journal_messages, running_daemon


def write(path: Path, journal: Path, server: str) -> None:
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = 0\ndrain_timeout_s = 2.0\n{server}'
        f'[journal]\ndir = "{journal}"\n'
    )


def tls_table(certs: Certificates) -> str:
    return f'[server.tls]\ncert = "{certs.server_pem}"\nclient_certs = "none"\n'


async def log_once(
    address: tuple[str, int], message: bytes, context: ssl.SSLContext | None = None
) -> int:
    with trio.fail_after(10):
        stream: trio.abc.Stream = await trio.open_tcp_stream(*address)
        if context is not None:
            stream = trio.SSLStream(stream, context, server_hostname="127.0.0.1")
        client = AsyncScribeClient(stream, timeout=10, peer=str(address))
        async with client:
            return int(await client.log([LogEntry(b"reloaded", message)]))


async def refused(address: tuple[str, int], context: ssl.SSLContext | None = None) -> bool:
    try:
        await log_once(address, b"refused", context)
    except (TransportError, trio.BrokenResourceError, ssl.SSLError):
        return True
    return False


async def test_a_reload_applies_new_allowlists_and_certificates(tmp_path: Path) -> None:
    path, journal = tmp_path / "pipeline.toml", tmp_path / "journal"
    first, second = make_certificates(tmp_path / "a"), make_certificates(tmp_path / "b")
    write(path, journal, 'allow = ["127.0.0.2/32"]\n')
    async with running_daemon(config_module.load(path, environ={})) as daemon:
        address = daemon.address
        assert await refused(address)

        write(path, journal, 'allow = ["127.0.0.1/32"]\n' + tls_table(first))
        await daemon.reload("test")
        assert await log_once(address, b"first", first.client_context(None)) == 0
        assert await refused(address)  # plaintext, now that the port speaks TLS

        # New certificate files: new connections get the new certificate.
        write(path, journal, tls_table(second))
        await daemon.reload("test")
        assert await refused(address, first.client_context(None))
        assert await log_once(address, b"second", second.client_context(None)) == 0

        # Files that do not load: the reload fails naming the key, the running policy stays.
        (tmp_path / "b" / "server.pem").write_text("not a certificate\n")
        await daemon.reload("test")
        assert "server.tls.cert" in daemon.service.get_status_details()
        assert await log_once(address, b"still", second.client_context(None)) == 0
        counters = daemon.server.counters()
        assert counters["server:connections refused by allowlist"] == 1
        assert counters["server:tls connections refused"] == 2
    assert journal_messages(journal)[b"reloaded"] == [b"first", b"second", b"still"]
