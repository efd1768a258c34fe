"""The journal's on-disk format, byte by byte.  Everything that writes or parses a journal file
goes through this module; it does no I/O.

Directory layout
================
::

    <journal-dir>/.lock                          flock held by the process that writes
    <journal-dir>/.journal-id                    the journal's identity (below)
    <journal-dir>/<category-dir>/category        the raw category bytes (see journal.layout)
    <journal-dir>/<category-dir>/<partition>/    partition: decimal, 0 .. 2**31 - 1
        hwm                                      high-water mark and recovery checkpoint
        <first offset, 20 digits>.log            segment: batches, nothing else
        <first offset, 20 digits>.index          sparse index of that segment (a hint)
        <segment>.log.torn-<n>                   bytes recovery cut from a torn tail
        <segment>.log.cut-<n>                    bytes ``repair`` cut at damage
        gaps                                     offsets ``repair`` left out (below)

The journal's identity, ``.journal-id``, is a random UUID (uuid4) in its canonical text form
(36 characters, lower-case hex with hyphens) and a newline: 37 bytes, nothing else.  The first
``open_journal`` of a directory without one (new, or written by code older than the file) creates
it atomically (temporary file, fdatasync, rename, fsync of the directory); nothing changes it
afterwards.  A file of any other content is damage (``JournalCorrupt``), never replaced.  It tells
journals apart wherever their messages meet (``(journal_id, partition, offset)`` keys of rows
materialized from several log servers).  Like ``.lock`` its name starts with a dot, which the
category encoding always escapes (``journal.layout``), so no category directory can ever have it.
A temporary file a crash left while creating it is ignored.

A segment's name is the offset of its first message.  Segments of a partition are contiguous:
each starts where the previous one ends, except after ``repair`` or a lost INTERVAL-mode tail,
which continue at a higher offset rather than reuse an offset a reader may have seen (a gap;
``repair`` documents its gaps in ``gaps``, below).

Batch (a record; all integers little-endian)
============================================
::

    offset size  field
         0    4  length       u32  bytes after this field: 36 + len(payload)
         4    4  crc          u32  zlib.crc32 of bytes 8 .. 4 + length (the rest of the batch)
         8    1  version      u8   2 (1 is still read, see below)
         9    1  flags        u8   bit 0 (FLAG_METADATA): entries carry metadata; others zero
        10    2  first_us     u16  version 2: the microsecond within ``first_ts_ms`` of the first
                                   message, 0 .. 999; version 1: reserved, 0
        12    8  base_offset  u64  offset of the first message (offsets stay below 2**63)
        20    4  count        u32  number of messages, at least 1
        24    8  first_ts_ms  i64  time of the first message, ms since the Unix epoch
        32    8  max_ts_ms    i64  time of the last message, in ms (see the time rule)
        40    n  payload           msgpack array of ``count`` entries

Each payload entry is a msgpack ``bin`` (the message), or with FLAG_METADATA an array
``[bin, map of bin to bin | nil]``.  Readers also accept the ``str`` family for bytes.

Message times.  Message ``i`` of a batch (0-based) has the time, in microseconds since the Unix
epoch, ``first_ts_ms * 1000 + first_us + i``: a group of messages is stamped once and given
consecutive microseconds, which may spill into later milliseconds.  ``max_ts_ms`` is the
millisecond of the last message, ``(first_ts_ms * 1000 + first_us + count - 1) // 1000``; a
version-2 batch whose ``max_ts_ms`` is below that is invalid.  The writer keeps ``last_us``, the
time of the last message it wrote, and stamps each batch ``first = max(now_ms * 1000,
last_us + 1)`` (``first_ts_ms = first // 1000``, ``first_us = first % 1000``), then
``last_us = first + count - 1``.  So along a partition

* message times strictly increase (sinks derive Cassandra's ``USING TIMESTAMP`` from them: a
  later event of a key always wins, also within one millisecond), across write groups, segments,
  restarts and recovery: on open the writer resumes at ``last_us = (max_ts_ms + 1) * 1000 - 1``
  of the last batch recovery kept (or, after a power loss took an unsynced tail readers may have
  seen, ``hwm_ts_ms``), which is at or after its last message's time;
* ``first_ts_ms`` and ``max_ts_ms`` never decrease, and a batch's ``max_ts_ms`` is at most the
  next batch's ``first_ts_ms`` (``seek_time``, the index and retention rely on this);
* times are the wall clock's (at the write of their group), and drift ahead of it only while one
  partition takes more than 1000 messages per millisecond: by the surplus microseconds, caught up
  as soon as the rate drops.  (A clock stepping back, or a reopen within the millisecond of the
  last batch, holds times just above the last one in the same way.)

Version 1 (older code) stamped every message of a batch with one millisecond (``first_ts_ms ==
max_ts_ms``) and kept bytes 10 .. 12 zero; it reads as ``first_us = 0``, so its messages' times
are ``first_ts_ms * 1000 + i``, increasing within a batch but not across version-1 batches of one
millisecond.  The first version-2 batch after them starts after the last one's messages (recovery
counts a version-1 batch's spill past its ``max_ts_ms``).  Going back to older code is safe: it
checks the version right after the crc and refuses a version-2 batch as ``UnsupportedFormat``,
so nothing is cut as garbage on a downgrade; the partition refuses to open instead (only
``repair`` run by the older code would cut it, and keep it in a side file).

A batch is valid when its length fits the file, its crc matches, its version is known, its flags
are, its ``first_us`` is below 1000 (zero in version 1), it holds at least one message and its
timestamps are as above.  A batch with a matching crc but an unknown version was written by newer
code: it is never cut as garbage (``UnsupportedFormat``).

Index entry (``.index``: entries only, no header)
=================================================
::

    offset size  field
         0    8  offset       u64  base offset of an indexed batch
         8    8  position     u64  byte position of that batch in the segment (> 0)
        16    8  max_ts_ms    i64  the batch's max timestamp
        24    4  crc          u32  zlib.crc32 of bytes 0 .. 24

An entry is written for the first batch starting at least ``index_interval_bytes`` after the
previous entry (the segment start counts as an entry).  Entries strictly increase in offset and
position.  The index is a hint: every entry used is checked against the batch header it points to,
and an index that is missing or fails a check is rebuilt from the log.

Gap file (``gaps``: entries only, no header; rewritten atomically by ``repair``)
================================================================================
::

    offset size  field
         0    8  start        u64  first offset of the gap
         8    8  end          u64  the offset where data continues (above ``start``)
        16    8  salvaged     u64  messages of the cut bytes that ``repair`` kept: they are at
                                   offsets ``end .. end + salvaged - 1``
        24    8  made_ms      i64  when the gap was made, ms since the Unix epoch
        32    1  reason       u8   1 (GAP_REPAIR): ``repair`` cut these offsets at damage
        33    3  reserved          zero
        36    4  crc          u32  zlib.crc32 of bytes 0 .. 36

A gap documented here is not damage: ``verify`` accepts it, and readers continue over it by
themselves (they still report it in ``skipped``).  An undocumented gap between segments (a
lost INTERVAL-mode tail, segments deleted under a reader) stays what it was: a reader raises
``OffsetOutOfRange`` unless it skips gaps, and ``verify`` reports it.  Entries strictly
increase and do not overlap (``start`` at or above the previous ``end``); like the index, the
file's valid prefix counts and anything after a bad entry is ignored (``verify`` reports it).

High-water-mark file (``hwm``: rewritten in place, 68 bytes)
============================================================
::

    offset size  field
         0    4  magic          b"SJHW"
         4    1  version        u8   1
         5    1  flags          u8   bit 0 (HWM_CLEAN): written by a clean close
         6    2  reserved       u16  0
         8    8  hwm            u64  next offset after the data readers may see
        16    8  hwm_ts_ms      i64  max timestamp of the batch before ``hwm`` (-1: none)
        24    8  cp_segment     u64  checkpoint: first offset of the segment holding the end
                                     of the fdatasynced data
        32    8  cp_position    u64  end of the fdatasynced data in that segment
        40    8  cp_offset      u64  next offset after the fdatasynced data
        48    8  cp_last_batch  u64  position of the last fdatasynced batch in that segment,
                                     2**64 - 1 when the segment has none
        56    8  cp_ts_ms       i64  max timestamp of that batch (-1: none)
        64    4  crc            u32  zlib.crc32 of bytes 0 .. 64

The checkpoint never claims more than has been fdatasynced.  Under FSYNC ``hwm == cp_offset``;
under INTERVAL and NONE ``hwm`` may be ahead (acknowledged, written, not yet synced).  The file is
rewritten after every commit and fdatasynced when a segment is created, on close, and at most every
``checkpoint_fsync_interval_s`` otherwise, so after a power loss it may be older than the log but
never ahead of it.  68 bytes lie within one disk sector, so a write is never torn on disk; a
reader in another process that races a rewrite sees a crc mismatch and reads again.
"""

from __future__ import annotations

import contextlib
import re
import struct
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import msgpack  # untyped (mypy override in pyproject); used only in this module

FORMAT_VERSION: Final = 2
# Versions this code reads; it writes FORMAT_VERSION.  Version 1 has no ``first_us``.
_READ_VERSIONS: Final = frozenset({1, FORMAT_VERSION})
FLAG_METADATA: Final = 0x01
_KNOWN_FLAGS: Final = FLAG_METADATA

# ---- batch ----
_LENGTH_CRC = struct.Struct("<II")
_HEADER_REST = struct.Struct("<BBHQIqq")
HEADER = struct.Struct("<IIBBHQIqq")
HEADER_SIZE: Final = HEADER.size
assert _LENGTH_CRC.size == 8
assert _HEADER_REST.size == 32
assert HEADER_SIZE == 40
# ``length`` counts the crc and the rest of the header plus the payload.
LENGTH_OVERHEAD: Final = HEADER_SIZE - 4
MAX_OFFSET: Final = (1 << 63) - 1
US_PER_MS: Final = 1000


def _byte_class(values: frozenset[int] | range) -> bytes:
    return b"[" + b"".join(re.escape(bytes([v])) for v in sorted(values)) + b"]"


# Bytes 8 and 9 of every batch this code reads: a known version, then flags within the known
# ones.  ``journal.salvage`` looks for them in damaged bytes (the regex engine skips most
# positions without a Python step each) before it tries a whole batch at a position.
BATCH_MARK: Final = re.compile(
    b"(?="
    + _byte_class(_READ_VERSIONS)
    + _byte_class(frozenset(f for f in range(256) if not f & ~_KNOWN_FLAGS))
    + b")"
)
# Where the mark sits in a batch.
BATCH_MARK_OFFSET: Final = 8

# ---- index ----
INDEX_ENTRY = struct.Struct("<QQqI")
INDEX_ENTRY_SIZE: Final = INDEX_ENTRY.size
assert INDEX_ENTRY_SIZE == 28
_INDEX_BODY = struct.Struct("<QQq")
assert _INDEX_BODY.size == 24

# ---- high-water-mark file ----
HWM_MAGIC: Final = b"SJHW"
HWM_VERSION: Final = 1
HWM_CLEAN: Final = 0x01
NO_BATCH: Final = (1 << 64) - 1
_HWM_BODY = struct.Struct("<4sBBHQqQQQQq")
assert _HWM_BODY.size == 64
HWM_SIZE: Final = _HWM_BODY.size + 4
assert HWM_SIZE == 68

# ---- gap file ----
_GAP_BODY = struct.Struct("<QQQqB3s")
assert _GAP_BODY.size == 36
GAP_ENTRY_SIZE: Final = _GAP_BODY.size + 4
assert GAP_ENTRY_SIZE == 40
GAP_REPAIR: Final = 1
_GAP_REASONS: Final = frozenset({GAP_REPAIR})

SEGMENT_SUFFIX: Final = ".log"
INDEX_SUFFIX: Final = ".index"
HWM_FILE: Final = "hwm"
GAPS_FILE: Final = "gaps"
CATEGORY_FILE: Final = "category"
LOCK_FILE: Final = ".lock"
JOURNAL_ID_FILE: Final = ".journal-id"
JOURNAL_ID_SIZE: Final = 37  # canonical UUID text and a newline
assert len(f"{uuid.UUID(int=0)}\n") == JOURNAL_ID_SIZE
TORN_INFIX: Final = ".torn-"
CUT_INFIX: Final = ".cut-"


class FormatError(Exception):
    """Bytes that are not a valid record; callers turn it into ``JournalCorrupt`` with the file.

    ``truncated``: the bytes end inside the record (a torn write looks like this).
    ``version``: set when the crc matched but the version is unknown (never cut as garbage).
    """

    def __init__(self, reason: str, *, truncated: bool = False, version: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.truncated = truncated
        self.version = version


@dataclass(frozen=True, slots=True)
class BatchHeader:
    """The fixed 40 bytes in front of a batch's payload.

    ``first_us`` is bytes 10 .. 12 as found: ``check_batch`` validates it (zero in version 1).
    """

    length: int
    crc: int
    version: int
    flags: int
    first_us: int
    base_offset: int
    count: int
    first_timestamp_ms: int
    max_timestamp_ms: int

    @property
    def first_timestamp_us(self) -> int:
        """The time of the first message, in microseconds since the epoch."""
        return self.first_timestamp_ms * US_PER_MS + (self.first_us if self.version > 1 else 0)

    @property
    def last_timestamp_us(self) -> int:
        """The time of the last message, in microseconds since the epoch."""
        return self.first_timestamp_us + self.count - 1

    @property
    def last_timestamp_ms(self) -> int:
        """The millisecond of the last message: ``max_ts_ms``, unless a version-1 batch of more
        than 1000 messages spills past it."""
        return max(self.max_timestamp_ms, self.last_timestamp_us // US_PER_MS)

    @property
    def size(self) -> int:
        """Bytes of the whole batch on disk."""
        return 4 + self.length

    @property
    def payload_size(self) -> int:
        return self.length - LENGTH_OVERHEAD

    @property
    def end_offset(self) -> int:
        return self.base_offset + self.count


def segment_name(base_offset: int) -> str:
    return f"{base_offset:020d}{SEGMENT_SUFFIX}"


def index_name(base_offset: int) -> str:
    return f"{base_offset:020d}{INDEX_SUFFIX}"


def parse_segment_name(name: str) -> int | None:
    """The first offset a segment file name encodes, or None for any other file."""
    stem, dot, suffix = name.partition(".")
    if dot and "." + suffix == SEGMENT_SUFFIX and len(stem) == 20 and stem.isascii():
        return int(stem) if stem.isdigit() else None
    return None


# ---- payload ----


# Entries packed per msgpack call.  One call holds the GIL throughout (130 ms for 100,000
# entries with metadata), so a large batch is packed in slices, between which a worker thread
# encoding it lets the event loop's thread run; 1024 entries take about a millisecond.
PACK_SLICE_ENTRIES = 1024


def encode_payload(
    messages: Sequence[bytes], metadata: Sequence[dict[bytes, bytes] | None] | None
) -> tuple[bytes, int]:
    """The msgpack payload and flags for a batch: an array of messages, or of ``[message,
    metadata]`` pairs.  Large batches are packed slice by slice (the same bytes)."""
    entries: Sequence[object]
    if metadata is None:
        entries, flags = messages, 0
    else:
        entries, flags = list(zip(messages, metadata, strict=True)), FLAG_METADATA
    if len(entries) <= PACK_SLICE_ENTRIES:
        payload: bytes = msgpack.packb(entries, use_bin_type=True)
        return payload, flags
    # An array's encoding is its header, then its elements' encodings one after the other:
    # each slice packed as an array, without its own header, continues the whole one.
    packer = msgpack.Packer(use_bin_type=True)
    parts = [packer.pack_array_header(len(entries))]
    for start in range(0, len(entries), PACK_SLICE_ENTRIES):
        piece = entries[start : start + PACK_SLICE_ENTRIES]
        header = len(packer.pack_array_header(len(piece)))
        parts.append(packer.pack(piece)[header:])
    return b"".join(parts), flags


def decode_payload(
    header: BatchHeader, payload: bytes
) -> tuple[list[bytes], list[dict[bytes, bytes] | None] | None]:
    """Messages (and metadata when flagged) of a checksummed batch; raises FormatError."""
    try:
        entries: object = msgpack.unpackb(payload, raw=True, strict_map_key=False, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise FormatError(f"payload is not valid msgpack: {exc}") from None
    if not isinstance(entries, list) or len(entries) != header.count:
        raise FormatError(f"payload does not hold {header.count} entries")
    if not header.flags & FLAG_METADATA:
        if not all(type(m) is bytes for m in entries):
            raise FormatError("payload entry is not bytes")
        return entries, None
    messages: list[bytes] = []
    metadata: list[dict[bytes, bytes] | None] = []
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == 2 and type(entry[0]) is bytes):
            raise FormatError("payload entry is not [bytes, metadata]")
        meta = entry[1]
        if meta is not None and not (
            isinstance(meta, dict)
            and all(type(k) is bytes and type(v) is bytes for k, v in meta.items())
        ):
            raise FormatError("payload metadata is not a map of bytes to bytes")
        messages.append(entry[0])
        metadata.append(meta)
    return messages, metadata


# ---- batch header ----


def batch_times(first_timestamp_us: int, count: int) -> tuple[int, int, int]:
    """``(first_ts_ms, first_us, max_ts_ms)`` of a batch of ``count`` messages whose first
    message has the time ``first_timestamp_us`` (the time rule in the module docstring)."""
    first_ts_ms, first_us = divmod(first_timestamp_us, US_PER_MS)
    return first_ts_ms, first_us, (first_timestamp_us + count - 1) // US_PER_MS


def encode_header(
    payload: bytes,
    flags: int,
    base_offset: int,
    count: int,
    first_ts_ms: int,
    first_us: int,
    max_ts_ms: int,
) -> bytes:
    """The 40-byte header for ``payload``, crc included."""
    rest = _HEADER_REST.pack(
        FORMAT_VERSION, flags, first_us, base_offset, count, first_ts_ms, max_ts_ms
    )
    crc = zlib.crc32(payload, zlib.crc32(rest))
    return _LENGTH_CRC.pack(LENGTH_OVERHEAD + len(payload), crc) + rest


def encode_batch(
    messages: Sequence[bytes],
    metadata: Sequence[dict[bytes, bytes] | None] | None,
    base_offset: int,
    timestamp_ms: int,
    first_us: int = 0,
) -> bytes:
    """A whole batch whose first message has the time ``timestamp_ms`` and ``first_us`` (tests
    and tools; the writer builds header and payload separately)."""
    payload, flags = encode_payload(messages, metadata)
    times = batch_times(timestamp_ms * US_PER_MS + first_us, len(messages))
    header = encode_header(payload, flags, base_offset, len(messages), *times)
    return header + payload


def parse_header(data: bytes, available: int, max_record_bytes: int) -> BatchHeader:
    """Parse the header in ``data`` (40 bytes) of a batch with ``available`` bytes left in the
    file from its start.  Checks what the header alone can show; the crc needs the payload."""
    if len(data) < HEADER_SIZE:
        raise FormatError(f"file ends inside a batch header ({len(data)} bytes)", truncated=True)
    length, crc, version, flags, first_us, base, count, first_ts, max_ts = HEADER.unpack_from(data)
    if length < LENGTH_OVERHEAD or length - LENGTH_OVERHEAD > max_record_bytes:
        raise FormatError(f"implausible batch length {length}")
    if 4 + length > available:
        raise FormatError(
            f"file ends inside a batch ({available} of {4 + length} bytes)", truncated=True
        )
    return BatchHeader(length, crc, version, flags, first_us, base, count, first_ts, max_ts)


def check_batch(header: BatchHeader, header_bytes: bytes, payload: bytes) -> None:
    """Verify the crc, then the fields only trusted once the crc matches."""
    if zlib.crc32(payload, zlib.crc32(header_bytes[8:HEADER_SIZE])) != header.crc:
        raise FormatError("crc mismatch")
    if header.version not in _READ_VERSIONS:
        raise FormatError(f"unknown format version {header.version}", version=header.version)
    if header.flags & ~_KNOWN_FLAGS:
        raise FormatError(f"unknown flags {header.flags:#x}")
    if header.version == 1:
        if header.first_us != 0:
            raise FormatError("reserved bytes are not zero")
    elif header.first_us >= US_PER_MS:
        raise FormatError(f"first_us {header.first_us} is not below 1000")
    if header.count < 1:
        raise FormatError("empty batch")
    if header.base_offset + header.count > MAX_OFFSET:
        raise FormatError("offset beyond 2**63")
    if header.max_timestamp_ms < header.first_timestamp_ms:
        raise FormatError("max timestamp before first timestamp")
    if header.version > 1 and header.last_timestamp_us // US_PER_MS > header.max_timestamp_ms:
        raise FormatError("max timestamp before the last message's time")


# ---- journal identity ----


def encode_journal_id(journal_id: uuid.UUID) -> bytes:
    return f"{journal_id}\n".encode("ascii")


def decode_journal_id(data: bytes) -> uuid.UUID:
    """Parse a ``.journal-id`` file; raises FormatError for anything but what
    ``encode_journal_id`` writes."""
    if len(data) == JOURNAL_ID_SIZE and data.endswith(b"\n"):
        text = data[:-1].decode("ascii", "replace")
        with contextlib.suppress(ValueError):
            journal_id = uuid.UUID(text)
            if str(journal_id) == text:
                return journal_id
    raise FormatError(
        f"not a journal identity: {len(data)} bytes where a UUID in canonical form and a "
        f"newline ({JOURNAL_ID_SIZE} bytes) belong"
    )


# ---- index ----


def encode_index_entry(offset: int, position: int, max_ts_ms: int) -> bytes:
    body = _INDEX_BODY.pack(offset, position, max_ts_ms)
    return body + struct.pack("<I", zlib.crc32(body))


def decode_index(data: bytes, base_offset: int, log_size: int) -> tuple[list[IndexEntry], bool]:
    """The valid prefix of an index file's entries, and whether anything after it was invalid.

    "Valid" is what the index alone shows: crc, strictly increasing offsets and positions
    inside the log.  Callers still check each entry they use against the log.
    """
    entries: list[IndexEntry] = []
    prev_offset, prev_position = base_offset, 0
    whole = len(data) - len(data) % INDEX_ENTRY_SIZE
    for start in range(0, whole, INDEX_ENTRY_SIZE):
        offset, position, ts, crc = INDEX_ENTRY.unpack_from(data, start)
        if zlib.crc32(data[start : start + 24]) != crc:
            return entries, True
        if offset <= prev_offset or position <= prev_position or position >= log_size:
            return entries, True
        entries.append(IndexEntry(offset, position, ts))
        prev_offset, prev_position = offset, position
    return entries, whole != len(data)


@dataclass(frozen=True, slots=True)
class IndexEntry:
    offset: int
    position: int
    max_timestamp_ms: int


# ---- gap file ----


@dataclass(frozen=True, slots=True)
class Gap:
    """Offsets ``start .. end - 1`` that hold no data, and why (see the module docstring)."""

    start: int
    end: int
    salvaged: int
    made_ms: int
    reason: int = GAP_REPAIR

    def encode(self) -> bytes:
        body = _GAP_BODY.pack(
            self.start, self.end, self.salvaged, self.made_ms, self.reason, b"\0\0\0"
        )
        return body + struct.pack("<I", zlib.crc32(body))


def decode_gaps(data: bytes) -> tuple[list[Gap], bool]:
    """The valid prefix of a gap file's entries, and whether anything after it was invalid."""
    gaps: list[Gap] = []
    previous_end = 0
    whole = len(data) - len(data) % GAP_ENTRY_SIZE
    for start in range(0, whole, GAP_ENTRY_SIZE):
        first, end, salvaged, made_ms, reason, reserved = _GAP_BODY.unpack_from(data, start)
        (crc,) = struct.unpack_from("<I", data, start + _GAP_BODY.size)
        if zlib.crc32(data[start : start + _GAP_BODY.size]) != crc:
            return gaps, True
        if not (previous_end <= first < end <= MAX_OFFSET) or end + salvaged > MAX_OFFSET:
            return gaps, True
        if reason not in _GAP_REASONS or reserved != b"\0\0\0":
            return gaps, True
        gaps.append(Gap(first, end, salvaged, made_ms, reason))
        previous_end = end
    return gaps, whole != len(data)


# ---- high-water-mark file ----


@dataclass(frozen=True, slots=True)
class HighWaterMark:
    """The decoded ``hwm`` file (see the module docstring)."""

    hwm: int
    hwm_timestamp_ms: int
    cp_segment: int
    cp_position: int
    cp_offset: int
    cp_last_batch: int
    cp_timestamp_ms: int
    clean: bool = False

    def encode(self) -> bytes:
        body = _HWM_BODY.pack(
            HWM_MAGIC,
            HWM_VERSION,
            HWM_CLEAN if self.clean else 0,
            0,
            self.hwm,
            self.hwm_timestamp_ms,
            self.cp_segment,
            self.cp_position,
            self.cp_offset,
            self.cp_last_batch,
            self.cp_timestamp_ms,
        )
        return body + struct.pack("<I", zlib.crc32(body))


def decode_hwm(data: bytes) -> HighWaterMark:
    """Parse the ``hwm`` file; raises FormatError when it is short, foreign or damaged."""
    if len(data) < HWM_SIZE:
        raise FormatError(f"high-water-mark file has {len(data)} of {HWM_SIZE} bytes")
    (crc,) = struct.unpack_from("<I", data, _HWM_BODY.size)
    if zlib.crc32(data[: _HWM_BODY.size]) != crc:
        raise FormatError("high-water-mark file crc mismatch")
    magic, version, flags, _, hwm, hwm_ts, seg, pos, off, last, ts = _HWM_BODY.unpack_from(data)
    if magic != HWM_MAGIC:
        raise FormatError("not a high-water-mark file (bad magic)")
    if version != HWM_VERSION:
        raise FormatError(f"unknown high-water-mark file version {version}", version=version)
    if not (seg <= off <= hwm and (last == NO_BATCH or last < pos)):
        raise FormatError("high-water-mark file fields are inconsistent")
    return HighWaterMark(hwm, hwm_ts, seg, pos, off, last, ts, clean=bool(flags & HWM_CLEAN))
