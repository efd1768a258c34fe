"""Peer allowlists (CIDR parsing, the default by bind address, IPv4-mapped peers) and the
client certificate allowlist (identities from ``getpeercert`` and how entries match them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scribe_compat.access import (
    ClientNames,
    PeerFilter,
    certificate_identities,
    is_loopback_host,
    parse_networks,
    peer_filter,
)
from scribe_compat.tls import ClientCertificates, TlsConfig


def test_networks_parse_with_bare_addresses_as_single_hosts() -> None:
    networks = parse_networks(["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", " ::1 "])
    assert [str(n) for n in networks] == ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "::1/128"]


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("10.0.0.0/33", "entry 2, '10.0.0.0/33', is not a CIDR network"),
        ("10.0.0.1/8", "(the network is 10.0.0.0/8)"),
        ("example.com", "entry 2, 'example.com', is not a CIDR network"),
        ("", "entry 2, '', is not a CIDR network"),
    ],
)
def test_a_bad_network_is_named_with_its_position(entry: str, problem: str) -> None:
    with pytest.raises(ValueError, match="entry 2") as raised:
        parse_networks(["127.0.0.1/32", entry])
    assert problem in str(raised.value)


def test_the_filter_admits_listed_networks_only() -> None:
    peers = PeerFilter(parse_networks(["127.0.0.2/32", "10.0.0.0/8", "fd00::/8"]))
    assert peers.admits("127.0.0.2") and peers.admits("10.200.3.4") and peers.admits("fd00::5")
    assert not peers.admits("127.0.0.1") and not peers.admits("11.0.0.1")
    # An IPv4 client on a dual-stack socket is judged by its IPv4 address.
    assert peers.admits("::ffff:10.1.2.3") and not peers.admits("::ffff:11.1.2.3")
    assert not peers.admits("") and not peers.admits("/run/socket")
    assert peers.describe() == "127.0.0.2/32,10.0.0.0/8,fd00::/8"
    assert PeerFilter(()).describe() == "none" and not PeerFilter(()).admits("127.0.0.1")


def test_unset_allow_admits_everyone_on_loopback_and_private_networks_elsewhere() -> None:
    for host in ("127.0.0.1", "127.0.0.5", "::1", "localhost"):
        assert is_loopback_host(host)
        assert peer_filter(None, host).networks is None
    for host in ("0.0.0.0", "::", "10.0.0.5"):
        peers = peer_filter(None, host)
        assert peers.admits("10.1.2.3") and peers.admits("192.168.0.9") and peers.admits("::1")
        assert peers.admits("127.0.0.1") and peers.admits("fe80::1%eth0")
        assert not peers.admits("8.8.8.8") and not peers.admits("2001:4860::8888")
    everyone = peer_filter(["0.0.0.0/0", "::/0"], "0.0.0.0")
    assert everyone.admits("8.8.8.8") and everyone.admits("2001:4860::8888")
    # A list given applies on a loopback bind too.
    assert not peer_filter(["127.0.0.2/32"], "127.0.0.1").admits("127.0.0.1")


PEERCERT = {
    "subject": ((("organizationName", "Example"),), (("commonName", "app1"),)),
    "subjectAltName": (
        ("DNS", "App1.Example.com"),
        ("IP Address", "2001:DB8:0:0:0:0:0:1\n"),
        ("IP Address", "10.0.0.7"),
        ("URI", "spiffe://example.com/app1"),
        ("email", "ops@example.com"),
    ),
}


def test_identities_are_the_common_name_and_the_dns_ip_and_uri_alternative_names() -> None:
    assert certificate_identities(PEERCERT) == (
        "CN=app1",
        "DNS:App1.Example.com",
        "IP:2001:DB8:0:0:0:0:0:1",
        "IP:10.0.0.7",
        "URI:spiffe://example.com/app1",
    )
    assert certificate_identities({}) == ()


@pytest.mark.parametrize(
    ("entry", "matched"),
    [
        ("CN=app1", "CN=app1"),
        ("app1", "CN=app1"),  # bare: the common name or any alternative name
        ("DNS:app1.example.com", "DNS:App1.Example.com"),  # DNS names without regard to case
        ("app1.example.com.", "DNS:App1.Example.com"),
        ("IP:2001:db8::1", "IP:2001:DB8:0:0:0:0:0:1"),  # addresses as addresses
        ("10.0.0.7", "IP:10.0.0.7"),
        ("URI:spiffe://example.com/app1", "URI:spiffe://example.com/app1"),
    ],
)
def test_an_entry_admits_the_identity_it_names(entry: str, matched: str) -> None:
    assert ClientNames((entry,)).match(certificate_identities(PEERCERT)) == matched


@pytest.mark.parametrize(
    "entry",
    [
        "CN=app2",
        "DNS:app1",  # exact: no suffix or wildcard matching
        "DNS:example.com",
        "CN=App1",  # a common name is compared as written
        "URI:spiffe://example.com/app1/extra",
        "IP:10.0.0.8",
        "ops@example.com",  # email names are not identities here
        "DNS:*.example.com",
    ],
)
def test_an_entry_admits_nothing_else(entry: str) -> None:
    assert ClientNames((entry,)).match(certificate_identities(PEERCERT)) is None


@pytest.mark.parametrize(
    ("entries", "problem"),
    [
        (("ok", ""), "entry 2, '': empty"),
        ((" app1",), "entry 1, ' app1': empty, or blanks around it"),
        (("IP:not-an-ip",), "'not-an-ip' is not an IP address"),
        (("DNS:",), "no name after 'DNS:'"),
    ],
)
def test_bad_client_entries_are_named(entries: tuple[str, ...], problem: str) -> None:
    with pytest.raises(ValueError) as raised:
        ClientNames(entries)
    assert problem in str(raised.value)


def test_tls_settings_that_cannot_work_together_are_refused() -> None:
    pem = Path("/etc/server.pem")
    assert not TlsConfig().enabled
    assert TlsConfig(cert=pem, client_certs=ClientCertificates.NONE).enabled
    with pytest.raises(ValueError, match=r"^ca: required to verify client certificates"):
        TlsConfig(cert=pem)
    with pytest.raises(ValueError, match=r"^key: set, but TLS is off without cert"):
        TlsConfig(key=pem)
    with pytest.raises(ValueError, match=r"^allowed_clients: needs client certificates"):
        TlsConfig(cert=pem, client_certs=ClientCertificates.NONE, allowed_clients=("app1",))
    with pytest.raises(ValueError, match="not an IP address"):
        TlsConfig(cert=pem, ca=pem, allowed_clients=("IP:x",))
