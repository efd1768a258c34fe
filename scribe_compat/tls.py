"""TLS for the Scribe and fetch ports and their clients: settings, contexts, the handshake.

``TlsConfig`` is a server's ``tls`` table (off unless ``cert`` is set); ``server_context``
builds its ``ssl.SSLContext`` once (TLS 1.2 at least, the CA that signs client certificates,
whether clients must show one), and ``TlsPolicy`` carries that context with the client
allowlist and the handshake's time limit to the server.  ``accept_tls`` wraps an accepted
stream in ``trio.SSLStream``, completes the handshake within that limit (a client that never
finishes it must not hold a connection slot for ever) and checks the client's certificate
names against the allowlist (``access.ClientNames``); a refusal raises ``TlsRefused`` with the
reason, for the server to log and count.

``ClientTlsConfig`` and ``client_context`` are the other side, for the fetch client: the CA that
signs the server's certificate (the system's trust store when unset), an optional client
certificate, and the name to verify the server's certificate against.

Errors (all ``ScribeCompatError``s): ``TlsSetupError`` (a file that does not load, naming the
setting) and ``TlsRefused`` (``TlsHandshakeTimeout`` for a handshake not done in time).
"""

from __future__ import annotations

import enum
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import trio
from annotated_types import Interval

from scribe_compat.access import ClientNames, certificate_identities
from scribe_compat.errors import TlsHandshakeTimeout, TlsRefused, TlsSetupError


class ClientCertificates(enum.Enum):
    """Whether clients must present a certificate signed by the CA."""

    REQUIRED = "required"  # no certificate, no connection
    OPTIONAL = "optional"  # verified when presented; a client without one is admitted
    NONE = "none"  # not asked for: the server alone is authenticated


@dataclass(frozen=True)
class TlsConfig:
    """A server port's ``tls`` table: off unless ``cert`` is set."""

    # The server's certificate chain (PEM).  Unset: plaintext, as Scribe always was.
    cert: Path | None = None
    # Its private key (PEM); unset when the key is in the cert file.
    key: Path | None = None
    # The CA certificates (PEM) that sign client certificates; needed unless client_certs is
    # "none".
    ca: Path | None = None
    # Required by default: a port with TLS is usually one with unknown clients on the network.
    client_certs: ClientCertificates = ClientCertificates.REQUIRED
    # Client certificate identities admitted (CN=..., DNS:..., IP:..., URI:..., or a bare name
    # for any of them).  Empty: every certificate the CA signed.
    allowed_clients: tuple[str, ...] = ()
    # A handshake takes a few round trips (milliseconds on a LAN, under a second across the
    # world); a client that has not finished in 10 s is not going to, and gives its slot back.
    handshake_timeout_s: Annotated[float, Interval(gt=0, le=300)] = 10.0

    def __post_init__(self) -> None:
        try:
            ClientNames(self.allowed_clients)
        except ValueError as exc:
            raise ValueError(f"allowed_clients: {exc}") from None
        if self.cert is None:
            for name in ("key", "ca"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}: set, but TLS is off without cert")
            if self.allowed_clients:
                raise ValueError("allowed_clients: set, but TLS is off without cert")
            return
        if self.client_certs is not ClientCertificates.NONE and self.ca is None:
            raise ValueError(
                f"ca: required to verify client certificates (client_certs ="
                f' "{self.client_certs.value}"); or set client_certs = "none"'
            )
        if self.allowed_clients and self.client_certs is ClientCertificates.NONE:
            raise ValueError(
                'allowed_clients: needs client certificates, but client_certs = "none"'
            )

    @property
    def enabled(self) -> bool:
        return self.cert is not None


@dataclass(frozen=True)
class ClientTlsConfig:
    """How a client speaks TLS to a server port: off unless ``enabled``."""

    enabled: bool = False
    # The CA certificates (PEM) that sign the server's certificate; unset: the system's.
    ca: Path | None = None
    # A client certificate chain and key (PEM), for servers that require one.
    cert: Path | None = None
    key: Path | None = None
    # The name the server's certificate must carry; empty: the host connected to.
    server_name: str = ""

    def __post_init__(self) -> None:
        if self.key is not None and self.cert is None:
            raise ValueError("key: set without cert")


@dataclass(frozen=True)
class TlsPolicy:
    """What a server needs for TLS: the context (built once), the client allowlist, the time
    a handshake may take."""

    context: ssl.SSLContext
    allowed_clients: ClientNames | None  # None: any certificate the CA signed
    handshake_timeout_s: float


def _load(setting: str, path: Path | None, load: Callable[[], object]) -> None:
    try:
        load()
    except (OSError, ssl.SSLError, ValueError) as exc:
        where = "" if path is None else f"{path}: "
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise TlsSetupError(setting, f"{where}cannot load it: {reason}") from exc


def _new_context(purpose: ssl.Purpose) -> ssl.SSLContext:
    context = ssl.create_default_context(purpose)
    # TLS 1.0 and 1.1 are deprecated (RFC 8996); every client of the last decade has 1.2.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def server_context(config: TlsConfig) -> ssl.SSLContext:
    """The ``SSLContext`` of a server port; ``TlsSetupError`` when a file does not load."""
    if config.cert is None:
        raise TlsSetupError("cert", "not set")
    context = _new_context(ssl.Purpose.CLIENT_AUTH)
    cert, key = config.cert, config.key
    _load("cert", cert, lambda: context.load_cert_chain(cert, key))
    ca = config.ca
    if ca is not None:
        _load("ca", ca, lambda: context.load_verify_locations(cafile=ca))
    context.verify_mode = {
        ClientCertificates.REQUIRED: ssl.CERT_REQUIRED,
        ClientCertificates.OPTIONAL: ssl.CERT_OPTIONAL,
        ClientCertificates.NONE: ssl.CERT_NONE,
    }[config.client_certs]
    return context


def server_policy(config: TlsConfig) -> TlsPolicy | None:
    """The policy for a port's ``tls`` table, None when TLS is off."""
    if not config.enabled:
        return None
    names = ClientNames(config.allowed_clients) if config.allowed_clients else None
    return TlsPolicy(server_context(config), names, config.handshake_timeout_s)


def client_context(config: ClientTlsConfig) -> ssl.SSLContext:
    """The ``SSLContext`` of a client; ``TlsSetupError`` when a file does not load."""
    context = _new_context(ssl.Purpose.SERVER_AUTH)
    ca = config.ca
    if ca is not None:
        _load("ca", ca, lambda: context.load_verify_locations(cafile=ca))
    cert, key = config.cert, config.key
    if cert is not None:
        _load("cert", cert, lambda: context.load_cert_chain(cert, key))
    return context


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, ssl.SSLError) and cause.reason:
        # OpenSSL's names (PEER_DID_NOT_RETURN_A_CERTIFICATE) as words for the log.
        return str(cause.reason).lower().replace("_", " ")
    if isinstance(cause, ssl.SSLError):
        return str(cause)
    return str(cause or exc) or type(exc).__name__


async def accept_tls(
    stream: trio.SocketStream, policy: TlsPolicy
) -> trio.SSLStream[trio.SocketStream]:
    """The server's side of the handshake on ``stream``, then the client allowlist;
    ``TlsRefused`` with the reason when the connection must close."""
    secured = trio.SSLStream(stream, policy.context, server_side=True)
    with trio.move_on_after(policy.handshake_timeout_s) as scope:
        try:
            await secured.do_handshake()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise TlsRefused(f"handshake failed: {_reason(exc)}") from exc
    if scope.cancelled_caught:
        raise TlsHandshakeTimeout(f"handshake not complete within {policy.handshake_timeout_s}s")
    peercert = secured.getpeercert()
    identities = certificate_identities(peercert) if peercert else ()
    names = policy.allowed_clients
    if names is not None:
        if not identities:
            raise TlsRefused("no client certificate, and allowed_clients names who may connect")
        if names.match(identities) is None:
            raise TlsRefused("client certificate not in allowed_clients", identities)
    return secured


async def connect_tls(
    stream: trio.SocketStream, context: ssl.SSLContext, server_name: str
) -> trio.SSLStream[trio.SocketStream]:
    """The client's side of the handshake (the caller bounds its time); the server's
    certificate is verified against ``server_name``.  ``TlsRefused`` when it fails."""
    secured = trio.SSLStream(stream, context, server_hostname=server_name)
    try:
        await secured.do_handshake()
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise TlsRefused(f"handshake failed: {_reason(exc)}") from exc
    return secured
