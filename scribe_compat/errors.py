"""The one exception tree of ``scribe_compat``.

::

    ScribeCompatError
    ├── ProtocolError                 bytes that are not acceptable Scribe/fb303 Thrift
    │   ├── LimitExceeded             a configured limit was broken (limit, value, maximum)
    │   │   ├── FrameTooLarge           frame length over max_frame_bytes
    │   │   ├── MessageTooLarge         unframed message over max_message_bytes
    │   │   ├── TooManyEntries          a Log call over max_entries_per_call
    │   │   ├── UnparsedBytesExceeded   too many buffered bytes without a complete message
    │   │   ├── ContainerTooLarge       a list/set/map declares more than max_container_size
    │   │   └── NestingTooDeep          structs/containers nested over max_depth
    │   ├── MalformedMessage          bad framing, header, type byte, length, trailing bytes
    │   │   └── NotThrift               a client's first reply bytes are not Thrift at all (an
    │   │                               HTTP server, say): what they look like, not a limit
    │   └── CallRejected              a well-formed message we answer with an exception reply
    │       ├── UnknownMethod           (TApplicationException UNKNOWN_METHOD)
    │       └── BadArguments            wrong-typed or missing arguments (PROTOCOL_ERROR)
    ├── ClientError                   what ScribeClient / AsyncScribeClient raise
    │   ├── TransportError            connect/read/write failed, or the peer closed
    │   │   └── ClientTimeoutError      no answer within the timeout
    │   ├── BadReplyError             the server's reply is not valid Thrift or answers another call
    │   ├── RequestTooLargeError      a call over the server's limit, refused before it is sent
    │   └── RemoteApplicationError    the server answered with a TApplicationException
    ├── FetchRefused                  a fetch call answered with a FetchError (code, earliest,
    │                                 high_water_mark, file, position): the fetch handler
    │                                 raises it to answer one, the fetch client on receiving one
    ├── TlsSetupError                 a certificate, key or CA file that cannot be loaded
    │                                 (setting, problem)
    └── TlsRefused                    a connection refused in or after its TLS handshake
        └── TlsHandshakeTimeout         the handshake did not complete in time

A ``ProtocolError`` raised by ``ServerConnection.next_event`` is fatal for the connection: close
it.  ``CallRejected`` errors are never raised there; they arrive inside a ``RejectedCall`` event,
and the connection goes on after the exception reply.
"""

from __future__ import annotations


class ScribeCompatError(Exception):
    """Base of every error this package raises on purpose."""


class ProtocolError(ScribeCompatError):
    """The peer sent bytes we cannot accept; ``reason`` says why in a log-friendly sentence."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LimitExceeded(ProtocolError):  # noqa: N818
    """A configured limit was broken: ``limit`` names the ``CodecLimits`` field."""

    limit = "limit"

    def __init__(self, value: int, maximum: int, what: str = "") -> None:
        detail = f" ({what})" if what else ""
        super().__init__(f"{self.limit} exceeded: {value} > {maximum}{detail}")
        self.value = value
        self.maximum = maximum


class FrameTooLarge(LimitExceeded):
    limit = "max_frame_bytes"


class MessageTooLarge(LimitExceeded):
    limit = "max_message_bytes"


class TooManyEntries(LimitExceeded):
    limit = "max_entries_per_call"


class UnparsedBytesExceeded(LimitExceeded):
    limit = "max_unparsed_bytes"


class ContainerTooLarge(LimitExceeded):
    limit = "max_container_size"


class NestingTooDeep(LimitExceeded):
    limit = "max_depth"


class MalformedMessage(ProtocolError):  # noqa: N818
    """Not the binary protocol: ``offset`` is the position in the message, when known."""

    def __init__(self, reason: str, offset: int | None = None) -> None:
        super().__init__(reason if offset is None else f"{reason} at offset {offset}")
        self.offset = offset


class NotThrift(MalformedMessage):
    """The first bytes a client receives cannot begin a reply in its framing: the peer is
    something else (``first_bytes`` shows what), and ``cause`` is the check they failed."""

    def __init__(self, framing: str, first_bytes: bytes, cause: ProtocolError) -> None:
        looks = ""
        if first_bytes.startswith(b"HTTP/"):
            looks = " (they look like HTTP: an HTTP server?)"
        elif first_bytes.lower().startswith((b"<!doctype", b"<html")):
            looks = " (they look like HTML: an HTTP server?)"
        super().__init__(
            f"the peer does not speak {framing} Thrift: its reply begins {first_bytes!r}{looks}"
            f" ({cause.reason})"
        )
        self.first_bytes = first_bytes
        self.cause = cause


class CallRejected(ProtocolError):  # noqa: N818
    """A well-formed call we refuse with a TApplicationException reply (``app_error_type``)."""

    app_error_type = 0

    def __init__(self, reason: str, method: str) -> None:
        super().__init__(reason)
        self.method = method


class UnknownMethod(CallRejected):
    app_error_type = 1  # TApplicationException.UNKNOWN_METHOD

    def __init__(self, method: str) -> None:
        super().__init__(f"unknown method {method!r}", method)


class BadArguments(CallRejected):
    app_error_type = 7  # TApplicationException.PROTOCOL_ERROR


class ClientError(ScribeCompatError):
    """Base of the errors the clients raise."""


class TransportError(ClientError):
    """The connection failed; ``peer`` is ``host:port``."""

    def __init__(self, reason: str, peer: str = "") -> None:
        super().__init__(f"{peer}: {reason}" if peer else reason)
        self.reason = reason
        self.peer = peer


class ClientTimeoutError(TransportError):
    pass


class BadReplyError(ClientError):
    """The server's reply could not be decoded (or did not match the call)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RequestTooLargeError(ClientError):
    """A call of ``size`` bytes is over ``maximum``, the limit the server is known to have; it
    was not sent."""

    def __init__(self, method: str, size: int, maximum: int) -> None:
        super().__init__(
            f"{method} call of {size:,} bytes is over the server's limit of {maximum:,} bytes"
            " (max_message_bytes); not sent"
        )
        self.method = method
        self.size = size
        self.maximum = maximum


class RemoteApplicationError(ClientError):
    """A TApplicationException from the server: ``type`` is its numeric type."""

    def __init__(self, method: str, type: int, message: str) -> None:
        super().__init__(f"{method}: TApplicationException type={type}: {message}")
        self.method = method
        self.type = type
        self.message = message


class FetchRefused(ScribeCompatError):  # noqa: N818 (a refusal, like CallRejected)
    """A fetch call refused with a ``FetchError``: ``code`` is an ``idl.FetchErrorCode`` value;
    ``earliest`` and ``high_water_mark`` say where the partition's data is, ``file`` and
    ``position`` where it is damaged (PARTITION_DAMAGED)."""

    def __init__(
        self,
        code: int,
        reason: str,
        *,
        earliest: int = 0,
        high_water_mark: int = 0,
        file: str = "",
        position: int = 0,
    ) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.earliest = earliest
        self.high_water_mark = high_water_mark
        self.file = file
        self.position = position


class TlsSetupError(ScribeCompatError):
    """A certificate, key or CA file that cannot be loaded; ``setting`` names the field."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem


class TlsRefused(ScribeCompatError):  # noqa: N818 (a refusal, not a failure of ours)
    """A connection refused during or after the TLS handshake; ``reason`` says why."""

    def __init__(self, reason: str, identities: tuple[str, ...] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.identities = identities


class TlsHandshakeTimeout(TlsRefused):
    """The client did not complete the handshake in time."""
