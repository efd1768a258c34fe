"""Opening a partition: create it, or recover it from its checkpoint.

Recovery is conservative and reads only the tail:

1. The ``hwm`` file's checkpoint names a segment, the end of the fdatasynced data in it, the next
   offset, and where the last synced batch starts.  That batch is read and checked (crc, it ends at
   the checkpoint, its offsets end at the checkpoint's offset).  A segment shorter than its
   checkpoint, or a bad last batch, is damage *before* the tail: the partition is refused with
   ``JournalCorrupt`` naming the file and position (``repair`` is the operator's way out).  Damage
   further back is found by readers and ``verify``; recovery does not read it, so its time grows
   with the unsynced tail, not with the journal.
2. From the checkpoint forward, batches are checked one by one (crc, version, dense offsets), into
   any later segments.  At the first invalid batch the tail is cut: the cut bytes are copied to a
   side file ``<segment>.torn-<n>`` (and fdatasynced) before the segment is truncated; whole later
   segments are renamed to side files.  Nothing before the checkpoint is ever cut.  A checksummed
   batch of an unknown version is never cut: the partition is refused (``UnsupportedFormat``).
3. The scanned tail is fdatasynced, the active segment's index is checked (its last entry against
   the log) and completed or rebuilt, and a new checkpoint is written and fdatasynced.  The index
   is a hint: when it cannot be rewritten (a full disk) the partition opens anyway, with the part
   of the old index that matches the log (the rest is cut off, so the writer appends after it).
4. If the ``hwm`` file says readers may have seen offsets beyond what survived (possible only when
   INTERVAL or NONE data was lost to a power failure), the partition continues in a new segment at
   that offset instead of reusing the offsets: a gap that readers report (``OffsetOutOfRange``).

Temporary files that a process now gone left in the partition (``<file>.tmp-<pid>``) are removed
first.  An OSError from recovery names its file; a full disk or a lack of descriptors raises it
unchanged (``journal.fileio.is_transient``), and nothing recovery did before it needs undoing, so
recovery can simply run again later.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from journal.config import JournalConfig
from journal.errors import JournalCorrupt, UnsupportedFormat
from journal.fileio import (
    FileIO,
    naming,
    pread_exact,
    stale_tmp_owner,
    write_all,
    write_file_atomic,
)
from journal.format import (
    CATEGORY_FILE,
    HWM_FILE,
    INDEX_ENTRY_SIZE,
    NO_BATCH,
    TORN_INFIX,
    BatchHeader,
    FormatError,
    HighWaterMark,
    IndexEntry,
)
from journal.layout import partition_dir
from journal.segments import (
    IndexBuilder,
    ScanEnd,
    entry_matches,
    index_path,
    list_segments,
    load_index,
    read_batch,
    read_header,
    read_hwm_file,
    scan,
    segment_path,
    write_index,
)
from journal.types import PartitionId

log = logging.getLogger(__name__)


@dataclass
class PartitionState:
    """A partition ready for its writer: the active segment and where the data ends."""

    pid: PartitionId
    path: Path
    segment_base: int
    segment_size: int
    next_offset: int
    last_batch: int
    last_timestamp_ms: int
    segment_first_timestamp_ms: int | None
    index_entries: list[IndexEntry] = field(default_factory=list)
    side_files: list[Path] = field(default_factory=list)
    was_clean: bool = True


def create_partition(directory: Path, pid: PartitionId, io: FileIO) -> PartitionState:
    """Create (or finish creating) a partition's directories, checkpoint and first segment."""
    part = partition_dir(directory, pid)
    cat = part.parent
    if not cat.is_dir():
        with naming(cat):
            cat.mkdir()
            io.fsync_dir(directory)
    if not (cat / CATEGORY_FILE).exists():
        write_file_atomic(io, cat / CATEGORY_FILE, pid.category)
    if not part.is_dir():
        with naming(part):
            part.mkdir()
            io.fsync_dir(cat)
    if not (part / HWM_FILE).exists():
        write_file_atomic(io, part / HWM_FILE, _initial_hwm().encode())
    return _fresh(part, pid, io, 0, -1)


def _initial_hwm() -> HighWaterMark:
    return HighWaterMark(0, -1, 0, 0, 0, NO_BATCH, -1)


def _fresh(part: Path, pid: PartitionId, io: FileIO, base: int, last_ts: int) -> PartitionState:
    path = segment_path(part, base)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))
    os.close(os.open(index_path(part, base), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
    with naming(part):
        io.fsync_dir(part)
    return PartitionState(pid, part, base, os.path.getsize(path), base, NO_BATCH, last_ts, None)


def write_hwm(io: FileIO, part: Path, hwm: HighWaterMark) -> None:
    """Rewrite the ``hwm`` file in place and fdatasync it."""
    path = part / HWM_FILE
    with naming(path):
        fd = os.open(path, os.O_WRONLY)
        try:
            os.pwrite(fd, hwm.encode(), 0)
            io.fdatasync(fd)
        finally:
            os.close(fd)


def _corrupt(path: Path, position: int, exc: FormatError, what: str) -> JournalCorrupt:
    if exc.version is not None:
        return UnsupportedFormat(path, position, exc.version)
    return JournalCorrupt(path, position, f"{what}: {exc.reason}")


def side_file_name(path: Path, infix: str) -> Path:
    """``<segment>.torn-<n>`` (or ``.cut-<n>``) with the first unused ``n``."""
    n = 1
    while (candidate := path.with_name(f"{path.name}{infix}{n}")).exists():
        n += 1
    return candidate


def move_aside_tail(io: FileIO, path: Path, position: int, infix: str) -> tuple[Path, int]:
    """Copy ``path[position:]`` to a side file (synced), then truncate ``path`` at ``position``.

    When the copy fails (a full disk) the partial side file is removed and ``path`` is untouched.
    """
    side = side_file_name(path, infix)
    with naming(path):
        fd = os.open(path, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        with naming(side):
            _copy_to_new_file(io, fd, position, size, side)
        with naming(path):
            io.fsync_dir(path.parent)
            os.ftruncate(fd, position)
            io.fdatasync(fd)
    finally:
        os.close(fd)
    return side, size - position


def _copy_to_new_file(io: FileIO, fd: int, start: int, end: int, dest: Path) -> None:
    out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        chunk = 1 << 20
        for position in range(start, end, chunk):
            data = pread_exact(fd, min(chunk, end - position), position)
            write_all(io, out, [data], position - start)
        io.fdatasync(out)
    except BaseException:
        os.close(out)
        # A half copy is no side file: the next attempt copies again, from the start.
        with contextlib.suppress(OSError):
            dest.unlink()
        raise
    os.close(out)


def remove_stale_tmp_files(directory: Path) -> list[Path]:
    """Remove the temporary files of ``write_file_atomic`` left in ``directory`` by processes
    that are gone (a crash or a full disk mid-write); returns what was removed."""
    removed: list[Path] = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return removed
    for name in names:
        if stale_tmp_owner(name) is None:
            continue
        path = directory / name
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning(
                "journal temporary file not removed", extra={"file": str(path), "error": str(exc)}
            )
            continue
        removed.append(path)
        log.info("journal temporary file removed", extra={"file": str(path)})
    return removed


def recover_partition(
    directory: Path, pid: PartitionId, config: JournalConfig, io: FileIO
) -> PartitionState:
    """Open an existing partition (see the module docstring); raises JournalCorrupt."""
    part = partition_dir(directory, pid)
    hwm_path = part / HWM_FILE
    remove_stale_tmp_files(part.parent)
    remove_stale_tmp_files(part)
    segments = list_segments(part)
    try:
        cp = read_hwm_file(part)
    except FormatError as exc:
        raise _corrupt(hwm_path, 0, exc, "checkpoint") from None
    if cp is None:
        if segments:
            raise JournalCorrupt(hwm_path, 0, "checkpoint file missing beside segments")
        return create_partition(directory, pid, io)
    if not segments:
        if cp.hwm == 0 and cp.cp_offset == 0:  # created, crashed before the first segment
            return _fresh(part, pid, io, 0, -1)
        raise JournalCorrupt(hwm_path, 0, "no segments, but the checkpoint names data")
    if cp.cp_segment not in segments:
        raise JournalCorrupt(
            segment_path(part, cp.cp_segment), 0, "the segment the checkpoint names is missing"
        )
    last_checkpointed = _check_checkpoint(part, cp, config)

    chain = [b for b in segments if b >= cp.cp_segment]
    position, expected = cp.cp_position, cp.cp_offset
    # The millisecond of the last kept message: the writer's times continue above it.  (The
    # batch's own header also covers a version-1 batch's spill past its max_ts_ms.)
    last_ts = cp.cp_timestamp_ms
    if last_checkpointed is not None:
        last_ts = max(last_ts, last_checkpointed.last_timestamp_ms)
    active, active_end = cp.cp_segment, ScanEnd(position, expected, cp.cp_last_batch, None, None)
    cut_at: tuple[int, int] | None = None
    aside: list[int] = []
    scanned: list[int] = []
    tail_bytes = 0
    for i, base in enumerate(chain):
        if i > 0:
            if base != expected:
                aside = chain[i:]
                break
            position = 0
        path = segment_path(part, base)
        with naming(path):
            fd = os.open(path, os.O_RDONLY)
            try:
                size = os.fstat(fd).st_size
                end = scan(fd, position, expected, size, config.max_record_bytes)
            finally:
                os.close(fd)
        if end.error is not None and end.error.version is not None:
            raise UnsupportedFormat(path, end.position, end.error.version)
        tail_bytes += end.position - position
        scanned.append(base)
        if i == 0 and end.last_batch == NO_BATCH:
            end.last_batch = cp.cp_last_batch
        active, active_end = base, end
        if end.last_timestamp_ms is not None:
            last_ts = end.last_timestamp_ms
        expected = end.next_offset
        if end.error is not None:
            if end.position < size:
                cut_at = (base, end.position)
            aside = chain[i + 1 :]
            break

    side_files: list[Path] = []
    if cut_at is not None:
        side, cut_bytes = move_aside_tail(io, segment_path(part, cut_at[0]), cut_at[1], TORN_INFIX)
        side_files.append(side)
        assert active_end.error is not None
        log.warning(
            "journal torn tail cut",
            extra={
                "partition": str(pid),
                "file": str(segment_path(part, cut_at[0])),
                "position": cut_at[1],
                "bytes": cut_bytes,
                "reason": active_end.error.reason,
                "side_file": str(side),
            },
        )
    for base in aside:
        path = segment_path(part, base)
        side = side_file_name(path, TORN_INFIX)
        with naming(path):
            os.rename(path, side)
            index_path(part, base).unlink(missing_ok=True)
        side_files.append(side)
        log.warning(
            "journal segment after the tail moved aside",
            extra={"partition": str(pid), "file": str(path), "side_file": str(side)},
        )
    if aside:
        with naming(part):
            io.fsync_dir(part)
    for base in scanned:
        _sync_file(io, segment_path(part, base))

    size = active_end.position
    entries = _active_index(part, active, size, config, io)
    state = PartitionState(
        pid,
        part,
        active,
        size,
        expected,
        active_end.last_batch,
        last_ts,
        _first_timestamp(part, active, size, config),
        entries,
        side_files,
        was_clean=cp.clean,
    )
    if cp.hwm > state.next_offset:
        # Readers may have seen offsets up to cp.hwm: never hand them out again.
        log.warning(
            "journal lost acknowledged data; continuing after a gap",
            extra={"partition": str(pid), "recovered": state.next_offset, "hwm": cp.hwm},
        )
        # Nor times at or below those of the messages they may have seen.
        state = _fresh(part, pid, io, cp.hwm, max(last_ts, cp.hwm_timestamp_ms))
    write_hwm(io, part, checkpoint_of(state))
    log.info(
        "journal partition recovered",
        extra={
            "partition": str(pid),
            "next_offset": state.next_offset,
            "clean": cp.clean,
            "tail_bytes": tail_bytes,
            "side_files": [str(p) for p in side_files],
        },
    )
    return state


def checkpoint_of(state: PartitionState, *, clean: bool = False) -> HighWaterMark:
    return HighWaterMark(
        state.next_offset,
        state.last_timestamp_ms,
        state.segment_base,
        state.segment_size,
        state.next_offset,
        state.last_batch,
        state.last_timestamp_ms,
        clean=clean,
    )


def _sync_file(io: FileIO, path: Path) -> None:
    with naming(path):
        fd = os.open(path, os.O_RDONLY)
        try:
            io.fdatasync(fd)
        except OSError as exc:
            # After a failed fdatasync the kernel may have dropped the pages, and a second one
            # could "succeed" without them (the writer's rule): never a passing error, whatever
            # its errno, so the partition is refused instead of retried.
            raise OSError(errno.EIO, f"fdatasync failed: {exc.strerror}", str(path)) from exc
        finally:
            os.close(fd)


def _check_checkpoint(part: Path, cp: HighWaterMark, config: JournalConfig) -> BatchHeader | None:
    """Damage at the checkpoint itself is damage before the tail: refuse.  Returns the last
    checkpointed batch's header (None: the checkpoint names no batch)."""
    path = segment_path(part, cp.cp_segment)
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size < cp.cp_position:
            raise JournalCorrupt(
                path, size, f"segment ends before its checkpoint at byte {cp.cp_position}"
            )
        if cp.cp_last_batch == NO_BATCH:
            if cp.cp_position != 0 or cp.cp_offset != cp.cp_segment:
                raise JournalCorrupt(path, cp.cp_position, "checkpoint without a last batch")
            return None
        try:
            header, _ = read_batch(fd, cp.cp_last_batch, cp.cp_position, config.max_record_bytes)
        except FormatError as exc:
            raise _corrupt(path, cp.cp_last_batch, exc, "last checkpointed batch") from None
        if header.end_offset != cp.cp_offset or cp.cp_last_batch + header.size != cp.cp_position:
            raise JournalCorrupt(
                path, cp.cp_last_batch, "last checkpointed batch does not match the checkpoint"
            )
        return header
    finally:
        os.close(fd)


def _first_timestamp(part: Path, base: int, size: int, config: JournalConfig) -> int | None:
    if size == 0:
        return None
    fd = os.open(segment_path(part, base), os.O_RDONLY)
    try:
        return read_header(fd, 0, size, config.max_record_bytes).first_timestamp_ms
    finally:
        os.close(fd)


def _active_index(
    part: Path, base: int, size: int, config: JournalConfig, io: FileIO
) -> list[IndexEntry]:
    """The active segment's index: kept if its last entry matches the log, completed from
    there; rebuilt from the start otherwise.  Rewritten atomically; when that fails, the file is
    cut back to its entries that match the log, and those are the index (see the docstring)."""
    path = segment_path(part, base)
    ipath = index_path(part, base)
    entries, _damaged = load_index(ipath, base, size)
    with naming(path):
        fd = os.open(path, os.O_RDONLY)
        try:
            if entries and not entry_matches(fd, entries[-1], size, config.max_record_bytes):
                entries = []
            builder = IndexBuilder(config.index_interval_bytes, entries)
            start = entries[-1].position if entries else 0
            first = entries[-1].offset if entries else base
            scan(fd, start, first, size, config.max_record_bytes, builder.add)
        finally:
            os.close(fd)
    try:
        write_index(io, ipath, builder.entries)
    except OSError as exc:
        kept = entries
        try:
            # Cutting a file needs no space; what stays matches ``kept`` exactly.
            os.truncate(ipath, len(kept) * INDEX_ENTRY_SIZE)
        except FileNotFoundError:
            kept = []  # the writer creates it
        except OSError as cut:
            kept = []
            log.warning(
                "journal index not cut back; readers rebuild it from the log",
                extra={"file": str(ipath), "error": str(cut)},
            )
        log.warning(
            "journal index not rewritten; the partition opens with the part that is on disk",
            extra={
                "file": str(ipath),
                "error": str(exc),
                "entries_kept": len(kept),
                "entries_missing": len(builder.entries) - len(kept),
            },
        )
        return kept
    return builder.entries
