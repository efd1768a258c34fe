"""Readers: follow a partition from an offset, in this process or another one on the host.

A reader never returns a message at or past the high-water mark.  In the writer's process the mark
comes from the writer, which wakes ``read_wait``; elsewhere it is read from the ``hwm`` file,
which ``read_wait`` polls every ``tail_poll_interval_s`` (sleeping in between, never spinning).
Data below the mark is completely written before the mark moves, so a reader never meets a
half-written batch there; meeting one is damage (``JournalCorrupt``).

A reader keeps its current segment's file open, so retention deleting that segment does not
disturb it.  When the segment it needs next is gone (deleted, or a lost unsynced tail), ``read``
raises ``OffsetOutOfRange`` with ``earliest`` set to where data continues (``seek`` there to go
on); with ``skip_gaps=True`` it continues there itself.  A gap ``repair`` left is documented in
the partition's gap file (``journal.gaps``): those offsets will never hold data, so every reader
continues over it.  Each range skipped is recorded in ``skipped``, and why in ``skip_reasons``.
"""

from __future__ import annotations

import bisect
import logging
import os
from pathlib import Path
from typing import Protocol

import trio

from journal.config import JournalConfig
from journal.errors import JournalClosed, JournalCorrupt, OffsetOutOfRange, UnknownPartition
from journal.fileio import FileIO, pread_exact
from journal.format import (
    HEADER_SIZE,
    HWM_FILE,
    US_PER_MS,
    FormatError,
    IndexEntry,
    check_batch,
    decode_payload,
    parse_header,
)
from journal.gaps import documented, read_gaps
from journal.layout import partition_dir
from journal.records import DecodedBatch
from journal.segments import (
    build_index,
    entry_matches,
    index_path,
    list_segments,
    load_index,
    read_hwm_fd,
    segment_path,
    write_index,
)
from journal.types import JournalMessage, PartitionId

log = logging.getLogger(__name__)

_UNBOUNDED = 1 << 62

# Why a reader skipped offsets: ``repair`` cut them (documented: they never hold data again), or
# they are gone for a reason nothing wrote down (retention deleted them, an unsynced tail lost).
SKIP_REPAIRED = "cut by repair"
SKIP_MISSING = "missing"


class HighWaterMarkSource(Protocol):
    """Where a reader learns how far it may read, and waits for more."""

    def high_water_mark(self) -> int: ...

    async def wait_beyond(self, offset: int) -> None: ...

    def close(self) -> None: ...


class FileHighWaterMark:
    """The high-water mark of a partition written by another process: its ``hwm`` file."""

    def __init__(self, part: Path, poll_interval_s: float) -> None:
        self._path = part / HWM_FILE
        self._poll = poll_interval_s
        try:
            self._fd = os.open(self._path, os.O_RDONLY)
        except FileNotFoundError:
            raise FileNotFoundError(f"{self._path}: no high-water-mark file") from None

    def high_water_mark(self) -> int:
        try:
            return read_hwm_fd(self._fd).hwm
        except FormatError as exc:
            raise JournalCorrupt(self._path, 0, exc.reason) from None

    async def wait_beyond(self, offset: int) -> None:
        # Another process writes the file: there is no event to wait on, so sleep and look.
        while self.high_water_mark() <= offset:  # noqa: ASYNC110
            await trio.sleep(self._poll)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class JournalReader:
    """Reads one partition from an offset.  Not thread-safe; one task uses it at a time."""

    def __init__(
        self,
        part: Path,
        pid: PartitionId,
        offset: int | None,
        config: JournalConfig,
        source: HighWaterMarkSource,
        *,
        skip_gaps: bool = False,
        io: FileIO | None = None,
    ) -> None:
        self.pid = pid
        self.path = part
        self.skip_gaps = skip_gaps
        self.skipped: list[tuple[int, int]] = []
        # Why each range in ``skipped`` was skipped (SKIP_REPAIRED or SKIP_MISSING).
        self.skip_reasons: dict[tuple[int, int], str] = {}
        self._config = config
        self._source = source
        self._io = io or FileIO()
        self._next = offset or 0
        self._fd = -1
        self._segment = -1
        self._pos = 0  # file position of the next unread batch of the segment
        self._pos_offset = 0  # offset of the batch at ``_pos``
        self._batch: DecodedBatch | None = None
        self._closed = False
        try:
            self.seek(self.earliest_offset() if offset is None else offset)
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------- public

    @property
    def position(self) -> int:
        """The next offset ``read`` returns."""
        return self._next

    def high_water_mark(self) -> int:
        return self._source.high_water_mark()

    def earliest_offset(self) -> int:
        segments = list_segments(self.path)
        return segments[0] if segments else self.high_water_mark()

    def seek(self, offset: int) -> None:
        """Read from ``offset`` next: between the earliest offset and the high-water mark."""
        self._check_open()
        hwm = self.high_water_mark()
        earliest = self.earliest_offset()
        if not earliest <= offset <= hwm:
            raise OffsetOutOfRange(self.pid, offset, earliest, hwm)
        self._drop_segment()
        self._next = offset

    def seek_time(self, timestamp_ms: int) -> None:
        """Read next from the first message whose time (``timestamp_us``) is at or after
        ``timestamp_ms`` (the high-water mark when there is none)."""
        self._check_open()
        self.seek(self._offset_for_time(timestamp_ms))

    def read(self, max_messages: int = 1000, max_bytes: int = 1 << 20) -> list[JournalMessage]:
        """Up to ``max_messages`` messages (at least one if any is available, else up to
        ``max_bytes`` of message bytes) below the high-water mark; ``[]`` when caught up."""
        self._check_open()
        hwm = self.high_water_mark()
        out: list[JournalMessage] = []
        size = 0
        while self._next < hwm and len(out) < max_messages and size < max_bytes:
            try:
                batch = self._batch_at_next()
            except (OffsetOutOfRange, JournalCorrupt):
                if out:
                    return out  # what was read is good; the next call raises
                raise
            i = self._next - batch.base
            stop = min(batch.end, hwm) - batch.base
            messages, metadata, ts = batch.messages, batch.metadata, batch.timestamp_ms
            ts_us = batch.timestamp_us
            while i < stop and len(out) < max_messages:
                message = messages[i]
                if out and size + len(message) > max_bytes:
                    self._next = batch.base + i
                    return out
                meta = metadata[i] if metadata is not None else None
                out.append(JournalMessage(batch.base + i, ts, message, meta, ts_us + i))
                size += len(message)
                i += 1
            self._next = batch.base + i
        return out

    async def read_wait(
        self, max_messages: int = 1000, max_bytes: int = 1 << 20
    ) -> list[JournalMessage]:
        """Like ``read``, but waits (without polling in-process) until a message is available."""
        while True:
            messages = self.read(max_messages, max_bytes)
            if messages:
                return messages
            await self._source.wait_beyond(self._next)

    def close(self) -> None:
        self._drop_segment()
        if not self._closed:
            self._closed = True
            self._source.close()

    def __enter__(self) -> JournalReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- segments

    def _check_open(self) -> None:
        if self._closed:
            raise JournalClosed("the reader is closed")

    def _drop_segment(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._segment, self._batch = -1, -1, None

    def _corrupt(self, position: int, reason: str) -> JournalCorrupt:
        return JournalCorrupt(segment_path(self.path, self._segment), position, reason)

    def _open_segment(self, base: int) -> bool:
        try:
            fd = os.open(segment_path(self.path, base), os.O_RDONLY)
        except FileNotFoundError:
            return False
        self._drop_segment()
        self._fd, self._segment, self._pos, self._pos_offset = fd, base, 0, base
        return True

    def _locate(self, offset: int) -> None:
        """Open the segment holding ``offset`` and position at the nearest batch before it."""
        for _ in range(10):  # segments may be deleted between listing and opening
            segments = list_segments(self.path)
            i = bisect.bisect_right(segments, offset)
            if i == 0:
                self._gap(offset, segments[0] if segments else None)
                return
            if self._open_segment(segments[i - 1]):
                break
        else:
            raise self._corrupt(0, "segments keep disappearing")
        size = os.fstat(self._fd).st_size
        entries = self._index(size)
        k = bisect.bisect_right([e.offset for e in entries], offset)
        if k:
            entry = entries[k - 1]
            if not entry_matches(self._fd, entry, size, self._config.max_record_bytes):
                entries = self._index(size, rebuild=True)
                k = bisect.bisect_right([e.offset for e in entries], offset)
                entry = entries[k - 1] if k else IndexEntry(self._segment, 0, 0)
            self._pos, self._pos_offset = entry.position, entry.offset

    def _index(self, size: int, *, rebuild: bool = False) -> list[IndexEntry]:
        """The current segment's index; rebuilt from the log when missing or damaged, and then
        rewritten if the segment is sealed (the active one belongs to its writer)."""
        base = self._segment
        max_record = self._config.max_record_bytes
        entries, damaged = (
            ([], True) if rebuild else load_index(index_path(self.path, base), base, size)
        )
        if entries and not entry_matches(self._fd, entries[-1], size, max_record):
            entries, damaged, rebuild = [], True, True  # e.g. another segment's index
        if not damaged:
            return entries
        segments = list_segments(self.path)
        sealed = bool(segments) and base < segments[-1]
        if not sealed and not rebuild:
            return entries  # the valid prefix: a hint, still checked before use
        entries, _ = build_index(
            self._fd, base, size, self._config.index_interval_bytes, max_record
        )
        if sealed:
            try:
                write_index(self._io, index_path(self.path, base), entries)
                log.info(
                    "journal index rebuilt",
                    extra={"partition": str(self.pid), "segment": base, "entries": len(entries)},
                )
            except OSError as exc:
                log.warning(
                    "journal index rebuild not saved",
                    extra={"partition": str(self.pid), "segment": base, "error": repr(exc)},
                )
        return entries

    def _gap(self, offset: int, continues_at: int | None) -> None:
        hwm = self.high_water_mark()
        if continues_at is None:
            raise OffsetOutOfRange(self.pid, offset, hwm, hwm)
        gaps, _damaged = read_gaps(self.path)
        repaired = documented(gaps, offset, continues_at) is not None
        if not repaired and not self.skip_gaps:
            raise OffsetOutOfRange(self.pid, offset, continues_at, hwm)
        reason = SKIP_REPAIRED if repaired else SKIP_MISSING
        log.warning(
            "journal reader skipped a gap",
            extra={
                "partition": str(self.pid),
                "from": offset,
                "to": continues_at,
                "reason": reason,
            },
        )
        self.skipped.append((offset, continues_at))
        self.skip_reasons[offset, continues_at] = reason
        self._next = continues_at
        if not self._open_segment(continues_at):
            self._drop_segment()

    def _next_segment(self) -> None:
        """At the end of the current segment with data still below the high-water mark."""
        segments = list_segments(self.path)
        later = [b for b in segments if b > self._segment]
        if not later:
            raise self._corrupt(self._pos, "data below the high-water mark is missing")
        base = later[0]
        if base < self._pos_offset:
            raise self._corrupt(self._pos, f"next segment {base} overlaps this one")
        if base > self._pos_offset:
            self._gap(self._next, base)
            return
        if not self._open_segment(base):
            self._drop_segment()

    def _batch_at_next(self) -> DecodedBatch:
        """The decoded batch holding offset ``_next`` (which is below the high-water mark)."""
        max_record = self._config.max_record_bytes
        while True:
            batch = self._batch
            if batch is not None and batch.base <= self._next < batch.end:
                return batch
            if self._fd < 0:
                self._locate(self._next)
                continue
            data = pread_exact(self._fd, HEADER_SIZE, self._pos)
            if not data:
                self._next_segment()
                continue
            try:
                header = parse_header(data, _UNBOUNDED, max_record)
            except FormatError as exc:
                raise self._corrupt(self._pos, exc.reason) from None
            if header.base_offset != self._pos_offset:
                raise self._corrupt(
                    self._pos,
                    f"batch has offset {header.base_offset} where {self._pos_offset} belongs",
                )
            if header.end_offset <= self._next:
                self._pos += header.size
                self._pos_offset = header.end_offset
                continue
            payload = pread_exact(self._fd, header.payload_size, self._pos + HEADER_SIZE)
            try:
                if len(payload) != header.payload_size:
                    raise FormatError("file ends inside a batch below the high-water mark")
                check_batch(header, data, payload)
                messages, metadata = decode_payload(header, payload)
            except FormatError as exc:
                raise self._corrupt(self._pos, exc.reason) from None
            self._batch = DecodedBatch(header, messages, metadata)
            self._pos += header.size
            self._pos_offset = header.end_offset

    # ---------------------------------------------------------------- time

    def _first_timestamp(self, base: int) -> int | None:
        try:
            fd = os.open(segment_path(self.path, base), os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            data = pread_exact(fd, HEADER_SIZE, 0)
            if not data:
                return None
            return parse_header(data, _UNBOUNDED, self._config.max_record_bytes).first_timestamp_ms
        except FormatError as exc:
            raise JournalCorrupt(segment_path(self.path, base), 0, exc.reason) from None
        finally:
            os.close(fd)

    def _offset_for_time(self, timestamp_ms: int) -> int:
        # Message times increase along a partition, and ms timestamps never decrease: the answer
        # is in the last segment whose first message is older than ``timestamp_ms``, or at the
        # next segment's start.  Index entries and headers name a batch's last message's ms.
        hwm = self.high_water_mark()
        segments = list_segments(self.path)
        if not segments:
            return hwm
        candidate = None
        for base in reversed(segments):
            first = self._first_timestamp(base)
            if first is not None and first < timestamp_ms:
                candidate = base
                break
        if candidate is None:
            return min(segments[0], hwm)
        if not self._open_segment(candidate):
            return self._offset_for_time(timestamp_ms)
        size = os.fstat(self._fd).st_size
        entries = [e for e in self._index(size) if e.max_timestamp_ms < timestamp_ms]
        for entry in reversed(entries):
            if entry_matches(self._fd, entry, size, self._config.max_record_bytes):
                self._pos, self._pos_offset = entry.position, entry.offset
                break
        max_record = self._config.max_record_bytes
        while self._pos_offset < hwm:
            data = pread_exact(self._fd, HEADER_SIZE, self._pos)
            if not data:
                break
            try:
                header = parse_header(data, size - self._pos, max_record)
            except FormatError as exc:
                raise self._corrupt(self._pos, exc.reason) from None
            if header.max_timestamp_ms >= timestamp_ms:
                # Its messages have consecutive microseconds: skip those before the time (the
                # clamp only guards against a header whose crc is not checked here).
                skip = timestamp_ms * US_PER_MS - header.first_timestamp_us
                return header.base_offset + min(max(skip, 0), header.count - 1)
            self._pos += header.size
            self._pos_offset = header.end_offset
        return min(self._pos_offset, hwm)


def open_reader(
    directory: Path,
    pid: PartitionId,
    offset: int | None,
    config: JournalConfig | None = None,
    *,
    skip_gaps: bool = False,
) -> JournalReader:
    """A reader of a partition that may be written by another process on this host, starting
    at ``offset``, or at the earliest offset retention has kept when ``offset`` is None."""
    config = config or JournalConfig()
    part = partition_dir(directory, pid)
    try:
        source = FileHighWaterMark(part, config.tail_poll_interval_s)
    except FileNotFoundError:
        raise UnknownPartition(pid) from None
    try:
        return JournalReader(part, pid, offset, config, source, skip_gaps=skip_gaps)
    except BaseException:
        source.close()
        raise
