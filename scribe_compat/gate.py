"""The gate both servers pass an accepted connection through before reading from it.

``ConnectionPolicy`` is what the application decides (``access.PeerFilter``, and
``tls.TlsPolicy`` or none); ``ConnectionGate`` applies it: ``admits`` checks the peer's address
at accept, before any byte is read, and ``secure`` runs the TLS handshake and the client
allowlist.  Refusals are counted under the server's scope (``server:`` or ``fetch:``) and logged
as warnings with the peer and the reason; a flood of them is bounded by the application's
logging (one kind of line per call site).  A reload replaces ``policy``: connections accepted
from then on see the new one, those open keep theirs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import trio

from scribe_compat.access import PeerFilter
from scribe_compat.errors import TlsHandshakeTimeout, TlsRefused
from scribe_compat.tls import TlsPolicy, accept_tls

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionPolicy:
    """Who may connect to one port: peers by address, and TLS (None: plaintext)."""

    peers: PeerFilter = field(default_factory=PeerFilter)
    tls: TlsPolicy | None = None


def peer_of(stream: trio.SocketStream) -> tuple[str, str]:
    """The peer's host (as ``getpeername`` gives it) and ``host:port`` for log lines."""
    try:
        addr = stream.socket.getpeername()
    except OSError:
        return "", "?"
    if isinstance(addr, tuple) and len(addr) >= 2:
        return str(addr[0]), f"{addr[0]}:{addr[1]}"
    return "", str(addr)


class ConnectionGate:
    """Applies a ``ConnectionPolicy`` for one server; ``scope`` prefixes its counters."""

    def __init__(self, policy: ConnectionPolicy, scope: str) -> None:
        self.policy = policy
        self._scope = scope
        self.refused_by_allowlist = 0
        self.tls_refused = 0
        self.tls_handshake_timeouts = 0

    def admits(self, stream: trio.SocketStream) -> bool:
        """Whether the peer's address is allowed; a refusal is counted and logged."""
        peers = self.policy.peers
        if peers.networks is None:
            return True
        host, peer = peer_of(stream)
        if peers.admits(host):
            return True
        self.refused_by_allowlist += 1
        log.warning(
            "connection refused by allowlist",
            extra={
                "port_scope": self._scope,
                "peer": peer,
                "allow": peers.describe(),
                "refused_total": self.refused_by_allowlist,
            },
        )
        return False

    async def secure(
        self, stream: trio.SocketStream, peer: str
    ) -> trio.SocketStream | trio.SSLStream[trio.SocketStream]:
        """``stream`` itself without TLS; else the TLS stream once the handshake and the
        client allowlist passed.  ``TlsRefused`` (counted and logged) when the connection
        must close."""
        tls = self.policy.tls
        if tls is None:
            return stream
        try:
            return await accept_tls(stream, tls)
        except TlsRefused as refused:
            self.tls_refused += 1
            if isinstance(refused, TlsHandshakeTimeout):
                self.tls_handshake_timeouts += 1
            log.warning(
                "tls connection refused",
                extra={
                    "port_scope": self._scope,
                    "peer": peer,
                    "reason": refused.reason,
                    "identities": ",".join(refused.identities) or "-",
                    "refused_total": self.tls_refused,
                },
            )
            raise

    def counters(self) -> dict[str, int]:
        scope = self._scope
        return {
            f"{scope}:connections refused by allowlist": self.refused_by_allowlist,
            f"{scope}:tls connections refused": self.tls_refused,
            f"{scope}:tls handshake timeouts": self.tls_handshake_timeouts,
        }
