"""Finding where one binary-protocol Thrift message ends, and proving it is well formed.

thriftpy2's Cython decoder is fast but trusts its input: on a memory buffer it reads past the end
of the data without noticing, allocates whatever a length field claims, and loops for as many
elements as a container claims even when the element type reads no bytes.  So no byte reaches it
before this module has walked the whole message and checked that:

* every type byte is a real wire type (BOOL, BYTE, DOUBLE, I16, I32, I64, STRING, STRUCT, MAP,
  SET, LIST; containers of size 0 may carry any element types, they read nothing),
* every length and size is non-negative and within ``CodecLimits``,
* nesting stays within ``max_depth`` (far below the decoder's own recursion guard),
* the message ends exactly where the walk ends.

After that the decoder consumes exactly the bytes walked, and every loop it runs consumes at
least one byte per iteration, so decoding is linear in the message size.

``MessageScanner`` is resumable: it keeps its offset, the stack of open structs and containers,
and the type of a value it is waiting for between calls, so feeding a message one byte at a time
costs time linear in its length.  ``fast_log_columns`` is the shortcut for the one message that
must be cheap: a ``Log`` whose entries carry a category, a message and perhaps metadata.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

from scribe_compat.errors import (
    ContainerTooLarge,
    MalformedMessage,
    MessageTooLarge,
    NestingTooDeep,
    TooManyEntries,
)

T_STOP = 0
T_BOOL = 2
T_BYTE = 3
T_DOUBLE = 4
T_I16 = 6
T_I32 = 8
T_I64 = 10
T_STRING = 11
T_STRUCT = 12
T_MAP = 13
T_SET = 14
T_LIST = 15

FIXED_SIZES = {T_BOOL: 1, T_BYTE: 1, T_DOUBLE: 8, T_I16: 2, T_I32: 4, T_I64: 8}
VALID_TYPES = frozenset((*FIXED_SIZES, T_STRING, T_STRUCT, T_MAP, T_SET, T_LIST))

STRICT_VERSION_MASK = 0xFFFF0000
STRICT_VERSION_1 = 0x80010000

_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_I16 = struct.Struct(">h")
_HDR_ULEN = struct.Struct(">3sI")  # a field header (type, id), then a string length
_STOP_HDR_ULEN = struct.Struct(">4sI")  # a struct's STOP, then the next struct's first field
_CATEGORY_HDR = b"\x0b\x00\x01"
_MESSAGE_HDR = b"\x0b\x00\x02"
_STOP_CATEGORY_HDR = b"\x00" + _CATEGORY_HDR
_METADATA_HDR = b"\x0d\x00\x03\x0b\x0b"  # field 3, a map of strings to strings

# Stack frame kinds: [kind, remaining, type1, type2]
_K_STRUCT = 0
_K_LIST = 1
_K_MAP = 2


@dataclass(frozen=True)
class ScanLimits:
    max_message_bytes: int
    max_container_size: int
    max_depth: int
    max_name_bytes: int


@dataclass(frozen=True)
class Header:
    """A message header: raw method name, message type, seqid and form; ``body`` is its length."""

    name: bytes
    mtype: int
    seqid: int
    strict: bool
    body: int


class MessageScanner:
    """Walks one message (header and struct) incrementally; ``reset`` before the next one."""

    def __init__(self, limits: ScanLimits) -> None:
        self.limits = limits
        self.reset()

    def reset(self) -> None:
        # The wire types of the args struct's own fields, kept for the message just finished:
        # fid -> (type, element or key type, value type).
        self.last_top_fields: dict[int, tuple[int, int, int]] = getattr(self, "top_fields", {})
        self.top_fields: dict[int, tuple[int, int, int]] = {}
        self._top_fid = 0
        self.header: Header | None = None
        self._off = 0
        self._stack: list[list[int]] = []
        self._pending = -1

    @property
    def offset(self) -> int:
        """How far into the current message the walk has got."""
        return self._off

    def scan(self, buf: bytes | bytearray, base: int, end: int) -> int | None:
        """Continue the message starting at ``buf[base]``, with data up to ``buf[end]``.

        Returns the message's total length once it is complete, None while more bytes are
        needed; raises a ``ProtocolError`` as soon as the bytes cannot be a valid message.
        """
        if self.header is None:
            header = parse_header(buf, base, end, self.limits)
            if header is None:
                self._check_size(end - base)
                return None
            self.header = header
            self._off = header.body
            self._stack.append([_K_STRUCT, 0, 0, 0])
        done = self._walk(buf, base, end)
        if not done:
            self._check_size(end - base)
            return None
        return self._off

    def _check_size(self, buffered: int) -> None:
        if buffered > self.limits.max_message_bytes:
            raise MessageTooLarge(buffered, self.limits.max_message_bytes, "incomplete message")

    def _walk(self, buf: bytes | bytearray, base: int, end: int) -> bool:
        # Invariant between calls: ``self._off`` is the first byte not yet accounted for; the
        # stack holds the open structs and containers; ``self._pending`` is the type of a value
        # whose field header (or container slot) is already consumed, or -1.
        limits = self.limits
        stack = self._stack
        pos = base + self._off
        pending = self._pending
        max_end = base + limits.max_message_bytes
        fixed = FIXED_SIZES
        unpack_i32 = _I32.unpack_from
        try:
            while stack:
                t = pending
                if t < 0:
                    top = stack[-1]
                    kind = top[0]
                    if kind == _K_STRUCT:
                        if pos >= end:
                            return False
                        t = buf[pos]
                        if t == T_STOP:
                            pos += 1
                            stack.pop()
                            continue
                        if pos + 3 > end:
                            return False
                        if t not in VALID_TYPES:
                            raise MalformedMessage(f"invalid field type {t}", pos - base)
                        if len(stack) == 1:
                            (self._top_fid,) = _I16.unpack_from(buf, pos + 1)
                            self.top_fields[self._top_fid] = (t, 0, 0)
                        pos += 3
                    else:
                        remaining = top[1]
                        if remaining == 0:
                            stack.pop()
                            continue
                        top[1] = remaining - 1
                        t = top[2] if kind == _K_LIST or remaining % 2 == 0 else top[3]
                # Consume one value of type t, or remember t and wait for more bytes.
                size = fixed.get(t)
                if size is not None:
                    if pos + size > end:
                        pending = t
                        return False
                    pos += size
                elif t == T_STRING:
                    if pos + 4 > end:
                        pending = t
                        return False
                    (n,) = unpack_i32(buf, pos)
                    if n < 0:
                        raise MalformedMessage(f"negative string length {n}", pos - base)
                    if pos + 4 + n > max_end:
                        raise MessageTooLarge(
                            pos + 4 + n - base, limits.max_message_bytes, "string length"
                        )
                    if pos + 4 + n > end:
                        pending = t
                        return False
                    pos += 4 + n
                elif t == T_STRUCT:
                    if len(stack) >= limits.max_depth:
                        raise NestingTooDeep(len(stack) + 1, limits.max_depth)
                    stack.append([_K_STRUCT, 0, 0, 0])
                else:
                    is_map = t == T_MAP
                    head = 6 if is_map else 5
                    if pos + head > end:
                        pending = t
                        return False
                    if len(stack) >= limits.max_depth:
                        raise NestingTooDeep(len(stack) + 1, limits.max_depth)
                    (n,) = unpack_i32(buf, pos + head - 4)
                    if n < 0:
                        raise MalformedMessage(f"negative container size {n}", pos - base)
                    if n > limits.max_container_size:
                        raise ContainerTooLarge(n, limits.max_container_size)
                    t1 = buf[pos]
                    t2 = buf[pos + 1] if is_map else 0
                    if n and (t1 not in VALID_TYPES or (is_map and t2 not in VALID_TYPES)):
                        raise MalformedMessage("invalid container element type", pos - base)
                    if len(stack) == 1:
                        self.top_fields[self._top_fid] = (t, t1, t2)
                    if is_map:
                        stack.append([_K_MAP, 2 * n, t1, t2])
                    else:
                        stack.append([_K_LIST, n, t1, 0])
                    pos += head
                pending = -1
                if pos > max_end:
                    raise MessageTooLarge(pos - base, limits.max_message_bytes)
            return True
        finally:
            self._off = pos - base
            self._pending = pending


def parse_header(buf: bytes | bytearray, base: int, end: int, limits: ScanLimits) -> Header | None:
    """The message header at ``buf[base]``, None if incomplete; raises ``MalformedMessage``."""
    if end - base < 4:
        return None
    (word,) = _U32.unpack_from(buf, base)
    if word & 0x80000000:
        if word & STRICT_VERSION_MASK != STRICT_VERSION_1:
            raise MalformedMessage(f"bad protocol version 0x{word:08x}", 0)
        if end - base < 8:
            return None
        (n,) = _I32.unpack_from(buf, base + 4)
        _check_name_length(n, limits, 4)
        body = 8 + n + 4
        if end - base < body:
            return None
        name = bytes(buf[base + 8 : base + 8 + n])
        (seqid,) = _I32.unpack_from(buf, base + 8 + n)
        return Header(name, word & 0xFF, seqid, True, body)
    n = word
    _check_name_length(n, limits, 0)
    body = 4 + n + 1 + 4
    if end - base < body:
        return None
    name = bytes(buf[base + 4 : base + 4 + n])
    mtype = buf[base + 4 + n]
    (seqid,) = _I32.unpack_from(buf, base + 4 + n + 1)
    return Header(name, mtype, seqid, False, body)


def _check_name_length(n: int, limits: ScanLimits, offset: int) -> None:
    if n < 0 or n > limits.max_name_bytes:
        raise MalformedMessage(f"method name length {n} not in 0..{limits.max_name_bytes}", offset)


class LogColumns(NamedTuple):
    """What ``fast_log_columns`` slices out of a ``Log`` call."""

    end: int
    categories: list[bytes]
    messages: list[bytes]
    # One entry per message, or None when no entry carries metadata.
    metadata: list[dict[bytes, bytes] | None] | None


def _with_map(
    metadata: list[dict[bytes, bytes] | None] | None, index: int, meta: dict[bytes, bytes]
) -> list[dict[bytes, bytes] | None]:
    """``metadata`` (None until the first entry with a map) with ``meta`` as entry ``index``,
    the entries before it without one."""
    if metadata is None:
        metadata = []
    metadata += [None] * (index - len(metadata))
    metadata.append(meta)
    return metadata


def fast_log_columns(data: bytes, body: int, max_entries: int, max_pairs: int) -> LogColumns | None:
    """The columns of a ``Log`` args struct at ``data[body]`` in the common shape, or None.

    The common shape is field 1 = list<struct> whose entries hold field 1 (string), field 2
    (string) and optionally field 3 (map<string, string> of at most ``max_pairs`` pairs), in
    that order, as every client writes them.  None means "not the common shape, or not valid":
    walk it with ``MessageScanner``, which gives the precise error.  Raises ``TooManyEntries``
    early.  Only a returned end equal to the message's end proves the whole message well formed.

    No object is made per entry but its byte strings and metadata map (a map of byte strings is
    not tracked by the garbage collector), so a call of 100,000 entries does not set off the
    collections under the GIL that decoding it into thriftpy2 objects does.
    """
    # Lengths are read unsigned: a "negative" one is a huge offset, which makes the next
    # unpack_from fail (struct.error) or the final end check fail, so it needs no extra test
    # (a slice past the end is merely short, and the result is then thrown away).
    # Each entry after the first is checked with one unpack of its predecessor's STOP byte,
    # its category header and length, then one of its message header and length; an entry
    # with metadata shows as a mismatch of the first, and only then is its map read.
    unpack3 = _HDR_ULEN.unpack_from
    unpack4 = _STOP_HDR_ULEN.unpack_from
    categories: list[bytes] = []
    messages: list[bytes] = []
    metadata: list[dict[bytes, bytes] | None] | None = None
    add_category = categories.append
    add_message = messages.append
    try:
        if data[body : body + 4] != b"\x0f\x00\x01\x0c":
            return None
        (count,) = _I32.unpack_from(data, body + 4)
        if count > max_entries:
            raise TooManyEntries(count, max_entries)
        pos: int = body + 8
        if count <= 0:
            empty = count == 0 and data[pos : pos + 1] == bytes((T_STOP,))
            return LogColumns(pos + 1, categories, messages, None) if empty else None
        hdr, n = unpack3(data, pos)
        if hdr != _CATEGORY_HDR:
            return None
        start = pos + 7
        pos = start + n
        add_category(data[start:pos])
        for i in range(count):
            if i:
                hdr, n = unpack4(data, pos)
                if hdr != _STOP_CATEGORY_HDR:
                    found = _string_map(data, pos, max_pairs)
                    if found is None:
                        return None
                    meta, pos = found
                    metadata = _with_map(metadata, i - 1, meta)
                    hdr, n = unpack4(data, pos)
                    if hdr != _STOP_CATEGORY_HDR:
                        return None
                start = pos + 8
                pos = start + n
                add_category(data[start:pos])
            hdr, n = unpack3(data, pos)
            if hdr != _MESSAGE_HDR:
                return None
            start = pos + 7
            pos = start + n
            add_message(data[start:pos])
        if data[pos : pos + 2] != b"\x00\x00":  # the last entry's STOP, then the args' STOP
            found = _string_map(data, pos, max_pairs)
            if found is None:
                return None
            meta, pos = found
            metadata = _with_map(metadata, count - 1, meta)
            if data[pos : pos + 2] != b"\x00\x00":
                return None
        if metadata is not None:
            metadata += [None] * (count - len(metadata))
        return LogColumns(pos + 2, categories, messages, metadata)
    except struct.error:
        return None


def walked_log_columns(data: bytes, body: int, max_entries: int) -> LogColumns | None:
    """The columns of a ``Log`` args struct at ``data[body]`` that ``MessageScanner`` has
    walked (so well formed, its top-level field types checked), whatever fields newer clients
    add: fields of ids the IDL does not know are skipped, as thriftpy2 skips them, at any
    place and of any type.  Raises ``TooManyEntries``.

    None for anything that is not plainly entries of a string category, a string message and
    perhaps a map of strings (a field of a known id sent with another type, an entry lacking
    its category or message, the list sent twice): the general decoder decides those.

    It exists because thriftpy2's decoder holds the GIL for its whole run (~200 ms for 100,000
    entries), so a worker thread decoding a large call with unknown fields would hold the
    event loop's thread as long; this loop gives the GIL up at every switch interval.
    """
    unpack_i16 = _I16.unpack_from
    unpack_u32 = _U32.unpack_from
    categories: list[bytes] = []
    messages: list[bytes] = []
    metadata: list[dict[bytes, bytes] | None] | None = None
    seen_list = False
    pos = body
    while (t := data[pos]) != T_STOP:
        (fid,) = unpack_i16(data, pos + 1)
        pos += 3
        if fid != 1:
            pos = _skip(data, pos, t)
            continue
        if seen_list or t != T_LIST or data[pos] != T_STRUCT:
            return None
        seen_list = True
        (count,) = _I32.unpack_from(data, pos + 1)
        if count > max_entries:
            raise TooManyEntries(count, max_entries)
        pos += 5
        for i in range(count):
            category = message = meta = None
            while (t := data[pos]) != T_STOP:
                (fid,) = unpack_i16(data, pos + 1)
                pos += 3
                if t == T_STRING and fid in (1, 2):
                    (n,) = unpack_u32(data, pos)
                    start = pos + 4
                    pos = start + n
                    if fid == 1:
                        category = data[start:pos]
                    else:
                        message = data[start:pos]
                elif fid == 3 and t == T_MAP and data[pos] == data[pos + 1] == T_STRING:
                    (pairs,) = unpack_u32(data, pos + 2)
                    pos += 6
                    meta = {}
                    for _ in range(pairs):
                        (n,) = unpack_u32(data, pos)
                        start = pos + 4
                        pos = start + n
                        key = data[start:pos]
                        (n,) = unpack_u32(data, pos)
                        start = pos + 4
                        pos = start + n
                        meta[key] = data[start:pos]
                elif 1 <= fid <= 3:
                    return None
                else:
                    pos = _skip(data, pos, t)
            pos += 1
            if category is None or message is None:
                return None
            categories.append(category)
            messages.append(message)
            if meta is not None:
                metadata = _with_map(metadata, i, meta)
    if metadata is not None:
        metadata += [None] * (len(messages) - len(metadata))
    return LogColumns(pos + 1, categories, messages, metadata)


def _skip(data: bytes, pos: int, t: int) -> int:
    """Where the value of type ``t`` at ``data[pos]`` ends, in a walked message (whose nesting
    ``max_depth`` bounds, and so this recursion)."""
    size = FIXED_SIZES.get(t)
    if size is not None:
        return pos + size
    if t == T_STRING:
        return pos + 4 + int(_U32.unpack_from(data, pos)[0])
    if t == T_STRUCT:
        while (field_type := data[pos]) != T_STOP:
            pos = _skip(data, pos + 3, field_type)
        return pos + 1
    if t == T_MAP:
        key_type, value_type = data[pos], data[pos + 1]
        (pairs,) = _I32.unpack_from(data, pos + 2)
        pos += 6
        for _ in range(pairs):
            pos = _skip(data, _skip(data, pos, key_type), value_type)
        return pos
    element_type = data[pos]  # a list or a set
    count: int = _I32.unpack_from(data, pos + 1)[0]
    pos += 5
    size = FIXED_SIZES.get(element_type)
    if size is not None:
        return pos + count * size
    for _ in range(count):
        pos = _skip(data, pos, element_type)
    return pos


def _string_map(data: bytes, pos: int, max_pairs: int) -> tuple[dict[bytes, bytes], int] | None:
    """The map<string, string> of field 3 at ``data[pos]`` and where it ends, or None (not
    that field, or more pairs than allowed: the general path names the problem)."""
    if data[pos : pos + 5] != _METADATA_HDR:
        return None
    (count,) = _I32.unpack_from(data, pos + 5)
    if not 0 <= count <= max_pairs:
        return None
    unpack = _U32.unpack_from
    pos += 9
    meta: dict[bytes, bytes] = {}
    for _ in range(count):
        (n,) = unpack(data, pos)
        start = pos + 4
        pos = start + n
        key = data[start:pos]
        (n,) = unpack(data, pos)
        start = pos + 4
        pos = start + n
        meta[key] = data[start:pos]
    return meta, pos
