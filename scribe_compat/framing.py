"""Framed or unframed: decided once per connection from its first bytes.

Scribe's server speaks framed transport only (a 4-byte big-endian length before each message);
some clients send bare (buffered) messages.  The first bytes tell them apart:

* ``0x80 0x01``: a strict binary-protocol header, so the message is unframed;
* a 4-byte length followed by that many bytes spelling a known method name: an unframed
  non-strict header (name length, name, type byte, seqid);
* anything else is a frame length.

A frame's payload itself starts with ``0x80`` or ``0x00`` (a strict header or a name length
below 16 MiB), never with a letter, so a frame can never look like an unframed non-strict call.
"""

from __future__ import annotations

import enum
import struct

from scribe_compat.errors import FrameTooLarge, MalformedMessage
from scribe_compat.idl import LONGEST_METHOD_NAME, METHOD_NAMES_BYTES

_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")


class Framing(enum.Enum):
    FRAMED = "framed"
    UNFRAMED = "unframed"


def detect_framing(data: bytes | bytearray) -> Framing | None:
    """The framing of a connection whose first bytes are ``data``; None until it can tell."""
    if len(data) < 2:
        return None
    if data[0] == 0x80 and data[1] == 0x01:
        return Framing.UNFRAMED
    if len(data) < 4:
        return None
    (n,) = _U32.unpack_from(data, 0)
    if not 0 < n <= LONGEST_METHOD_NAME:
        return Framing.FRAMED
    name = bytes(data[4 : 4 + n])
    if len(name) < n:
        # Not all of the name is here yet: wait while it can still become a known name.
        if any(len(known) == n and known.startswith(name) for known in METHOD_NAMES_BYTES):
            return None
        return Framing.FRAMED
    return Framing.UNFRAMED if name in METHOD_NAMES_BYTES else Framing.FRAMED


def frame_length(data: bytes | bytearray, pos: int, max_frame_bytes: int) -> int | None:
    """The payload length of the frame header at ``data[pos]``, None if fewer than 4 bytes."""
    if len(data) - pos < 4:
        return None
    n: int = _I32.unpack_from(data, pos)[0]
    if n <= 0:
        raise MalformedMessage(f"invalid frame length {n}", pos)
    if n > max_frame_bytes:
        raise FrameTooLarge(n, max_frame_bytes)
    return n


def frame(payload: bytes) -> bytes:
    """``payload`` with its 4-byte big-endian length in front."""
    return _U32.pack(len(payload)) + payload
