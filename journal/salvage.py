"""Salvage: the intact batches in bytes ``repair`` cut, written again at new offsets.

Damage cuts a partition at its first invalid batch, and everything after it goes to side files;
yet a flipped bit usually spoils one batch, and the batches after it are intact.  ``find_batches``
looks for them in a side file at every byte position: a batch is taken when its header is
plausible, its crc matches and its payload decodes (a crc alone matches at a random position once
in 2**32 tries; the payload check makes a false find vanishingly rare), and the search goes on
after it.  Batches are taken in file order, and only while their original offsets increase past
what the partition kept, so no message is kept twice.

``write_salvaged`` appends them at new offsets from ``first_offset``, which the caller puts above
every offset a reader may have seen (offsets are never reused): to every reader they are new
messages, and a group that read them before the damage gets them again (at-least-once).  Their
times follow the time rule (``journal.format``): the original time where it is above the last
time of the partition, else the microseconds just after it.  The payload bytes are kept as they
were; only the header changes (offset, times, crc).  Segments roll at ``segment_bytes`` as the
writer's do, and each gets its index.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from journal.config import JournalConfig
from journal.errors import JournalCorrupt
from journal.fileio import FileIO, naming, pread_exact, write_all
from journal.format import (
    BATCH_MARK,
    BATCH_MARK_OFFSET,
    HEADER_SIZE,
    NO_BATCH,
    US_PER_MS,
    BatchHeader,
    FormatError,
    batch_times,
    check_batch,
    decode_payload,
    encode_header,
    parse_header,
)
from journal.segments import IndexBuilder, index_path, segment_path, write_index


@dataclass(frozen=True)
class FoundBatch:
    """An intact batch in a side file: its header and where it is."""

    file: Path
    position: int
    header: BatchHeader


def find_batches(path: Path, max_record_bytes: int) -> Iterator[FoundBatch]:
    """Every intact batch in ``path``, in file order (see the module docstring)."""
    with naming(path), path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < HEADER_SIZE:
            return
        # A side file may be a whole segment: map it rather than read it position by position.
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            position = 0
            while (mark := BATCH_MARK.search(data, position + BATCH_MARK_OFFSET)) is not None:
                start = mark.start() - BATCH_MARK_OFFSET
                header = _intact_batch(data, start, size, max_record_bytes)
                if header is None:
                    position = start + 1
                    continue
                yield FoundBatch(path, start, header)
                position = start + header.size


def _intact_batch(data: mmap.mmap, start: int, size: int, max_record: int) -> BatchHeader | None:
    head = data[start : start + HEADER_SIZE]
    try:
        header = parse_header(head, size - start, max_record)
        payload = data[start + HEADER_SIZE : start + header.size]
        check_batch(header, head, payload)
        decode_payload(header, payload)
    except FormatError:
        return None
    return header


def select_batches(side_files: list[Path], kept_end: int, max_record: int) -> list[FoundBatch]:
    """The batches to salvage from ``side_files`` (in order): intact, with original offsets
    increasing from ``kept_end``, the end of what the partition kept."""
    selected: list[FoundBatch] = []
    end = kept_end
    for path in side_files:
        for found in find_batches(path, max_record):
            if found.header.base_offset >= end:
                selected.append(found)
                end = found.header.end_offset
    return selected


@dataclass
class SalvageEnd:
    """Where the salvaged data ends: the partition's new active segment and checkpoint fields."""

    segment_base: int
    segment_size: int
    next_offset: int
    last_batch: int
    last_timestamp_ms: int
    messages: int = 0
    batches: int = 0
    segments: list[int] = field(default_factory=list)


def write_salvaged(
    io: FileIO,
    part: Path,
    batches: list[FoundBatch],
    first_offset: int,
    last_timestamp_ms: int,
    config: JournalConfig,
) -> SalvageEnd:
    """Append ``batches`` in new segments from ``first_offset`` (each synced, with its index);
    ``last_timestamp_ms`` is the partition's last time (-1: none)."""
    end = SalvageEnd(first_offset, 0, first_offset, NO_BATCH, last_timestamp_ms)
    last_us = (last_timestamp_ms + 1) * US_PER_MS - 1 if last_timestamp_ms >= 0 else -1
    fd = -1
    builder = IndexBuilder(config.index_interval_bytes)
    try:
        for found in batches:
            payload = _payload(found, config.max_record_bytes)
            header = found.header
            first_us = max(header.first_timestamp_us, last_us + 1)
            times = batch_times(first_us, header.count)
            head = encode_header(payload, header.flags, end.next_offset, header.count, *times)
            size = len(head) + len(payload)
            if fd < 0 or (end.segment_size > 0 and end.segment_size + size > config.segment_bytes):
                if fd >= 0:
                    _seal(io, part, fd, end.segment_base, builder)
                    os.close(fd)
                    fd = -1
                fd = _new_segment(part, end.next_offset)
                end.segment_base, end.segment_size = end.next_offset, 0
                end.segments.append(end.segment_base)
                builder = IndexBuilder(config.index_interval_bytes)
            builder.add(end.segment_size, parse_header(head, size, config.max_record_bytes))
            write_all(io, fd, [head, payload], end.segment_size)
            end.last_batch = end.segment_size
            end.segment_size += size
            end.next_offset += header.count
            end.last_timestamp_ms = times[2]
            last_us = first_us + header.count - 1
            end.messages += header.count
            end.batches += 1
        if fd >= 0:
            _seal(io, part, fd, end.segment_base, builder)
    finally:
        if fd >= 0:
            os.close(fd)
    return end


def _payload(found: FoundBatch, max_record: int) -> bytes:
    """The batch's payload, read again and checked again (the side file is the operator's)."""
    with naming(found.file):
        fd = os.open(found.file, os.O_RDONLY)
    try:
        head = pread_exact(fd, HEADER_SIZE, found.position)
        payload = pread_exact(fd, found.header.payload_size, found.position + HEADER_SIZE)
    finally:
        os.close(fd)
    try:
        header = parse_header(head, HEADER_SIZE + len(payload), max_record)
        check_batch(header, head, payload)
    except FormatError as exc:
        reason = f"changed while repair salvaged it: {exc.reason}"
        raise JournalCorrupt(found.file, found.position, reason) from None
    return payload


def _new_segment(part: Path, base: int) -> int:
    path = segment_path(part, base)
    with naming(path):
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)


def _seal(io: FileIO, part: Path, fd: int, base: int, builder: IndexBuilder) -> None:
    """Sync a salvage segment and write its index (the caller closes ``fd``; ``repair`` syncs
    the directory once, before the checkpoint that names the new segments)."""
    with naming(segment_path(part, base)):
        io.fdatasync(fd)
    write_index(io, index_path(part, base), builder.entries)
