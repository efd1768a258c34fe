"""The Scribe/fb303 Thrift codec, without I/O: bytes in, events out; replies out as bytes.

Contract: ``ServerConnection`` and ``ClientConnection`` raise only this package's
``ProtocolError`` (and, on the client side, ``RemoteApplicationError`` for an exception reply)
for whatever bytes they are given; ``ClientConnection.call`` refuses a request over the
server's known limit with ``RequestTooLargeError``, before any byte of it is out.  Any other
exception coming out of the codec is our bug.

Server side, per connection::

    conn = ServerConnection(limits)
    conn.receive_data(chunk)              # b"" means the peer closed its side
    while (event := conn.next_event()) is not NEED_DATA and event is not CLOSED:
        ...                               # a Call or a RejectedCall, in the order sent
        sock.send(conn.reply(call, value))

``next_event`` is ``next_message`` (find the next complete message: cheap, bounded by what
arrived) followed by ``decode`` (the costly part, linear in the message).  A server may run
``decode`` of a large message in a worker thread: it reads only the ``Message`` it is given and
the connection's immutable limits, so the connection's own task may wait for it elsewhere.

State rules (the invariants the server relies on):

* The framing is decided once, from the connection's first bytes (``framing.detect_framing``).
* An event is produced only for a complete message that has been walked and proved well formed
  (``scanner``) and then decoded by thriftpy2's Cython binary protocol; nothing half-decoded
  ever leaves the codec.
* A ``ProtocolError`` from ``next_event`` is fatal: the connection stays broken (the same
  error is raised again) and must be closed.  Unknown methods and bad arguments are not fatal:
  they come out as ``RejectedCall`` events, answered by ``reply_rejected``.
* ``reinitialize`` and ``shutdown`` are oneway by name, whatever the message type said; their
  replies are always empty.
* Buffered bytes without a complete message are bounded by ``max_unparsed_bytes``; framed
  messages by ``max_frame_bytes`` (checked on the 4-byte header, before buffering the frame).
  The buffer grows only as bytes arrive (a declared frame size reserves nothing); a large one
  is given back as soon as it holds no unconsumed byte, and any one when a fatal error breaks
  the connection, so an idle or broken connection holds no large buffer.
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from annotated_types import Interval
from thriftpy2.protocol.cybin.cybin import TCyBinaryProtocol
from thriftpy2.thrift import TApplicationException
from thriftpy2.transport.memory.cymemory import TCyMemoryBuffer

from scribe_compat.batch import LogBatch
from scribe_compat.errors import (
    BadArguments,
    CallRejected,
    MalformedMessage,
    NotThrift,
    ProtocolError,
    RemoteApplicationError,
    RequestTooLargeError,
    TooManyEntries,
    UnknownMethod,
    UnparsedBytesExceeded,
)
from scribe_compat.framing import Framing, detect_framing, frame_length
from scribe_compat.idl import METHODS, AppErrorType, LogEntry, MessageType, Method
from scribe_compat.ranges import check_declared_ranges
from scribe_compat.scanner import (
    T_LIST,
    T_MAP,
    T_SET,
    T_STRING,
    Header,
    MessageScanner,
    ScanLimits,
    fast_log_columns,
    parse_header,
    walked_log_columns,
)

MiB = 1024 * 1024
I32_MAX = 2**31 - 1
_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
# A consumed buffer up to this size is kept for the next read: a few ordinary reads' worth,
# where allocating afresh for every 1000-message batch costs ~7% of ingest.
_KEEP_BUFFER_BYTES = 1 * MiB
# A frame this large is kept as the list of reads it arrives in, joined once it is complete
# (``LargeFrame``), instead of being appended read by read to the connection's buffer and
# copied out of it: that costs two to three copies of the frame on the event loop's thread
# (about 17 ms for 16 MiB here, page faults included), the join one, off it.  Below this size
# a frame arrives in a few reads and the copies cost well under a millisecond.
ASSEMBLE_LATER_BYTES = 1 * MiB
_T_BINARY = 18  # thriftpy2's spec type for `binary`; STRING on the wire


@dataclass(frozen=True)
class CodecLimits:
    """Bounds on what one peer can make us buffer or decode."""

    # Apache Thrift's default TConfiguration max frame size is 16,384,000 bytes; 16 MiB keeps
    # that precedent and fits ~80,000 200-byte messages, far above any Scribe client's batch.
    # At most 2 GiB: Thrift's frame length is a signed 32-bit integer.
    max_frame_bytes: Annotated[int, Interval(gt=0, le=I32_MAX)] = 16 * MiB
    # An unframed message may be as large as a frame: the same call must not be refused
    # depending on the transport the client picked.
    max_message_bytes: Annotated[int, Interval(gt=0, le=I32_MAX)] = 16 * MiB
    # Each decoded entry costs ~300 bytes of Python objects before the journal sees it: 100,000
    # bounds a call at ~30 MB of memory.  Scribe's forwarders send a few thousand per call.
    # At most Thrift's list size, a signed 32-bit integer.
    max_entries_per_call: Annotated[int, Interval(gt=0, le=I32_MAX)] = 100_000
    # One message being assembled plus one receive of pipelined data behind it.
    max_unparsed_bytes: Annotated[int, Interval(gt=0, le=2 * I32_MAX)] = 16 * MiB + 256 * 1024
    # No container in the interface needs more than max_entries_per_call elements; metadata
    # maps are tiny.  Refusing a larger declared size early is cheaper than walking it.
    max_container_size: Annotated[int, Interval(gt=0, le=I32_MAX)] = 100_000
    # The deepest value in the interface is 4 levels (args > list > LogEntry > map); 16 leaves
    # room for unknown fields from newer clients, far below thriftpy2's own guard of 64.
    # At least the interface's 4 levels, at most thriftpy2's own guard.
    max_depth: Annotated[int, Interval(ge=4, le=64)] = 16
    # The longest method name is 19 bytes (getSelectedCounters); Apache's clients never send
    # more than a few dozen.
    # At most 64 KiB, thousands of times the longest name.
    max_name_bytes: Annotated[int, Interval(gt=0, le=65536)] = 256

    def __post_init__(self) -> None:
        check_declared_ranges(self)
        # A frame is buffered whole (with its 4-byte length) before it is parsed.
        if self.max_unparsed_bytes < max(self.max_message_bytes, self.max_frame_bytes + 4):
            raise ValueError(
                "max_unparsed_bytes must be at least max_message_bytes and max_frame_bytes + 4"
            )

    def scan_limits(self) -> ScanLimits:
        return ScanLimits(
            max_message_bytes=self.max_message_bytes,
            max_container_size=self.max_container_size,
            max_depth=self.max_depth,
            max_name_bytes=self.max_name_bytes,
        )


class Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"
    CLOSED = "CLOSED"


NEED_DATA: Literal[Sentinel.NEED_DATA] = Sentinel.NEED_DATA
CLOSED: Literal[Sentinel.CLOSED] = Sentinel.CLOSED


@dataclass(frozen=True, slots=True)
class Message:
    """One complete message, its framing removed, not decoded yet (``ServerConnection.decode``)."""

    payload: bytes
    header: Header
    framed: bool
    # The args struct's own fields' wire types (fid -> (type, element or key type, value
    # type)) when the whole message has been walked already, as an unframed one is to find its
    # end; None for a framed message, whose body nobody has walked yet.
    top_fields: dict[int, tuple[int, int, int]] | None = field(repr=False)

    @property
    def size(self) -> int:
        return len(self.payload)


@dataclass(frozen=True, slots=True)
class LargeFrame:
    """A complete frame of at least ``ASSEMBLE_LATER_BYTES``, still as the reads it arrived in.

    Joining 16 MiB of reads into one payload is a copy that holds the GIL for several
    milliseconds, so it is left to whoever decodes the frame (``ServerConnection.decode`` or
    ``assemble``), which a server may run in a worker thread."""

    parts: list[bytes] = field(repr=False)
    # The frame's payload size (without its 4-byte length).
    size: int


@dataclass(frozen=True, slots=True)
class Call:
    """One decoded call; ``args`` is thriftpy2's args struct, fields checked and defaulted."""

    name: str
    seqid: int
    strict: bool
    oneway: bool
    framed: bool
    # thriftpy2's args struct; None for a ``Log`` call decoded into ``batch`` directly.
    args: Any
    method: Method = field(repr=False)
    # The columns of a ``Log`` call, built by the decoder (so in its thread, when it has one).
    batch: LogBatch | None = field(default=None, repr=False)

    @property
    def log_batch(self) -> LogBatch:
        """The entries of a ``Log`` call, column by column (the server's hot path)."""
        if self.batch is not None:
            return self.batch
        return LogBatch.from_entries(self.args.messages)

    @property
    def entries(self) -> list[LogEntry]:
        """The entries of a ``Log`` call as ``LogEntry`` objects (bytes category and message)."""
        if self.args is None:
            assert self.batch is not None
            return self.batch.entries()
        entries: list[LogEntry] = self.args.messages
        return entries


@dataclass(frozen=True, slots=True)
class RejectedCall:
    """A well-formed call we answer with a TApplicationException (unless it is oneway)."""

    name: bytes
    seqid: int
    strict: bool
    oneway: bool
    framed: bool
    error: CallRejected


ServerEvent = Call | RejectedCall | Literal[Sentinel.NEED_DATA, Sentinel.CLOSED]


def _new_protocol(trans: Any, *, strict_write: bool = False, decode_response: bool = False) -> Any:
    return TCyBinaryProtocol(
        trans, strict_read=False, strict_write=strict_write, decode_response=decode_response
    )


def encode_message(
    name: bytes, mtype: int, seqid: int, obj: Any, *, strict: bool, framed: bool
) -> bytes:
    """One binary-protocol message holding struct ``obj``, framed or not."""
    trans = TCyMemoryBuffer()
    proto = _new_protocol(trans, strict_write=strict)
    proto.write_message_begin(name, mtype, seqid)
    proto.write_struct(obj)
    data: bytes = trans.getvalue()
    return _U32.pack(len(data)) + data if framed else data


def decode_struct(payload: bytes, offset: int, obj: Any, *, decode_response: bool) -> Any:
    # Only ever called on bytes the scanner (or fast_log_columns) has proved well formed.
    trans = TCyMemoryBuffer(payload)
    if offset:
        trans.read(offset)
    _new_protocol(trans, decode_response=decode_response).read_struct(obj)
    return obj


def _copy(buf: bytearray, start: int, end: int) -> bytes:
    # One copy (a bytearray slice would make two); the view is released before buf resizes.
    with memoryview(buf) as view:
        return bytes(view[start:end])


class MessageReader:
    """Turns buffered bytes into complete, validated messages (the part both sides share)."""

    def __init__(
        self, limits: CodecLimits, framing: Framing | None, *, assemble_later: bool = False
    ) -> None:
        self.limits = limits
        self.framing = framing
        # Whether frames of ASSEMBLE_LATER_BYTES or more come out as ``LargeFrame``s.
        self.assemble_later = assemble_later
        self.scan_limits = limits.scan_limits()
        self._buf = bytearray()
        self._pos = 0
        # While a large frame arrives (``ASSEMBLE_LATER_BYTES``): its payload's reads so far
        # (the last may run past its end), their total, and the payload's size.
        self._parts: list[bytes] | None = None
        self._parts_bytes = 0
        self._frame_bytes = 0
        self._eof = False
        self._scanner = MessageScanner(self.scan_limits)
        self.error: ProtocolError | None = None

    def feed(self, data: bytes | bytearray) -> None:
        if self._eof and data:
            raise RuntimeError("receive_data after end of data")
        if not data:
            self._eof = True
            return
        if self.error is not None:
            return  # the connection is broken: nothing it sends is kept
        if self._parts is not None:
            self._parts.append(data if type(data) is bytes else bytes(data))
            self._parts_bytes += len(data)
            return
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        if self._parts is not None:
            return 4 + self._parts_bytes
        return len(self._buf) - self._pos

    @property
    def incoming_message_bytes(self) -> int | None:
        """The whole size of the message being received (a frame with its length header) when
        its frame header has arrived; None otherwise (unframed, or fewer than 4 bytes)."""
        if self._parts is not None:
            return 4 + self._frame_bytes
        if self.framing is not Framing.FRAMED or self.buffered < 4:
            return None
        n: int = _I32.unpack_from(self._buf, self._pos)[0]
        return 4 + n if n > 0 else None

    def fail(self, error: ProtocolError) -> ProtocolError:
        """Break the connection for good: ``error`` is raised from now on, and the buffer is
        dropped at once (its bytes can never become a message)."""
        # Without its traceback: the frames it holds would keep the old buffer alive in their
        # locals for as long as the error lives (in this reader, until a cyclic collection).
        self.error = error.with_traceback(None)
        self._release()
        return self.error

    def _release(self) -> None:
        # Messages leave as copies, so nothing else refers to the old buffer: it is freed here.
        self._buf = bytearray()
        self._pos = 0
        self._parts = None
        self._parts_bytes = 0

    def next_message(self) -> Message | LargeFrame | Sentinel:
        """The next complete message (its body walked if unframed), a complete ``LargeFrame``,
        or a sentinel."""
        if self.error is not None:
            raise self.error.with_traceback(None)
        try:
            message = self._next_message()
        except ProtocolError as exc:
            raise self.fail(exc) from None
        if self._pos == len(self._buf) > _KEEP_BUFFER_BYTES:
            # A large call's bytes are all consumed: give the memory back now rather than at
            # the next read, which on an idle connection may be an hour away.
            self._release()
        return message

    def _next_message(self) -> Message | LargeFrame | Sentinel:
        if self._parts is not None:
            return self._large_frame()
        buf = self._buf
        pos = self._pos
        if self.framing is None:
            self.framing = detect_framing(buf[pos : pos + 4 + self.limits.max_name_bytes])
            if self.framing is None:
                return self._incomplete()
        if self.framing is Framing.FRAMED:
            n = frame_length(buf, pos, self.limits.max_frame_bytes)
            if n is None:
                return self._incomplete()
            if len(buf) - pos < 4 + n:
                if n >= ASSEMBLE_LATER_BYTES and self.assemble_later:
                    # From now on reads are kept as they come, beginning with what is here.
                    self._parts = [_copy(buf, pos + 4, len(buf))]
                    self._parts_bytes = len(buf) - pos - 4
                    self._frame_bytes = n
                    self._buf = bytearray()
                    self._pos = 0
                    return self._large_frame()
                return self._incomplete()
            payload = _copy(buf, pos + 4, pos + 4 + n)
            self._pos = pos + 4 + n
            return message_of_frame(payload, self.scan_limits)
        scanner = self._scanner
        total = scanner.scan(buf, pos, len(buf))
        if total is None:
            return self._incomplete()
        header = scanner.header
        assert header is not None
        scanner.reset()
        self._pos = pos + total
        return Message(_copy(buf, pos, pos + total), header, False, scanner.last_top_fields)

    def _large_frame(self) -> LargeFrame | Sentinel:
        parts = self._parts
        assert parts is not None
        n = self._frame_bytes
        extra = self._parts_bytes - n
        if extra < 0:
            return self._incomplete()
        if extra:
            # The last read holds the start of what follows the frame: it stays buffered.
            last = parts[-1]
            parts[-1] = last[: len(last) - extra]
            self._buf = bytearray(last[len(last) - extra :])
        self._parts = None
        self._parts_bytes = 0
        return LargeFrame(parts, n)

    def _incomplete(self) -> Sentinel:
        buffered = self.buffered
        if self._eof:
            if buffered:
                raise MalformedMessage(
                    f"peer closed the connection inside a message ({buffered} bytes buffered)"
                )
            return CLOSED
        if buffered > self.limits.max_unparsed_bytes:
            raise UnparsedBytesExceeded(buffered, self.limits.max_unparsed_bytes)
        return NEED_DATA


def message_of_frame(payload: bytes, limits: ScanLimits) -> Message:
    """The message a frame's payload holds, its header parsed; raises ``MalformedMessage``."""
    header = parse_header(payload, 0, len(payload), limits)
    if header is None:
        raise MalformedMessage(f"frame of {len(payload)} bytes ends inside the message header")
    return Message(payload, header, True, None)


def walk_body(message: Message, limits: ScanLimits) -> dict[int, tuple[int, int, int]]:
    """The top-level fields' wire types of a message, walking its body if nobody has yet."""
    if message.top_fields is not None:
        return message.top_fields
    payload = message.payload
    scanner = MessageScanner(limits)
    total = scanner.scan(payload, 0, len(payload))
    if total is None:
        raise MalformedMessage(f"frame of {len(payload)} bytes ends inside the message")
    if total != len(payload):
        raise MalformedMessage(
            f"{len(payload) - total} trailing bytes after the message in its frame"
        )
    return scanner.top_fields


class ServerConnection:
    """The server side of one connection: see the module docstring."""

    def __init__(self, limits: CodecLimits | None = None) -> None:
        self.limits = limits or CodecLimits()
        self._reader = MessageReader(self.limits, None, assemble_later=True)

    @property
    def framing(self) -> Framing | None:
        return self._reader.framing

    @property
    def buffered(self) -> int:
        """Bytes received and not yet turned into events."""
        return self._reader.buffered

    @property
    def incoming_message_bytes(self) -> int | None:
        """After ``NEED_DATA``: the whole size of the message being received, when its frame
        header has told it (length header included); None for an unframed message."""
        return self._reader.incoming_message_bytes

    def receive_data(self, data: bytes | bytearray) -> None:
        """Add bytes from the peer; ``b""`` means it closed its side."""
        self._reader.feed(data)

    def next_event(self) -> ServerEvent:
        """The next call, ``NEED_DATA``, or ``CLOSED``; raises ``ProtocolError`` (fatal)."""
        message = self.next_message()
        if isinstance(message, Sentinel):
            return message
        return self.decode(message)

    def next_message(
        self,
    ) -> Message | LargeFrame | Literal[Sentinel.NEED_DATA, Sentinel.CLOSED]:
        """The next complete message, undecoded (a ``LargeFrame`` not even joined), or a
        sentinel; raises ``ProtocolError`` (fatal).  Pass the message to ``decode`` before
        asking for the next one."""
        message = self._reader.next_message()
        if message is NEED_DATA or message is CLOSED:
            return message
        assert isinstance(message, Message | LargeFrame)
        return message

    def assemble(self, frame: LargeFrame) -> Message:
        """The message of a ``LargeFrame``, its reads joined; raises ``ProtocolError`` (fatal).
        Safe to run in a worker thread, as ``decode`` is."""
        try:
            return message_of_frame(b"".join(frame.parts), self._reader.scan_limits)
        except ProtocolError as exc:
            raise self._reader.fail(exc) from None

    def decode(self, message: Message | LargeFrame) -> Call | RejectedCall:
        """The event for a message from ``next_message``; raises ``ProtocolError`` (fatal).

        Safe to run in a worker thread while the connection's task waits for it: it touches
        the connection only to record a fatal error."""
        if isinstance(message, LargeFrame):
            message = self.assemble(message)
        event = self.decode_common_log(message)
        return event if event is not None else self.decode_general(message)

    def decode_common_log(self, message: Message) -> Call | None:
        """The ``Log`` call in ``message`` if it has the common shape (entries of category,
        message and perhaps metadata), sliced into columns; None for any other message.  Costs
        little for a message that is not in that shape: the first entry that differs stops it."""
        header = message.header
        if header.name != b"Log" or header.mtype not in (MessageType.CALL, MessageType.ONEWAY):
            return None
        limits = self.limits
        try:
            columns = fast_log_columns(
                message.payload, header.body, limits.max_entries_per_call, limits.max_container_size
            )
        except ProtocolError as exc:
            raise self._reader.fail(exc) from None
        if columns is None or columns.end != len(message.payload):
            return None
        oneway = header.mtype == MessageType.ONEWAY
        batch = LogBatch.counted(columns.categories, columns.messages, columns.metadata)
        return Call(
            "Log", header.seqid, header.strict, oneway, message.framed, None, METHODS["Log"], batch
        )

    def decode_general(self, message: Message) -> Call | RejectedCall:
        """``decode`` without trying the common shape first (for a caller that has)."""
        header = message.header
        framed = message.framed
        name_bytes = header.name
        name = name_bytes.decode("utf-8", "backslashreplace")
        if header.mtype not in (MessageType.CALL, MessageType.ONEWAY):
            raise self._reader.fail(
                MalformedMessage(
                    f"message type {header.mtype} is not CALL or ONEWAY (method {name!r})"
                )
            )
        method = METHODS.get(name)
        oneway = header.mtype == MessageType.ONEWAY or name in ("reinitialize", "shutdown")
        if method is None:
            return RejectedCall(
                name_bytes, header.seqid, header.strict, oneway, framed, UnknownMethod(name)
            )
        try:
            top_fields = walk_body(message, self._reader.scan_limits)
            batch = self._walked_log(message, method, top_fields)
            args = None
            if batch is None:
                args = self._decode_args(message, method, top_fields)
                # A Log call's columns are built here, with the rest of the decoding work.
                if method.name == "Log":
                    batch = LogBatch.from_entries(args.messages)
        except CallRejected as exc:
            return RejectedCall(name_bytes, header.seqid, header.strict, oneway, framed, exc)
        except ProtocolError as exc:
            raise self._reader.fail(exc) from None
        # A call sent as ONEWAY gets no reply whatever the method; two methods never get one.
        return Call(name, header.seqid, header.strict, oneway, framed, args, method, batch)

    def _walked_log(
        self, message: Message, method: Method, top_fields: dict[int, tuple[int, int, int]]
    ) -> LogBatch | None:
        """The columns of a ``Log`` call not in the common shape, when only fields the IDL does
        not know set it apart (``scanner.walked_log_columns``); None otherwise."""
        if method.name != "Log":
            return None
        check_arg_types(method, top_fields)
        columns = walked_log_columns(
            message.payload, message.header.body, self.limits.max_entries_per_call
        )
        if columns is None:
            return None
        return LogBatch.counted(columns.categories, columns.messages, columns.metadata)

    def _decode_args(
        self, message: Message, method: Method, top_fields: dict[int, tuple[int, int, int]]
    ) -> Any:
        limits = self.limits
        args = decode_struct(
            message.payload, message.header.body, method.args(), decode_response=False
        )
        check_arg_types(method, top_fields)
        fill_defaults(args)
        if method.name == "Log":
            entries = args.messages
            if len(entries) > limits.max_entries_per_call:
                raise TooManyEntries(len(entries), limits.max_entries_per_call)
            _check_entries(entries)
        return args

    def reply(self, call: Call, value: object = None) -> bytes:
        """The reply to ``call`` carrying ``value`` (None for void methods); b"" if oneway."""
        if call.oneway:
            return b""
        result = call.method.result()
        if 0 in result.thrift_spec:
            result.success = value
        return encode_message(
            call.name.encode(),
            MessageType.REPLY,
            call.seqid,
            result,
            strict=call.strict,
            framed=call.framed,
        )

    def reply_exception(self, call: Call | RejectedCall, type: AppErrorType, message: str) -> bytes:
        """A TApplicationException reply to ``call``, in its form; b"" if the call is oneway."""
        if call.oneway:
            return b""
        name = call.name.encode() if isinstance(call.name, str) else call.name
        exc = TApplicationException(type=int(type), message=message)
        return encode_message(
            name, MessageType.EXCEPTION, call.seqid, exc, strict=call.strict, framed=call.framed
        )

    def reply_rejected(self, rejected: RejectedCall) -> bytes:
        """The exception reply a ``RejectedCall`` deserves (b"" if oneway)."""
        error = rejected.error
        return self.reply_exception(rejected, AppErrorType(error.app_error_type), error.reason)


_WIRE_NAMES = {
    2: "bool",
    3: "byte",
    4: "double",
    6: "i16",
    8: "i32",
    10: "i64",
    11: "string",
    12: "struct",
    13: "map",
    14: "set",
    15: "list",
}


def _wire_type(spec_type: int) -> int:
    return T_STRING if spec_type == _T_BINARY else spec_type


def _spec_type(spec: Any) -> int:
    return int(spec if isinstance(spec, int) else spec[0])


def check_arg_types(method: Method, top_fields: dict[int, tuple[int, int, int]]) -> None:
    """Arguments present on the wire with another type than declared are refused, not skipped."""
    specs = method.args.thrift_spec
    for fid, (wire, t1, t2) in top_fields.items():
        spec = specs.get(fid)
        if spec is None:
            continue  # unknown fields from newer clients are skipped
        declared = _wire_type(spec[0])
        ok = wire == declared
        if ok and declared in (T_LIST, T_SET):
            ok = t1 == _wire_type(_spec_type(spec[2]))
        elif ok and declared == T_MAP:
            key, value = spec[2]
            ok = (t1, t2) == (_wire_type(_spec_type(key)), _wire_type(_spec_type(value)))
        if not ok:
            raise BadArguments(
                f"{method.name}: argument {spec[1]!r} sent as {_WIRE_NAMES.get(wire, wire)}",
                method.name,
            )


_DEFAULTS: dict[int, Any] = {
    T_STRING: b"",
    _T_BINARY: b"",
    8: 0,
    10: 0,
    T_LIST: list,
    T_MAP: dict,
}


def fill_defaults(args: Any) -> None:
    """Missing arguments take their type's empty value (as Scribe's C++ server does)."""
    for spec in args.thrift_spec.values():
        if getattr(args, spec[1]) is None:
            default = _DEFAULTS.get(spec[0])
            setattr(args, spec[1], default() if callable(default) else default)


def _check_entries(entries: list[Any]) -> None:
    for i, entry in enumerate(entries):
        if entry.category is None or entry.message is None:
            raise BadArguments(f"Log: entry {i} lacks a string category or message", "Log")


# -- client side --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """A decoded reply: ``value`` is the result (None for void methods)."""

    name: str
    seqid: int
    value: Any


class ClientConnection:
    """The client side of one connection, without I/O.

    ``call`` encodes a request and remembers that a reply is due; ``next_event`` yields replies
    in order, raising ``RemoteApplicationError`` for an exception reply and ``ProtocolError``
    for a reply that is not valid (or answers another call) -- ``NotThrift`` when the first
    bytes the peer sent cannot begin a reply at all (it is not a Thrift server).

    ``limits`` bound what the peer may send us; ``max_request_bytes``, when known, is the
    server's own limit on one message (its ``max_message_bytes``, and ``max_frame_bytes`` for
    the frame's payload): ``call`` refuses a larger request with ``RequestTooLargeError``.
    """

    # Enough of the peer's first bytes to show a person what it speaks (b"HTTP/1.1 400 Bad").
    _SHOWN_BYTES = 16

    def __init__(
        self,
        *,
        framed: bool = True,
        strict: bool = False,
        limits: CodecLimits | None = None,
        max_request_bytes: int | None = None,
    ) -> None:
        self.framed = framed
        self.strict = strict
        self.limits = limits or CodecLimits()
        self.max_request_bytes = max_request_bytes
        self._reader = MessageReader(self.limits, Framing.FRAMED if framed else Framing.UNFRAMED)
        self._pending: deque[tuple[str, int]] = deque()
        self._seqid = 0
        self._replies = 0
        self._first_bytes = b""

    @property
    def pending(self) -> int:
        return len(self._pending)

    def call(self, name: str, **args: Any) -> bytes:
        """The request bytes for ``name(**args)``; oneway calls expect no reply."""
        method = METHODS.get(name)
        if method is None:
            raise ValueError(f"unknown method {name!r}")
        seqid = (self._seqid + 1) & 0x7FFFFFFF
        data = encode_call(
            name, method.args(**args), seqid=seqid, framed=self.framed, strict=self.strict
        )
        self.check_request(name, data)
        self._seqid = seqid
        if not method.oneway:
            self.expect(name, self._seqid)
        return data

    def check_request(self, name: str, data: bytes) -> None:
        """Raise ``RequestTooLargeError`` when ``data`` (a request as sent) is over the server's
        ``max_request_bytes``: the size it checks is the message's, without the frame length."""
        size = len(data) - 4 if self.framed else len(data)
        if self.max_request_bytes is not None and size > self.max_request_bytes:
            raise RequestTooLargeError(name, size, self.max_request_bytes)

    def expect(self, name: str, seqid: int) -> None:
        """Expect a reply to a request sent as pre-encoded bytes."""
        self._pending.append((name, seqid))

    def receive_data(self, data: bytes | bytearray) -> None:
        if len(self._first_bytes) < self._SHOWN_BYTES and not self._replies:
            self._first_bytes += bytes(data[: self._SHOWN_BYTES - len(self._first_bytes)])
        self._reader.feed(data)

    def next_event(self) -> Reply | Literal[Sentinel.NEED_DATA, Sentinel.CLOSED]:
        try:
            event = self._next_event()
        except ProtocolError as exc:
            if self._replies or self._could_begin_reply(self._first_bytes):
                raise
            raise NotThrift(
                "framed" if self.framed else "unframed", self._first_bytes, exc
            ) from None
        if isinstance(event, Reply):
            self._replies += 1
        return event

    def _could_begin_reply(self, data: bytes) -> bool:
        """Whether a reply can begin with ``data``: in a frame, a length within the limit and
        then a strict header (0x80 0x01) or a non-strict name length (below 16 MiB: 0x00)."""
        if self.framed:
            if len(data) < 4:
                return True
            n = _I32.unpack_from(data, 0)[0]
            if not 0 < n <= self.limits.max_frame_bytes:
                return False
            data = data[4:]
        if not data:
            return True
        if data[0] == 0x80:
            return len(data) < 2 or data[1] == 0x01
        return data[0] == 0x00

    def _next_event(self) -> Reply | Literal[Sentinel.NEED_DATA, Sentinel.CLOSED]:
        message = self._reader.next_message()
        if message is NEED_DATA or message is CLOSED:
            return message
        assert isinstance(message, Message)
        try:
            walk_body(message, self._reader.scan_limits)
        except ProtocolError as exc:
            raise self._reader.fail(exc) from None
        payload, header = message.payload, message.header
        name, seqid = answered_call(self._pending, message)
        result = decode_struct(payload, header.body, METHODS[name].result(), decode_response=True)
        if 0 in result.thrift_spec:
            if result.success is None:
                raise MalformedMessage(f"the reply to {name!r} carries no result")
            return Reply(name, seqid, result.success)
        return Reply(name, seqid, None)


def answered_call(pending: deque[tuple[str, int]], message: Message) -> tuple[str, int]:
    """The outstanding call (name, seqid) a client's reply answers, taken from ``pending``;
    ``MalformedMessage`` for a reply to no call or another one, ``RemoteApplicationError``
    for an exception reply."""
    header = message.header
    if not pending:
        raise MalformedMessage("a reply arrived with no call outstanding")
    name, seqid = pending.popleft()
    got_name = header.name.decode("utf-8", "backslashreplace")
    if got_name != name or header.seqid != seqid:
        raise MalformedMessage(
            f"reply {got_name!r} seqid {header.seqid} does not answer {name!r} seqid {seqid}"
        )
    if header.mtype == MessageType.EXCEPTION:
        app_error = decode_struct(
            message.payload, header.body, TApplicationException(), decode_response=True
        )
        text = app_error.message
        if isinstance(text, bytes):
            text = text.decode("utf-8", "backslashreplace")
        raise RemoteApplicationError(name, int(app_error.type or 0), str(text or ""))
    if header.mtype != MessageType.REPLY:
        raise MalformedMessage(f"message type {header.mtype} in a reply to {name!r}")
    return name, seqid


def encode_call(name: str, args: Any, *, seqid: int, framed: bool, strict: bool) -> bytes:
    """A request message for method ``name`` with thriftpy2 args struct ``args``."""
    mtype = MessageType.ONEWAY if name in ("reinitialize", "shutdown") else MessageType.CALL
    return encode_message(name.encode(), mtype, seqid, args, strict=strict, framed=framed)
