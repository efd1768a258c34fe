"""The Scribe and fb303 Thrift interface: IDL, sans-IO codec, trio server, clients, counters.

Imports none of ``pipeline``, ``journal`` or ``consumers``.
"""

from scribe_compat.batch import LogBatch
from scribe_compat.client import (
    AsyncScribeClient,
    PreparedLog,
    ScribeClient,
    open_scribe_client,
    prepare_log,
)
from scribe_compat.codec import (
    CLOSED,
    NEED_DATA,
    Call,
    ClientConnection,
    CodecLimits,
    RejectedCall,
    Reply,
    ServerConnection,
)
from scribe_compat.counters import COUNTER_NAMES, ScribeCounters
from scribe_compat.errors import (
    BadArguments,
    BadReplyError,
    CallRejected,
    ClientError,
    ClientTimeoutError,
    ContainerTooLarge,
    FrameTooLarge,
    LimitExceeded,
    MalformedMessage,
    MessageTooLarge,
    NestingTooDeep,
    NotThrift,
    ProtocolError,
    RemoteApplicationError,
    RequestTooLargeError,
    ScribeCompatError,
    TooManyEntries,
    TransportError,
    UnknownMethod,
    UnparsedBytesExceeded,
)
from scribe_compat.framing import Framing, detect_framing
from scribe_compat.idl import AppErrorType, FbStatus, LogEntry, ResultCode
from scribe_compat.server import ScribeHandler, ScribeServer, ServerConfig, serve_scribe

__all__ = [
    "CLOSED",
    "COUNTER_NAMES",
    "NEED_DATA",
    "AppErrorType",
    "AsyncScribeClient",
    "BadArguments",
    "BadReplyError",
    "Call",
    "CallRejected",
    "ClientConnection",
    "ClientError",
    "ClientTimeoutError",
    "CodecLimits",
    "ContainerTooLarge",
    "FbStatus",
    "FrameTooLarge",
    "Framing",
    "LimitExceeded",
    "LogBatch",
    "LogEntry",
    "MalformedMessage",
    "MessageTooLarge",
    "NestingTooDeep",
    "NotThrift",
    "PreparedLog",
    "ProtocolError",
    "RejectedCall",
    "RemoteApplicationError",
    "RequestTooLargeError",
    "Reply",
    "ResultCode",
    "ScribeClient",
    "ScribeCompatError",
    "ScribeCounters",
    "ScribeHandler",
    "ScribeServer",
    "ServerConfig",
    "ServerConnection",
    "TooManyEntries",
    "TransportError",
    "UnknownMethod",
    "UnparsedBytesExceeded",
    "detect_framing",
    "open_scribe_client",
    "prepare_log",
    "serve_scribe",
]
