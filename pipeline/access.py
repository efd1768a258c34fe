"""Who may connect to the Scribe and fetch ports: their policies, built from the configuration.

The settings (``[server] allow`` and ``[server.tls]``, ``[fetch] allow`` and ``[fetch.tls]``)
are checked when the configuration loads; what needs the machine (the certificate files) is
read here, once per start or reload, so a reload picks up new certificates for the
connections accepted from then on.  A file that does not load is a configuration error naming
its key (exit 78 at start; at a reload the running policy stays).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pipeline.errors import ConfigError
from scribe_compat.access import peer_filter
from scribe_compat.errors import TlsSetupError
from scribe_compat.gate import ConnectionPolicy
from scribe_compat.tls import TlsConfig, server_policy

log = logging.getLogger(__name__)


def connection_policy(
    allow: Sequence[str] | None, host: str, tls: TlsConfig, key: str
) -> ConnectionPolicy:
    """The policy of a port bound to ``host``; ``key`` is its table (``server``, ``fetch``)."""
    try:
        tls_policy = server_policy(tls)
    except TlsSetupError as exc:
        raise ConfigError(f"{key}.tls.{exc.setting}", exc.problem) from exc
    return ConnectionPolicy(peer_filter(allow, host), tls_policy)


def log_policy(port: str, host: str, policy: ConnectionPolicy, tls: TlsConfig) -> None:
    """One line at start (and reload) saying which peers a port admits, and how."""
    log.info(
        "admitting peers",
        extra={
            "port_scope": port,
            "host": host,
            "allow": policy.peers.describe(),
            "tls": "on" if policy.tls is not None else "off",
            "client_certs": tls.client_certs.value if tls.enabled else "-",
            "allowed_clients": ",".join(tls.allowed_clients) or "-",
        },
    )
