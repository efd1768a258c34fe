"""The Scribe and fb303 interfaces, loaded from ``idl/*.thrift`` with thriftpy2, with typed names.

thriftpy2 builds its classes at run time, so mypy cannot see them: this module is the one place
that touches them untyped.  ``LogEntry`` is thriftpy2's own class (no copying on decode) with a
typed declaration for the checker; the enums are ``IntEnum`` mirrors, checked against the IDL at
import time.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import thriftpy2

IDL_DIR = Path(__file__).with_name("idl")
SCRIBE_THRIFT = IDL_DIR / "scribe.thrift"
FB303_THRIFT = IDL_DIR / "fb303.thrift"

# The module names end in "_thrift", as thriftpy2 wants for picklable structs.
scribe_thrift: Any = thriftpy2.load(
    str(SCRIBE_THRIFT), module_name="scribe_compat_scribe_thrift", include_dirs=[str(IDL_DIR)]
)
fb303_thrift: Any = scribe_thrift.fb303
scribe_service: Any = scribe_thrift.scribe


class ResultCode(enum.IntEnum):
    OK = 0
    TRY_LATER = 1


class FbStatus(enum.IntEnum):
    DEAD = 0
    STARTING = 1
    ALIVE = 2
    STOPPING = 3
    STOPPED = 4
    WARNING = 5


class AppErrorType(enum.IntEnum):
    """``TApplicationException`` types (Apache Thrift numbering)."""

    UNKNOWN = 0
    UNKNOWN_METHOD = 1
    INVALID_MESSAGE_TYPE = 2
    WRONG_METHOD_NAME = 3
    BAD_SEQUENCE_ID = 4
    MISSING_RESULT = 5
    INTERNAL_ERROR = 6
    PROTOCOL_ERROR = 7


class MessageType(enum.IntEnum):
    CALL = 1
    REPLY = 2
    EXCEPTION = 3
    ONEWAY = 4


if TYPE_CHECKING:

    class LogEntry:
        """One Scribe message: raw category and message bytes, optional metadata (field 3)."""

        category: bytes
        message: bytes
        metadata: dict[bytes, bytes] | None

        def __init__(
            self,
            category: bytes = ...,
            message: bytes = ...,
            metadata: dict[bytes, bytes] | None = None,
        ) -> None: ...

else:
    LogEntry = scribe_thrift.LogEntry


@dataclass(frozen=True)
class Method:
    """One wire method: its args and result structs (thriftpy2 classes) and whether oneway."""

    name: str
    args: Any
    result: Any
    oneway: bool


# Old clients send reinitialize and shutdown as CALL: these are oneway by name, never answered.
ONEWAY_METHODS = frozenset({"reinitialize", "shutdown"})

METHODS: dict[str, Method] = {
    name: Method(
        name=name,
        args=getattr(scribe_service, f"{name}_args"),
        result=getattr(scribe_service, f"{name}_result"),
        oneway=name in ONEWAY_METHODS,
    )
    for name in scribe_service.thrift_services
}
METHOD_NAMES_BYTES = frozenset(name.encode() for name in METHODS)
LONGEST_METHOD_NAME = max(len(name) for name in METHODS)


def _check_enum(mirror: type[enum.IntEnum], loaded: Any) -> None:
    expected = {m.name: m.value for m in mirror}
    if dict(loaded._NAMES_TO_VALUES) != expected:
        raise ImportError(f"{mirror.__name__} does not match the IDL: {loaded._NAMES_TO_VALUES}")


_check_enum(ResultCode, scribe_thrift.ResultCode)
_check_enum(FbStatus, fb303_thrift.fb_status)


# -- the fetch interface (idl/fetch.thrift): consumers on other hosts read a server's journal --

FETCH_THRIFT = IDL_DIR / "fetch.thrift"
fetch_thrift: Any = thriftpy2.load(str(FETCH_THRIFT), module_name="scribe_compat_fetch_thrift")
fetch_service: Any = fetch_thrift.ScribeFetch


class FetchErrorCode(enum.IntEnum):
    """Why a fetch call failed (``FetchError.code``)."""

    OFFSET_BELOW_EARLIEST = 1
    OFFSET_BEYOND_HIGH_WATER_MARK = 2
    UNKNOWN_PARTITION = 3
    PARTITION_DAMAGED = 4
    UNAVAILABLE = 5


FETCH_METHODS: dict[str, Method] = {
    name: Method(
        name=name,
        args=getattr(fetch_service, f"{name}_args"),
        result=getattr(fetch_service, f"{name}_result"),
        oneway=False,
    )
    for name in fetch_service.thrift_services
}

_check_enum(FetchErrorCode, fetch_thrift.FetchErrorCode)
