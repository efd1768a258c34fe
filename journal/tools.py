"""Operator tools on a journal directory: list, verify (full scan), repair (``journal.repair``).

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
from journal.format import HWM_FILE, FormatError, HighWaterMark
from journal.gaps import documented, gaps_path, read_gaps
from journal.layout import parse_partition_name, partition_dir, read_category
from journal.recovery import _check_checkpoint
from journal.repair import repair
from journal.segments import (
    entry_matches,
    index_path,
    list_segments,
    load_index,
    read_hwm_file,
    scan,
    segment_path,
)
from journal.types import PartitionId, PartitionInfo, VerifyProblem

__all__ = ["list_partition_ids", "list_partitions", "repair", "verify"]

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


def list_partition_ids(directory: Path) -> list[PartitionId]:
    """Every partition's id, from the directory names alone: cheap enough to call often."""
    return [pid for pid, _ in _partitions(Path(directory))]


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
    reported as non-fatal (recovery cuts it), as are damaged indexes, a damaged gap file and
    gaps between segments.  A gap the partition's gap file documents (``repair`` left it) is
    no problem.
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
    gaps, gaps_damaged = read_gaps(part)
    if gaps_damaged:
        reason = f"gap file damaged after {len(gaps)} entries (the rest is ignored)"
        problem(gaps_path(part), 0, reason, False)
    segments = list_segments(part)
    expected: int | None = None
    for base in segments:
        path = segment_path(part, base)
        # A gap repair left, and wrote down, is not damage.
        known_gap = expected is not None and base > expected and documented(gaps, expected, base)
        if expected is not None and base != expected and not known_gap:
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
