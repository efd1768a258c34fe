"""Operator tools on a journal directory: list, verify (full scan), repair.

``list_partitions`` and ``verify`` only read, so they work beside a running server.  ``repair``
takes the journal's lock and refuses (``JournalLocked``) while a server has it open.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from journal.config import JournalConfig
from journal.errors import JournalCorrupt, UnknownPartition
from journal.fileio import FileIO, write_file_atomic
from journal.format import CUT_INFIX, HWM_FILE, NO_BATCH, FormatError, HighWaterMark
from journal.layout import parse_partition_name, partition_dir, read_category
from journal.recovery import _check_checkpoint, move_aside_tail, side_file_name
from journal.segments import (
    IndexBuilder,
    entry_matches,
    index_path,
    list_segments,
    load_index,
    read_hwm_file,
    scan,
    segment_path,
    write_index,
)
from journal.store import _lock, _unlock
from journal.types import PartitionId, PartitionInfo, RepairResult, VerifyProblem

log = logging.getLogger(__name__)

Progress = Callable[[PartitionId, Path, int], None]


def _partitions(directory: Path) -> Iterator[tuple[PartitionId, Path]]:
    for category_dir in sorted(directory.iterdir()):
        if category_dir.name.startswith(".") or not category_dir.is_dir():
            continue
        try:
            category = read_category(category_dir)
        except (ValueError, OSError):
            continue
        for part in sorted(category_dir.iterdir(), key=lambda p: (len(p.name), p.name)):
            number = parse_partition_name(part.name)
            if number is not None and part.is_dir():
                yield PartitionId(category, number), part


def list_partitions(directory: Path) -> list[PartitionInfo]:
    """Every partition with its segments, offsets and size, read from the files.

    ``high_water_mark`` and ``last_timestamp_ms`` are None when the ``hwm`` file is unreadable.
    """
    out = []
    for pid, part in _partitions(Path(directory)):
        segments = list_segments(part)
        size = 0
        for base in segments:
            with contextlib.suppress(FileNotFoundError):
                size += os.path.getsize(segment_path(part, base))
        try:
            hwm = read_hwm_file(part)
        except FormatError:
            hwm = None
        out.append(
            PartitionInfo(
                category=pid.category,
                partition=pid.partition,
                path=part,
                segments=len(segments),
                earliest_offset=segments[0] if segments else 0,
                high_water_mark=hwm.hwm if hwm is not None else None,
                size_bytes=size,
                last_timestamp_ms=(
                    hwm.hwm_timestamp_ms if hwm is not None and hwm.hwm_timestamp_ms >= 0 else None
                ),
                clean_shutdown=hwm.clean if hwm is not None else False,
            )
        )
    return out


def verify(
    directory: Path,
    pid: PartitionId | None = None,
    progress: Progress | None = None,
    config: JournalConfig | None = None,
) -> list[VerifyProblem]:
    """Scan every batch of every segment (of one partition, or all) and report problems.

    Fatal problems are those recovery or readers refuse; a torn tail after the checkpoint is
    reported as non-fatal (recovery cuts it), as are damaged indexes and gaps.
    ``progress(pid, segment_file, bytes_checked)`` is called after each segment.
    """
    directory = Path(directory)
    config = config or JournalConfig()
    if pid is not None:
        part = partition_dir(directory, pid)
        if not part.is_dir():
            raise UnknownPartition(pid)
        targets = [(pid, part)]
    else:
        targets = list(_partitions(directory))
    problems: list[VerifyProblem] = []
    for target, part in targets:
        problems += _verify_partition(target, part, config, progress)
    return problems


def _verify_partition(
    pid: PartitionId, part: Path, config: JournalConfig, progress: Progress | None
) -> list[VerifyProblem]:
    problems: list[VerifyProblem] = []

    def problem(file: Path, position: int, reason: str, fatal: bool) -> None:
        problems.append(VerifyProblem(pid, file, position, reason, fatal))

    hwm_path = part / HWM_FILE
    cp: HighWaterMark | None = None
    try:
        cp = read_hwm_file(part)
        if cp is None:
            problem(hwm_path, 0, "high-water-mark file missing", True)
    except FormatError as exc:
        problem(hwm_path, 0, exc.reason, True)
    if cp is not None:
        try:
            _check_checkpoint(part, cp, config)
        except JournalCorrupt as exc:
            problem(exc.file, exc.position, exc.reason, True)
        except FileNotFoundError:
            problem(hwm_path, 0, "the segment the checkpoint names is missing", True)
    segments = list_segments(part)
    expected: int | None = None
    for base in segments:
        path = segment_path(part, base)
        if expected is not None and base != expected:
            problem(
                path,
                0,
                f"offsets {expected}..{base - 1} are missing (gap)"
                if base > expected
                else f"segment overlaps the previous one (which ends at {expected})",
                base < expected,
            )
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            end = scan(fd, 0, base, size, config.max_record_bytes)
            if end.error is not None:
                in_tail = (
                    base == segments[-1]
                    and cp is not None
                    and cp.cp_segment == base
                    and end.position >= cp.cp_position
                    and end.error.version is None
                )
                reason = end.error.reason + (
                    " (unsynced tail: recovery cuts it)" if in_tail else ""
                )
                problem(path, end.position, reason, not in_tail)
            entries, damaged = load_index(index_path(part, base), base, size)
            if damaged:
                reason = "index missing or damaged (rebuilt on use)"
                problem(index_path(part, base), 0, reason, False)
            elif not all(entry_matches(fd, e, size, config.max_record_bytes) for e in entries):
                problem(index_path(part, base), 0, "index disagrees with the log", False)
        finally:
            os.close(fd)
        if progress is not None:
            progress(pid, path, size)
        expected = end.next_offset
    scan_damage = any(p.file.suffix == ".log" for p in problems)
    if cp is not None and expected is not None and cp.hwm > expected and not scan_damage:
        problem(hwm_path, 0, f"high-water mark {cp.hwm} is beyond the data ({expected})", True)
    return problems


def repair(directory: Path, pid: PartitionId, config: JournalConfig | None = None) -> RepairResult:
    """Cut a partition at its first damage so that it opens again.

    Everything from the first invalid batch on (and every later segment) is moved to side files
    ``<segment>.cut-<n>``; damaged indexes are rebuilt; a new checkpoint is written.  Offsets are
    not reused: when readers may have seen offsets past the cut (the old high-water mark, or
    segments moved aside), the partition continues at the highest such offset, leaving a gap.
    """
    directory = Path(directory)
    config = config or JournalConfig()
    io = FileIO()
    part = partition_dir(directory, pid)
    if not part.is_dir():
        raise UnknownPartition(pid)
    lock = _lock(directory)
    try:
        return _repair(part, pid, config, io)
    finally:
        _unlock(lock)


def _repair(part: Path, pid: PartitionId, config: JournalConfig, io: FileIO) -> RepairResult:
    try:
        old = read_hwm_file(part)
    except FormatError:
        old = None
    segments = list_segments(part)
    kept: list[int] = []
    cut_file: Path | None = None
    cut_position: int | None = None
    side_files: list[Path] = []
    removed = 0
    rebuilt = 0
    next_offset = segments[0] if segments else 0
    last_batch, last_ts = NO_BATCH, -1
    for i, base in enumerate(segments):
        path = segment_path(part, base)
        if kept and base < next_offset:
            aside = segments[i:]
            break
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            builder = IndexBuilder(config.index_interval_bytes)
            end = scan(fd, 0, base, size, config.max_record_bytes, builder.add)
            entries, damaged = load_index(index_path(part, base), base, size)
            bad_index = damaged or not all(
                entry_matches(fd, e, end.position, config.max_record_bytes) for e in entries
            )
        finally:
            os.close(fd)
        kept.append(base)
        next_offset, last_batch = end.next_offset, end.last_batch
        if end.last_timestamp_ms is not None:
            last_ts = end.last_timestamp_ms
        if end.error is not None:
            side, count = move_aside_tail(io, path, end.position, CUT_INFIX)
            cut_file, cut_position = path, end.position
            side_files.append(side)
            removed += count
            bad_index = True
            builder.entries = [e for e in builder.entries if e.position < end.position]
        if bad_index:
            write_index(io, index_path(part, base), builder.entries)
            rebuilt += 1
        if end.error is not None:
            aside = segments[i + 1 :]
            break
    else:
        aside = []
    for base in aside:
        path = segment_path(part, base)
        side = side_file_name(path, CUT_INFIX)
        removed += os.path.getsize(path)
        os.rename(path, side)
        index_path(part, base).unlink(missing_ok=True)
        side_files.append(side)
        if cut_file is None:
            cut_file, cut_position = path, 0
    if aside:
        io.fsync_dir(part)
    resume = max([next_offset, *(aside or [0])] + ([old.hwm] if old is not None else []))
    active = kept[-1] if kept else resume
    position = os.path.getsize(segment_path(part, active)) if kept else 0
    if resume > next_offset or not kept:
        path = segment_path(part, resume)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))
        io.fsync_dir(part)
        active, position, last_batch, next_offset = resume, 0, NO_BATCH, resume
    if old is not None:
        # Readers may have seen times of what was cut: the writer's times continue above them.
        last_ts = max(last_ts, old.hwm_timestamp_ms)
    checkpoint = HighWaterMark(
        next_offset, last_ts, active, position, next_offset, last_batch, last_ts
    )
    write_file_atomic(io, part / HWM_FILE, checkpoint.encode())
    result = RepairResult(pid, cut_file, cut_position, side_files, removed, next_offset, rebuilt)
    log.warning(
        "journal partition repaired",
        extra={
            "partition": str(pid),
            "cut_file": str(cut_file) if cut_file else None,
            "cut_position": cut_position,
            "bytes_removed": removed,
            "next_offset": next_offset,
            "side_files": [str(p) for p in side_files],
        },
    )
    return result
