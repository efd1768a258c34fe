"""The fetch interface's codec (``idl/fetch.thrift``), without I/O: bytes in, typed calls and
replies out.

It is built from the Scribe codec's parts (``codec._Reader`` finds and proves complete
messages, the scanner walks them before thriftpy2 decodes a byte, ``encode_message`` writes
them), with the fetch method table instead of Scribe's.  The interface is ours, so it is framed
and strict-header only on the wire; a server still reads both header forms, as the reader
does.

Contract, as for ``codec``: ``FetchServerConnection`` and ``FetchClientConnection`` raise only
``ProtocolError`` for whatever bytes they are given (the client also ``FetchRefused`` and
``RemoteApplicationError`` for the replies that carry them).  Anything else is our bug.

The calls arrive typed (``Describe``, ``FetchRequest``, ``TimeLookup``) with their values
checked: a negative partition, offset or limit is refused (``BadArguments``) like an argument
of the wrong type, and answered with a TApplicationException; the connection goes on.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

from thriftpy2.thrift import TApplicationException

from scribe_compat.codec import (
    CLOSED,
    NEED_DATA,
    CodecLimits,
    Message,
    MiB,
    Sentinel,
    _check_arg_types,
    _decode_struct,
    _fill_defaults,
    _Reader,
    _walk_body,
    encode_message,
)
from scribe_compat.errors import (
    BadArguments,
    CallRejected,
    FetchRefused,
    MalformedMessage,
    ProtocolError,
    RemoteApplicationError,
    UnknownMethod,
)
from scribe_compat.framing import Framing
from scribe_compat.idl import FETCH_METHODS, AppErrorType, MessageType, Method, fetch_thrift

# A request is a few dozen bytes; 64 KiB leaves room for unknown fields of newer clients while
# a garbage frame header claiming more is refused before anything is buffered.
SERVER_LIMITS = CodecLimits(
    max_frame_bytes=64 * 1024,
    max_message_bytes=64 * 1024,
    max_unparsed_bytes=64 * 1024 + 4,
    max_entries_per_call=1,
    max_container_size=16,
)
# What a client accepts in one reply: the largest response a server may be configured to send
# (``fetch.max_response_bytes`` is at most 16 MiB) plus the reply's own fields.
CLIENT_LIMITS = CodecLimits(
    max_frame_bytes=16 * MiB + 64 * 1024,
    max_message_bytes=16 * MiB + 64 * 1024,
    max_unparsed_bytes=16 * MiB + 64 * 1024 + 4,
)
MAX_I32 = (1 << 31) - 1


@dataclass(frozen=True, slots=True)
class Describe:
    """``describe()``: the journal's identity and partitions."""


@dataclass(frozen=True, slots=True)
class FetchRequest:
    """``fetch``: records of one partition from ``offset``."""

    category: bytes
    partition: int
    offset: int
    max_bytes: int
    max_messages: int
    wait_ms: int


@dataclass(frozen=True, slots=True)
class TimeLookup:
    """``offsetForTime``: the first offset at or after ``timestamp_ms``."""

    category: bytes
    partition: int
    timestamp_ms: int


Request = Describe | FetchRequest | TimeLookup


@dataclass(frozen=True, slots=True)
class PartitionState:
    category: bytes
    partition: int
    earliest: int
    high_water_mark: int
    damaged: bool = False


@dataclass(frozen=True, slots=True)
class JournalDescription:
    journal_id: str
    partitions: tuple[PartitionState, ...]


@dataclass(frozen=True, slots=True)
class FetchResult:
    """Whole journal batches (``records``), where to fetch next, and the partition's range;
    ``gap`` when the offsets up to ``next_offset`` hold no data (``gap_documented``: repair cut
    them)."""

    records: bytes
    next_offset: int
    earliest: int
    high_water_mark: int
    gap: bool = False
    gap_documented: bool = False


ReplyValue = JournalDescription | FetchResult | int


@dataclass(frozen=True, slots=True)
class FetchCall:
    """One decoded call, its header's seqid and form kept for the reply."""

    name: str
    seqid: int
    strict: bool
    request: Request


@dataclass(frozen=True, slots=True)
class RejectedFetchCall:
    """A well-formed call we answer with a TApplicationException."""

    name: bytes
    seqid: int
    strict: bool
    error: CallRejected


ServerEvent = FetchCall | RejectedFetchCall | Literal[Sentinel.NEED_DATA, Sentinel.CLOSED]


def _non_negative(method: str, name: str, value: int, maximum: int = 1 << 63) -> int:
    if not 0 <= value < maximum:
        raise BadArguments(f"{method}: {name} must not be negative, got {value}", method)
    return value


def _request(method: Method, args: Any) -> Request:
    name = method.name
    if name == "describe":
        return Describe()
    category = bytes(args.category)
    partition = _non_negative(name, "partition", args.partition)
    if name == "fetch":
        return FetchRequest(
            category,
            partition,
            _non_negative(name, "offset", args.offset),
            _non_negative(name, "max_bytes", args.max_bytes),
            _non_negative(name, "max_messages", args.max_messages),
            _non_negative(name, "wait_ms", args.wait_ms),
        )
    return TimeLookup(category, partition, int(args.timestamp_ms))


class FetchServerConnection:
    """The server side of one fetch connection (framed): feed bytes, take calls, send replies."""

    def __init__(self, limits: CodecLimits = SERVER_LIMITS) -> None:
        self.limits = limits
        self._reader = _Reader(limits, Framing.FRAMED)

    @property
    def buffered(self) -> int:
        return self._reader.buffered

    def receive_data(self, data: bytes | bytearray) -> None:
        """Add bytes from the peer; ``b""`` means it closed its side."""
        self._reader.feed(data)

    def next_event(self) -> ServerEvent:
        """The next call, ``NEED_DATA`` or ``CLOSED``; raises ``ProtocolError`` (fatal)."""
        message = self._reader.next_message()
        if message is NEED_DATA or message is CLOSED:
            return message
        assert isinstance(message, Message)
        header = message.header
        name = header.name.decode("utf-8", "backslashreplace")
        if header.mtype != MessageType.CALL:
            raise self._reader.fail(
                MalformedMessage(f"message type {header.mtype} is not CALL (method {name!r})")
            )
        method = FETCH_METHODS.get(name)
        try:
            top_fields = _walk_body(message, self._reader.scan_limits)
        except ProtocolError as exc:
            raise self._reader.fail(exc) from None
        if method is None:
            return RejectedFetchCall(header.name, header.seqid, header.strict, UnknownMethod(name))
        try:
            args = _decode_struct(
                message.payload, header.body, method.args(), decode_response=False
            )
            _check_arg_types(method, top_fields)
            _fill_defaults(args)
            request = _request(method, args)
        except CallRejected as exc:
            return RejectedFetchCall(header.name, header.seqid, header.strict, exc)
        return FetchCall(name, header.seqid, header.strict, request)

    def reply(self, call: FetchCall, value: ReplyValue) -> bytes:
        """The reply to ``call`` carrying ``value`` (the type its method returns)."""
        result = FETCH_METHODS[call.name].result()
        result.success = _to_thrift(value)
        return encode_message(
            call.name.encode(),
            MessageType.REPLY,
            call.seqid,
            result,
            strict=call.strict,
            framed=True,
        )

    def reply_refused(self, call: FetchCall, refused: FetchRefused) -> bytes:
        """The ``FetchError`` reply saying why ``call`` was refused."""
        result = FETCH_METHODS[call.name].result()
        result.error = fetch_thrift.FetchError(
            code=int(refused.code),
            message=refused.reason,
            earliest=refused.earliest,
            high_water_mark=refused.high_water_mark,
            file=refused.file,
            position=refused.position,
        )
        return encode_message(
            call.name.encode(),
            MessageType.REPLY,
            call.seqid,
            result,
            strict=call.strict,
            framed=True,
        )

    def reply_exception(
        self, call: FetchCall | RejectedFetchCall, type: AppErrorType, message: str
    ) -> bytes:
        name = call.name.encode() if isinstance(call.name, str) else call.name
        exc = TApplicationException(type=int(type), message=message)
        return encode_message(
            name, MessageType.EXCEPTION, call.seqid, exc, strict=call.strict, framed=True
        )

    def reply_rejected(self, rejected: RejectedFetchCall) -> bytes:
        error = rejected.error
        return self.reply_exception(rejected, AppErrorType(error.app_error_type), error.reason)


def _to_thrift(value: ReplyValue) -> Any:
    if isinstance(value, FetchResult):
        return fetch_thrift.FetchResult(
            records=value.records,
            next_offset=value.next_offset,
            earliest=value.earliest,
            high_water_mark=value.high_water_mark,
            gap=value.gap,
            gap_documented=value.gap_documented,
        )
    if isinstance(value, JournalDescription):
        return fetch_thrift.JournalDescription(
            journal_id=value.journal_id,
            partitions=[
                fetch_thrift.PartitionState(
                    category=p.category,
                    partition=p.partition,
                    earliest=p.earliest,
                    high_water_mark=p.high_water_mark,
                    damaged=p.damaged,
                )
                for p in value.partitions
            ],
        )
    return int(value)


# -- client side --------------------------------------------------------------------------------


def _field(value: Any, kind: type, what: str) -> Any:
    if value is None or not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MalformedMessage(f"reply field {what} missing or not {kind.__name__}")
    return value


def _offset(value: Any, what: str) -> int:
    offset: int = _field(value, int, what)
    if offset < 0:
        raise MalformedMessage(f"reply field {what} is negative ({offset})")
    return offset


def _from_thrift(name: str, value: Any) -> ReplyValue:
    if name == "fetch":
        return FetchResult(
            records=_field(value.records, bytes, "records"),
            next_offset=_offset(value.next_offset, "next_offset"),
            earliest=_offset(value.earliest, "earliest"),
            high_water_mark=_offset(value.high_water_mark, "high_water_mark"),
            gap=bool(value.gap),
            gap_documented=bool(value.gap_documented),
        )
    if name == "describe":
        partitions = []
        for p in _field(value.partitions, list, "partitions"):
            partitions.append(
                PartitionState(
                    category=_field(p.category, bytes, "category"),
                    partition=_field(p.partition, int, "partition"),
                    earliest=_offset(p.earliest, "earliest"),
                    high_water_mark=_offset(p.high_water_mark, "high_water_mark"),
                    damaged=bool(p.damaged),
                )
            )
        return JournalDescription(_field(value.journal_id, str, "journal_id"), tuple(partitions))
    return _offset(value, "offset")


def _refused(error: Any) -> FetchRefused:
    def number(value: Any) -> int:
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    message = error.message if isinstance(error.message, str) else "fetch refused"
    return FetchRefused(
        number(error.code),
        message,
        earliest=number(error.earliest),
        high_water_mark=number(error.high_water_mark),
        file=error.file if isinstance(error.file, str) else "",
        position=number(error.position),
    )


class FetchClientConnection:
    """The client side of one fetch connection, without I/O: ``call`` encodes a request,
    ``next_event`` yields the replies in order (raising ``FetchRefused`` for a ``FetchError``,
    ``RemoteApplicationError`` for an exception reply, ``ProtocolError`` for bad bytes)."""

    def __init__(self, limits: CodecLimits = CLIENT_LIMITS) -> None:
        self._reader = _Reader(limits, Framing.FRAMED)
        self._pending: deque[tuple[str, int]] = deque()
        self._seqid = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def call(self, request: Request) -> bytes:
        """The request bytes for ``request``."""
        if isinstance(request, Describe):
            name, fields = "describe", {}
        elif isinstance(request, FetchRequest):
            name = "fetch"
            fields = {
                "category": request.category,
                "partition": request.partition,
                "offset": request.offset,
                "max_bytes": min(request.max_bytes, MAX_I32),
                "max_messages": min(request.max_messages, MAX_I32),
                "wait_ms": min(request.wait_ms, MAX_I32),
            }
        else:
            name = "offsetForTime"
            fields = {
                "category": request.category,
                "partition": request.partition,
                "timestamp_ms": request.timestamp_ms,
            }
        self._seqid = (self._seqid + 1) & 0x7FFFFFFF
        args = FETCH_METHODS[name].args(**fields)
        data = encode_message(
            name.encode(), MessageType.CALL, self._seqid, args, strict=True, framed=True
        )
        self._pending.append((name, self._seqid))
        return data

    def receive_data(self, data: bytes | bytearray) -> None:
        self._reader.feed(data)

    def next_event(self) -> ReplyValue | Literal[Sentinel.NEED_DATA, Sentinel.CLOSED]:
        message = self._reader.next_message()
        if message is NEED_DATA or message is CLOSED:
            return message
        assert isinstance(message, Message)
        try:
            _walk_body(message, self._reader.scan_limits)
            return self._decode(message)
        except ProtocolError as exc:
            raise self._reader.fail(exc) from None

    def _decode(self, message: Message) -> ReplyValue:
        header = message.header
        if not self._pending:
            raise MalformedMessage("a reply arrived with no call outstanding")
        name, seqid = self._pending.popleft()
        got = header.name.decode("utf-8", "backslashreplace")
        if got != name or header.seqid != seqid:
            raise MalformedMessage(
                f"reply {got!r} seqid {header.seqid} does not answer {name!r} seqid {seqid}"
            )
        if header.mtype == MessageType.EXCEPTION:
            app = _decode_struct(
                message.payload, header.body, TApplicationException(), decode_response=True
            )
            text = app.message.decode() if isinstance(app.message, bytes) else app.message
            raise RemoteApplicationError(name, int(app.type or 0), str(text or ""))
        if header.mtype != MessageType.REPLY:
            raise MalformedMessage(f"message type {header.mtype} in a reply to {name!r}")
        result = _decode_struct(
            message.payload, header.body, FETCH_METHODS[name].result(), decode_response=True
        )
        if result.error is not None:
            raise _refused(result.error)
        if result.success is None:
            raise MalformedMessage(f"the reply to {name!r} carries no result")
        return _from_thrift(name, result.success)
