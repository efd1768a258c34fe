"""Reading segment, index and high-water-mark files (positioned reads, no state).

Shared by recovery, readers, verify and repair.  Damage comes out as ``journal.format.FormatError``
from the parsing helpers; callers that know the file turn it into ``JournalCorrupt``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from journal.fileio import FileIO, pread_exact, write_file_atomic
from journal.format import (
    HEADER_SIZE,
    HWM_FILE,
    HWM_SIZE,
    NO_BATCH,
    BatchHeader,
    FormatError,
    HighWaterMark,
    IndexEntry,
    check_batch,
    decode_hwm,
    decode_index,
    encode_index_entry,
    index_name,
    parse_header,
    parse_segment_name,
    segment_name,
)


def list_segments(part_dir: Path) -> list[int]:
    """First offsets of the partition's segments, ascending."""
    try:
        names = os.listdir(part_dir)
    except FileNotFoundError:
        return []
    return sorted(b for b in map(parse_segment_name, names) if b is not None)


def segment_path(part_dir: Path, base: int) -> Path:
    return part_dir / segment_name(base)


def index_path(part_dir: Path, base: int) -> Path:
    return part_dir / index_name(base)


def read_header(fd: int, position: int, file_size: int, max_record_bytes: int) -> BatchHeader:
    """The header of the batch at ``position`` (its crc is not checked: that needs the payload)."""
    data = pread_exact(fd, HEADER_SIZE, position)
    return parse_header(data, file_size - position, max_record_bytes)


def read_batch(
    fd: int, position: int, file_size: int, max_record_bytes: int
) -> tuple[BatchHeader, bytes]:
    """The checked batch at ``position``: its header and payload."""
    data = pread_exact(fd, HEADER_SIZE, position)
    header = parse_header(data, file_size - position, max_record_bytes)
    payload = pread_exact(fd, header.payload_size, position + HEADER_SIZE)
    if len(payload) != header.payload_size:
        raise FormatError("file ends inside a batch", truncated=True)
    check_batch(header, data, payload)
    return header, payload


@dataclass
class ScanEnd:
    """Where a scan stopped: after the last valid batch, and why (``error`` None: end of file).

    ``last_timestamp_ms`` is the millisecond of the last valid batch's last message (None: no
    batch scanned)."""

    position: int
    next_offset: int
    last_batch: int
    last_timestamp_ms: int | None
    error: FormatError | None


def scan(
    fd: int,
    start: int,
    expected_offset: int,
    file_size: int,
    max_record_bytes: int,
    on_batch: Callable[[int, BatchHeader], None] | None = None,
) -> ScanEnd:
    """Check every batch from ``start`` to the end of the file: crc, version, dense offsets."""
    position, offset = start, expected_offset
    last_batch, last_ts = NO_BATCH, None
    while position < file_size:
        try:
            header, _ = read_batch(fd, position, file_size, max_record_bytes)
            if header.base_offset != offset:
                raise FormatError(
                    f"batch has offset {header.base_offset} where {offset} was expected"
                )
        except FormatError as exc:
            return ScanEnd(position, offset, last_batch, last_ts, exc)
        if on_batch is not None:
            on_batch(position, header)
        last_batch, last_ts = position, header.last_timestamp_ms
        position += header.size
        offset = header.end_offset
    return ScanEnd(position, offset, last_batch, last_ts, None)


class IndexBuilder:
    """Applies the sparse-index rule: an entry for the first batch ``interval`` bytes after the
    previous entry (the segment start counts as one)."""

    def __init__(self, interval: int, entries: list[IndexEntry] | None = None) -> None:
        self.interval = interval
        self.entries: list[IndexEntry] = list(entries or [])
        self.last_position = self.entries[-1].position if self.entries else 0

    def add(self, position: int, header: BatchHeader) -> None:
        if position - self.last_position >= self.interval:
            self.entries.append(IndexEntry(header.base_offset, position, header.max_timestamp_ms))
            self.last_position = position


def load_index(path: Path, base: int, log_size: int) -> tuple[list[IndexEntry], bool]:
    """The index file's valid entries and whether it needs rebuilding (missing or damaged)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], True
    return decode_index(data, base, log_size)


def index_bytes(entries: list[IndexEntry]) -> bytes:
    return b"".join(encode_index_entry(e.offset, e.position, e.max_timestamp_ms) for e in entries)


def build_index(
    fd: int, base: int, log_size: int, interval: int, max_record_bytes: int
) -> tuple[list[IndexEntry], ScanEnd]:
    """Index entries for a segment, from a full scan of it."""
    builder = IndexBuilder(interval)
    end = scan(fd, 0, base, log_size, max_record_bytes, builder.add)
    return builder.entries, end


def write_index(io: FileIO, path: Path, entries: list[IndexEntry]) -> None:
    write_file_atomic(io, path, index_bytes(entries))


def entry_matches(fd: int, entry: IndexEntry, log_size: int, max_record_bytes: int) -> bool:
    """Whether the batch at the entry's position is the batch the entry names."""
    try:
        header = read_header(fd, entry.position, log_size, max_record_bytes)
    except FormatError:
        return False
    return (
        header.base_offset == entry.offset
        and header.max_timestamp_ms == entry.max_timestamp_ms
        and header.count >= 1
    )


def read_hwm_file(part_dir: Path) -> HighWaterMark | None:
    """The decoded ``hwm`` file, None when there is none; raises FormatError when damaged."""
    try:
        data = (part_dir / HWM_FILE).read_bytes()
    except FileNotFoundError:
        return None
    return decode_hwm(data)


def read_hwm_fd(fd: int, attempts: int = 5) -> HighWaterMark:
    """Read an open ``hwm`` file, again if a concurrent rewrite made the read inconsistent."""
    error: FormatError | None = None
    for _ in range(attempts):
        try:
            return decode_hwm(pread_exact(fd, HWM_SIZE, 0))
        except FormatError as exc:
            error = exc
    assert error is not None
    raise error
