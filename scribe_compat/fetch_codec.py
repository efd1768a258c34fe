"""The fetch interface's codec (``idl/fetch.thrift``), without I/O: bytes in, typed calls and
replies out.

It is built from the Scribe codec's parts (``codec.MessageReader`` finds and proves complete
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

The records of a fetch reply (up to 16 MiB) are never re-encoded or copied by the codec.  The
server encodes the reply around an empty ``records`` and hands out three buffers (``reply_parts``:
the frame up to the field's length, the records themselves, the rest), which the server sends
one after the other.  The client has the whole reply in one buffer (below), and after the
scanner has proved it well formed it takes ``records`` as a read-only memoryview of that
payload: thriftpy2 decodes the same reply with the field emptied.  Both rely on one layout, the
one thriftpy2 writes (fields in id order, so ``success`` opens the result and ``records`` opens
``success``: ``_RECORDS_AT``); a reply laid out otherwise is decoded the general way, whole.

A large frame whose header arrives first is received into a buffer of its own, so its reads
are not joined (one whose header arrives split is kept as its reads and joined once,
``LargeFrame``): ``receive_data`` copies into it, and a transport that can receive into a
buffer writes there directly (``receive_buffer``, then ``received``).  That halves the fresh
memory per reply, whose page faults cost more than the copies.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

from thriftpy2.thrift import TApplicationException

from scribe_compat.codec import (
    ASSEMBLE_LATER_BYTES,
    CLOSED,
    NEED_DATA,
    CodecLimits,
    LargeFrame,
    Message,
    MessageReader,
    MiB,
    Sentinel,
    answered_call,
    check_arg_types,
    decode_struct,
    encode_message,
    fill_defaults,
    message_of_frame,
    walk_body,
)
from scribe_compat.errors import (
    BadArguments,
    CallRejected,
    FetchRefused,
    MalformedMessage,
    ProtocolError,
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
_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
# Where a fetch reply's body begins when thriftpy2 wrote it: field 0 (``success``, a struct)
# and, first in it, field 1 (``records``, binary), whose 4-byte length follows.
_RECORDS_AT = b"\x0c\x00\x00\x0b\x00\x01"
_EMPTY_LENGTH = b"\x00\x00\x00\x00"


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
    them).  A client's ``records`` is a read-only memoryview of the reply it came in."""

    records: bytes | memoryview
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


def _non_negative(method: str, name: str, value: int) -> int:
    if value < 0:
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
        self._reader = MessageReader(limits, Framing.FRAMED)

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
            top_fields = walk_body(message, self._reader.scan_limits)
        except ProtocolError as exc:
            raise self._reader.fail(exc) from None
        if method is None:
            return RejectedFetchCall(header.name, header.seqid, header.strict, UnknownMethod(name))
        try:
            args = decode_struct(message.payload, header.body, method.args(), decode_response=False)
            check_arg_types(method, top_fields)
            fill_defaults(args)
            request = _request(method, args)
        except CallRejected as exc:
            return RejectedFetchCall(header.name, header.seqid, header.strict, exc)
        return FetchCall(name, header.seqid, header.strict, request)

    def reply(self, call: FetchCall, value: ReplyValue) -> bytes:
        """The reply to ``call`` carrying ``value`` (the type its method returns)."""
        return b"".join(self.reply_parts(call, value))

    def reply_parts(self, call: FetchCall, value: ReplyValue) -> list[bytes | memoryview]:
        """The reply to ``call`` as buffers to send in order; a ``FetchResult``'s records are
        one of them, as given (not copied)."""
        result = FETCH_METHODS[call.name].result()
        if not isinstance(value, FetchResult) or not value.records:
            result.success = _to_thrift(value)
            return [self._encode(call, result)]
        records = value.records
        result.success = _to_thrift(value, records=b"")
        data = self._encode(call, result, framed=False)
        at = message_of_frame(data, self._reader.scan_limits).header.body
        if data[at : at + len(_RECORDS_AT) + 4] != _RECORDS_AT + _EMPTY_LENGTH:
            raise AssertionError("thriftpy2 no longer writes records first")  # our bug
        length = at + len(_RECORDS_AT)
        head = b"".join(
            (
                _U32.pack(len(data) + len(records)),
                data[:length],
                _I32.pack(len(records)),
            )
        )
        return [head, records, data[length + 4 :]]

    @staticmethod
    def _encode(call: FetchCall, result: Any, *, framed: bool = True) -> bytes:
        return encode_message(
            call.name.encode(),
            MessageType.REPLY,
            call.seqid,
            result,
            strict=call.strict,
            framed=framed,
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
        return self._encode(call, result)

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


def _to_thrift(value: ReplyValue, *, records: bytes | None = None) -> Any:
    if isinstance(value, FetchResult):
        return fetch_thrift.FetchResult(
            records=bytes(value.records) if records is None else records,
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


def _from_thrift(name: str, value: Any, records: memoryview | None = None) -> ReplyValue:
    if name == "fetch":
        return FetchResult(
            records=_field(value.records, bytes, "records") if records is None else records,
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
        # A large reply whose header arrives split is kept as its reads and joined once (no
        # growing buffer to copy out of); one whose header arrives first goes to ``_frame``.
        self._reader = MessageReader(limits, Framing.FRAMED, assemble_later=True)
        self._limits = limits
        self._pending: deque[tuple[str, int]] = deque()
        self._seqid = 0
        # A large frame received into its own buffer (``receive_buffer``): the payload, how
        # much of it has arrived, and bytes that came after it (fed to the reader once it is
        # complete).
        self._frame: bytearray | None = None
        self._filled = 0
        self._after = b""
        self._eof = False

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
        """Add bytes from the peer; ``b""`` means it closed its side."""
        if self._frame is not None:
            self._fill(data)
        elif data and self._reader.buffered == 0 and self._begins_large_frame(data):
            self._fill(memoryview(data)[4:])
        else:
            self._reader.feed(data)

    def _begins_large_frame(self, data: bytes | bytearray) -> bool:
        # Only a whole header of a valid large frame takes this path; anything else (a short
        # read, a bad length) is the reader's, which says what is wrong with it.
        if len(data) < 4:
            return False
        (size,) = _I32.unpack_from(data, 0)
        if not ASSEMBLE_LATER_BYTES <= size <= self._limits.max_frame_bytes:
            return False
        self._frame = bytearray(size)
        self._filled = 0
        return True

    def _fill(self, data: bytes | bytearray | memoryview) -> None:
        frame = self._frame
        assert frame is not None
        if not data:
            self._eof = True
            return
        take = min(len(data), len(frame) - self._filled)
        frame[self._filled : self._filled + take] = memoryview(data)[:take]
        self._filled += take
        self._after += data[take:]

    def receive_buffer(self) -> memoryview | None:
        """Where the next bytes may be received directly (then ``received`` says how many),
        while a large frame is arriving; None otherwise (use ``receive_data``)."""
        if self._frame is None or self._filled == len(self._frame):
            return None
        return memoryview(self._frame)[self._filled :]

    def received(self, nbytes: int) -> None:
        """``nbytes`` were written into the last ``receive_buffer``; 0 means the peer closed."""
        if nbytes == 0:
            self._eof = True
        self._filled += nbytes

    def next_event(self) -> ReplyValue | Literal[Sentinel.NEED_DATA, Sentinel.CLOSED]:
        frame = self._frame
        if frame is not None:
            return self._frame_event(frame)
        message = self._reader.next_message()
        if message is NEED_DATA or message is CLOSED:
            return message
        try:
            if isinstance(message, LargeFrame):
                message = message_of_frame(b"".join(message.parts), self._reader.scan_limits)
            assert isinstance(message, Message)
            walk_body(message, self._reader.scan_limits)
            return self._decode(message)
        except ProtocolError as exc:
            raise self._reader.fail(exc) from None

    def _frame_event(
        self, frame: bytearray
    ) -> ReplyValue | Literal[Sentinel.NEED_DATA, Sentinel.CLOSED]:
        if self._reader.error is not None:
            raise self._reader.error.with_traceback(None)
        if self._filled < len(frame):
            if self._eof:
                raise self._reader.fail(
                    MalformedMessage(
                        f"peer closed the connection inside a message ({self._filled + 4}"
                        " bytes buffered)"
                    )
                )
            return NEED_DATA
        self._frame = None
        after, self._after = self._after, b""
        try:
            # The codec reads a payload through the buffer protocol: a bytearray is one.
            message = message_of_frame(frame, self._reader.scan_limits)  # type: ignore[arg-type]
            walk_body(message, self._reader.scan_limits)
            return self._decode(message)
        except ProtocolError as exc:
            raise self._reader.fail(exc) from None
        finally:
            # What came after the frame is the reader's again (never, from our server).
            if after:
                self._reader.feed(after)
            if self._eof:
                self._reader.feed(b"")

    def _decode(self, message: Message) -> ReplyValue:
        header = message.header
        name, _seqid = answered_call(self._pending, message)
        payload: bytes = message.payload
        records = None
        if name == "fetch":
            payload, records = _take_records(payload, header.body)
        result = decode_struct(
            payload, header.body, FETCH_METHODS[name].result(), decode_response=True
        )
        if result.error is not None:
            raise _refused(result.error)
        if result.success is None:
            raise MalformedMessage(f"the reply to {name!r} carries no result")
        if records is not None and result.success.records:
            # A second records field (never ours): the last non-empty one counts.
            records = None
        return _from_thrift(name, result.success, records)


def _take_records(payload: bytes, body: int) -> tuple[bytes, memoryview | None]:
    """A walked fetch reply with its records field emptied, and the records as a view of
    ``payload``; ``payload`` itself and None when the reply is not laid out as ours are."""
    if payload[body : body + len(_RECORDS_AT)] != _RECORDS_AT:
        return payload, None
    start = body + len(_RECORDS_AT) + 4
    (size,) = _I32.unpack_from(payload, start - 4)
    # The scanner proved the field lies within the payload; this only keeps that explicit.
    if not 0 < size <= len(payload) - start:
        return payload, None
    stripped = b"".join((payload[: start - 4], _EMPTY_LENGTH, payload[start + size :]))
    # Read-only, also when the payload is the client's own receive buffer.
    return stripped, memoryview(payload)[start : start + size].toreadonly()
