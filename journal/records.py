"""Whole records, as they are on disk: what a fetch service sends and a remote reader decodes.

``read_records`` takes the bytes of whole batches from a partition's segment, from the batch
holding an offset on, without decoding or checking a payload (the receiver verifies each
batch's crc: ``split_batches``, then ``FetchedBatch.decode``), and never past a high-water
mark its caller read before: data below the mark is completely written, so a batch found
there is whole or damaged.  Both sides work on views of one buffer: neither copies the
records (a response is megabytes).

Rules it shares with ``journal.reader``: the segment holding an offset is found by its name
and its index (a hint, checked against the batch header it points to); a segment deleted
between listing and opening is looked up again; where the next segment starts above the end of
the last one the offsets between are a gap, documented (``journal.gaps``: repair cut them) or
not (retention, a lost unsynced tail).  One call reads within one segment: the next call goes
on in the next one.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from journal.errors import JournalCorrupt, OffsetOutOfRange
from journal.fileio import pread_exact
from journal.format import (
    HEADER_SIZE,
    BatchHeader,
    FormatError,
    check_batch,
    decode_payload,
    parse_header,
)
from journal.gaps import documented, read_gaps
from journal.segments import entry_matches, index_path, list_segments, load_index, segment_path
from journal.types import PartitionId

# Segments may be deleted between listing and opening: look again this many times.
_LOOKUPS = 10


@dataclass(frozen=True, slots=True)
class Records:
    """Whole batches (``data``, possibly empty) and the offset the next read starts at.

    ``gap``: ``data`` is empty and the offsets up to ``next_offset`` hold no data and never
    will; ``gap_documented`` when repair cut them, not when they are missing."""

    data: bytes | memoryview
    next_offset: int
    gap: bool = False
    gap_documented: bool = False


def earliest_offset(part: Path, high_water_mark: int) -> int:
    """The first offset retention has kept (the mark itself when no segment is left)."""
    segments = list_segments(part)
    return segments[0] if segments else high_water_mark


def read_records(
    part: Path,
    pid: PartitionId,
    offset: int,
    high_water_mark: int,
    max_bytes: int,
    max_messages: int,
    max_record_bytes: int,
) -> Records:
    """Whole batches from the one holding ``offset``: up to ``max_bytes`` of them and
    ``max_messages`` messages, but at least one batch when any lies below the mark.  Raises
    ``OffsetOutOfRange`` outside earliest .. mark, ``JournalCorrupt`` at damage."""
    for _ in range(_LOOKUPS):
        segments = list_segments(part)
        earliest = segments[0] if segments else high_water_mark
        if not earliest <= offset <= high_water_mark:
            raise OffsetOutOfRange(pid, offset, earliest, high_water_mark)
        if offset == high_water_mark:
            return Records(b"", offset)
        base = segments[bisect.bisect_right(segments, offset) - 1]
        try:
            fd = os.open(segment_path(part, base), os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            return _read_segment(
                _Segment(part, pid, base, fd, max_record_bytes),
                segments,
                offset,
                high_water_mark,
                max_bytes,
                max_messages,
            )
        finally:
            os.close(fd)
    raise JournalCorrupt(part, 0, "segments keep disappearing")


@dataclass
class _Segment:
    part: Path
    pid: PartitionId
    base: int
    fd: int
    max_record_bytes: int

    def corrupt(self, position: int, reason: str) -> JournalCorrupt:
        return JournalCorrupt(segment_path(self.part, self.base), position, reason)

    def header(self, data: bytes, available: int, position: int, expected: int) -> BatchHeader:
        try:
            header = parse_header(data, available, self.max_record_bytes)
        except FormatError as exc:
            raise self.corrupt(position, exc.reason) from None
        if header.base_offset != expected:
            raise self.corrupt(
                position, f"batch has offset {header.base_offset} where {expected} belongs"
            )
        return header

    def start(self, offset: int, size: int) -> tuple[int, int]:
        """The position and offset of the last indexed batch at or before ``offset``."""
        entries, _damaged = load_index(index_path(self.part, self.base), self.base, size)
        k = bisect.bisect_right([e.offset for e in entries], offset)
        if k and entry_matches(self.fd, entries[k - 1], size, self.max_record_bytes):
            return entries[k - 1].position, entries[k - 1].offset
        return 0, self.base  # no usable entry: scan from the segment's start


def _read_segment(
    seg: _Segment,
    segments: list[int],
    offset: int,
    hwm: int,
    max_bytes: int,
    max_messages: int,
) -> Records:
    size = os.fstat(seg.fd).st_size
    pos, at = seg.start(offset, size)
    # Step over the batches before the one holding ``offset`` (headers only).
    while True:
        data = pread_exact(seg.fd, HEADER_SIZE, pos)
        if not data:
            return _after_segment(seg, segments, at, offset)
        header = seg.header(data, size - pos, pos, at)
        if header.end_offset > offset:
            break
        pos += header.size
        at = header.end_offset
    # One read for what may be sent (at least the first batch whole), then cut at the last
    # whole batch within the limits and below the mark.
    chunk = pread_exact(seg.fd, min(max(max_bytes, header.size), size - pos), pos)
    end = 0
    count = 0
    while end + HEADER_SIZE <= len(chunk):
        try:
            header = seg.header(chunk[end : end + HEADER_SIZE], size - pos - end, pos + end, at)
        except JournalCorrupt:
            if end:
                break  # what came before the damage is good; the next read raises
            raise
        if header.end_offset > hwm or end + header.size > len(chunk):
            break
        if end and (end + header.size > max_bytes or count + header.count > max_messages):
            break
        end += header.size
        count += header.count
        at = header.end_offset
        if count >= max_messages:
            break
    if not end:
        return Records(b"", offset)
    return Records(memoryview(chunk)[:end] if end < len(chunk) else chunk, at)


def _after_segment(seg: _Segment, segments: list[int], at: int, offset: int) -> Records:
    """At the end of a segment, with data still below the mark: where does it go on?"""
    later = [b for b in list_segments(seg.part) if b > seg.base] or [
        b for b in segments if b > seg.base
    ]
    if not later:
        raise seg.corrupt(0, "data below the high-water mark is missing")
    following = later[0]
    if following < at:
        raise seg.corrupt(0, f"next segment {following} overlaps this one")
    if following == at:
        return Records(b"", at)  # the next call reads on in the next segment
    gaps, _damaged = read_gaps(seg.part)
    return Records(
        b"", following, gap=True, gap_documented=documented(gaps, offset, following) is not None
    )


class DecodedBatch:
    """One batch whose crc was verified: its messages (and metadata), offsets and times.

    Message ``i`` is at offset ``base + i`` with time ``timestamp_us + i`` (``journal.format``);
    the reader builds a ``JournalMessage`` from these only when it hands the message out."""

    __slots__ = ("base", "end", "messages", "metadata", "timestamp_ms", "timestamp_us")

    def __init__(
        self,
        header: BatchHeader,
        messages: list[bytes],
        metadata: list[dict[bytes, bytes] | None] | None,
    ) -> None:
        self.base = header.base_offset
        self.end = header.end_offset
        self.timestamp_ms = header.first_timestamp_ms
        self.timestamp_us = header.first_timestamp_us
        self.messages = messages
        self.metadata = metadata


class FetchedBatch:
    """One whole batch of fetched records, only its header read (not trusted before the crc):
    ``decode`` verifies and decodes it, as a local reader does when it reaches a batch."""

    __slots__ = ("_head", "_header", "_payload", "base", "end", "position")

    def __init__(
        self, header: BatchHeader, head: bytes, payload: memoryview, position: int
    ) -> None:
        self.base = header.base_offset
        self.end = header.end_offset
        self.position = position  # in the records it came in, for the error
        self._head = head
        self._header = header
        self._payload = payload

    def decode(self, where: Path) -> DecodedBatch:
        """The batch, its crc verified; raises ``JournalCorrupt`` naming ``where``."""
        header = self._header
        # A view, not a copy: the crc and msgpack take any buffer (``journal.format`` is
        # annotated with ``bytes`` only; what it does with a payload is buffer-generic).
        payload = cast(bytes, self._payload)
        try:
            check_batch(header, self._head, payload)
            messages, metadata = decode_payload(header, payload)
        except FormatError as exc:
            raise JournalCorrupt(where, self.position, exc.reason) from None
        return DecodedBatch(header, messages, metadata)


def split_batches(
    data: bytes | memoryview, where: Path
) -> tuple[list[FetchedBatch], JournalCorrupt | None]:
    """The batches in ``data`` (whole ones, from ``read_records``), each following the one
    before, as views of ``data``; and the damage after them, if any (``JournalCorrupt`` naming
    ``where``, the partition as the caller knows it, and the byte in ``data``).  Reads only
    headers: each batch is verified when it is decoded, so that its messages are made just
    before they are used (a whole response decoded at once is megabytes of objects, cold in
    the cache by the time the consumer gets to them)."""
    out: list[FetchedBatch] = []
    view = memoryview(data)
    pos = 0
    size = len(view)
    expected = None
    while pos < size:
        head = bytes(view[pos : pos + HEADER_SIZE])
        try:
            header = parse_header(head, size - pos, 1 << 62)
        except FormatError as exc:
            return out, JournalCorrupt(where, pos, exc.reason)
        if expected is not None and header.base_offset != expected:
            reason = f"batch has offset {header.base_offset} where {expected} belongs"
            return out, JournalCorrupt(where, pos, reason)
        out.append(FetchedBatch(header, head, view[pos + HEADER_SIZE : pos + header.size], pos))
        expected = header.end_offset
        pos += header.size
    return out, None


def decode_batches(data: bytes | memoryview, where: Path) -> list[DecodedBatch]:
    """Every batch in ``data`` verified and decoded (``split_batches``, then ``decode`` each);
    raises the first damage as ``JournalCorrupt``."""
    batches, damage = split_batches(data, where)
    decoded = [batch.decode(where) for batch in batches]
    if damage is not None:
        raise damage
    return decoded
