"""Who may connect: peers by address, and TLS clients by the names in their certificate.

Pure values and functions, no sockets, so that both are unit-tested with plain data:

* ``PeerFilter``: the CIDR networks a peer's address must fall in (``None``: every address).
  Servers apply it at accept, before reading a byte.  An IPv4 peer on a dual-stack socket
  (``::ffff:10.1.2.3``) is judged by its IPv4 address, as the operator wrote it.
* ``ClientNames``: an allowlist of certificate identities, matched after the TLS handshake
  against what ``certificate_identities`` finds in the peer's certificate: its subject's common
  name and its subject alternative names of kind DNS, IP and URI.

An allowlist entry is written ``CN=name``, ``DNS:name``, ``IP:address`` or ``URI:uri`` to match
one kind only, or as a bare ``name`` to match the common name or any alternative name.  Matching
is exact (DNS names without regard to case, IP addresses as addresses): no wildcards, so an
entry admits exactly the clients it names.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Loopback addresses: a server bound to one only ever hears from its own host.
LOOPBACK_NETWORKS = ("127.0.0.0/8", "::1/128")
# Addresses that are never routed on the Internet: loopback, RFC 1918, link-local, RFC 4193
# unique local IPv6.  Where Scribe fleets live.
PRIVATE_NETWORKS = (
    *LOOPBACK_NETWORKS,
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
)


def parse_networks(entries: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Each entry as a network (``10.0.0.0/8``; an address alone is its own /32 or /128).

    ``ValueError`` naming the entry (1-based) when one is not a network, or has bits set
    beyond its prefix (``10.0.0.1/8``: a typo more often than a wish to admit 10/8)."""
    networks = []
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, str):
            raise ValueError(f"entry {number}, {entry!r}, is not a string")
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=True))
        except ValueError as exc:
            hint = ""
            with contextlib.suppress(ValueError):
                hint = f" (the network is {ipaddress.ip_network(entry.strip(), strict=False)})"
            raise ValueError(
                f"entry {number}, {entry!r}, is not a CIDR network: {exc}{hint}"
            ) from None
    return tuple(networks)


def check_allow(allow: Iterable[str] | None) -> None:
    """A port's ``allow`` setting (None: the default) parses; ``ValueError`` naming it."""
    if allow is not None:
        try:
            parse_networks(allow)
        except ValueError as exc:
            raise ValueError(f"allow: {exc}") from None


def peer_address(text: str) -> IPAddress | None:
    """A peer's address as ``getpeername`` gives it (with a scope, or IPv4-mapped) as the
    address an allowlist speaks of; None when it is not an IP address (a Unix socket)."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.scope_id is not None:
            return ipaddress.IPv6Address(text.split("%", 1)[0])
    return address


def is_loopback_host(host: str) -> bool:
    """Whether a bind address is loopback only (``localhost`` included)."""
    if host == "localhost":
        return True
    address = peer_address(host)
    return address is not None and address.is_loopback


@dataclass(frozen=True)
class PeerFilter:
    """The networks peers may connect from; ``None`` admits every address."""

    networks: tuple[IPNetwork, ...] | None = None

    def admits(self, host: str) -> bool:
        if self.networks is None:
            return True
        address = peer_address(host)
        return address is not None and any(address in network for network in self.networks)

    def describe(self) -> str:
        """For the log line at start: ``all`` or the networks, comma-separated."""
        if self.networks is None:
            return "all"
        return ",".join(str(n) for n in self.networks) or "none"


# getpeercert()'s names for the subject alternative names an allowlist may name.
_SAN_KINDS = {"DNS": "DNS", "IP Address": "IP", "URI": "URI"}
_PREFIXES = ("CN=", "DNS:", "IP:", "URI:")


def certificate_identities(peercert: Mapping[str, Any]) -> tuple[str, ...]:
    """The identities in a certificate as ``ssl.SSLSocket.getpeercert()`` decodes it:
    ``CN=<common name>`` for each common name of the subject, then ``DNS:``, ``IP:`` and
    ``URI:`` for each alternative name of those kinds (others, email say, are left out)."""
    found: list[str] = []
    for rdn in peercert.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                found.append(f"CN={value}")
    for kind, value in peercert.get("subjectAltName", ()):
        prefix = _SAN_KINDS.get(kind)
        if prefix is not None:
            # OpenSSL ends IPv6 addresses with a newline in some versions.
            found.append(f"{prefix}:{str(value).strip()}")
    return tuple(found)


def _canonical(identity: str) -> str:
    """One spelling per identity: DNS names in lower case, IP addresses compressed."""
    if identity.startswith("DNS:"):
        return "DNS:" + identity[4:].lower().rstrip(".")
    if identity.startswith("IP:"):
        try:
            return "IP:" + str(ipaddress.ip_address(identity[3:]))
        except ValueError:
            return identity
    return identity


@dataclass(frozen=True)
class ClientNames:
    """An allowlist of certificate identities (see the module docstring for the syntax)."""

    entries: tuple[str, ...]

    def __post_init__(self) -> None:
        for number, entry in enumerate(self.entries, 1):
            if not entry or entry != entry.strip():
                raise ValueError(f"entry {number}, {entry!r}: empty, or blanks around it")
            prefix = next((p for p in _PREFIXES if entry.startswith(p)), "")
            if prefix and not entry[len(prefix) :]:
                raise ValueError(f"entry {number}, {entry!r}: no name after {prefix!r}")
            if prefix == "IP:" and peer_address(entry[3:]) is None:
                raise ValueError(f"entry {number}, {entry!r}: {entry[3:]!r} is not an IP address")

    def _admitted(self) -> frozenset[str]:
        """Every identity, canonical, that some entry admits."""
        admitted: set[str] = set()
        for entry in self.entries:
            if entry.startswith(_PREFIXES):
                admitted.add(_canonical(entry))
            else:  # a bare name: the common name or any alternative name
                admitted.update(_canonical(f"{p}{entry}") for p in _PREFIXES)
        return frozenset(admitted)

    def match(self, identities: Sequence[str]) -> str | None:
        """The first of ``identities`` an entry admits, or None."""
        admitted = self._admitted()
        return next((i for i in identities if _canonical(i) in admitted), None)


def peer_filter(allow: Sequence[str] | None, host: str) -> PeerFilter:
    """The filter for a port bound to ``host`` with the ``allow`` setting: the networks listed,
    or when unset every peer on a loopback bind, and on any other bind loopback and private
    networks only (``PRIVATE_NETWORKS``): a Scribe port has no authentication, so an address
    reachable from the Internet is not opened to it by leaving a setting out."""
    if allow is not None:
        return PeerFilter(parse_networks(allow))
    if is_loopback_host(host):
        return PeerFilter(None)
    return PeerFilter(parse_networks(PRIVATE_NETWORKS))
