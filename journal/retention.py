"""Retention: delete a partition's oldest sealed segments by age and by size, above a floor.

Only a prefix of the segments is ever deleted (oldest first), never the active segment, and never
a segment holding an offset at or above the floor (the lowest offset some consumer group has not
committed).  A segment the policy would delete but the floor keeps is reported to the caller
(``held``), which knows whose floor it is.  A segment's age is that of its newest message,
bounded by the first timestamp of the next segment (timestamps never decrease along a
partition), so no batch is read to decide.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from journal.config import JournalConfig
from journal.fileio import FileIO, pread_exact
from journal.format import HEADER_SIZE, FormatError, parse_header
from journal.segments import index_path, list_segments, segment_path
from journal.types import DeletedSegment, PartitionId, RetentionHold, RetentionPolicy

log = logging.getLogger(__name__)


def _first_timestamp(path: Path, config: JournalConfig) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        data = pread_exact(fd, HEADER_SIZE, 0)
        if not data:
            return None
        return parse_header(data, 1 << 62, config.max_record_bytes).first_timestamp_ms
    except FormatError:
        return None  # damaged: keep the previous segment rather than guess
    finally:
        os.close(fd)


def retain_partition(
    part: Path,
    pid: PartitionId,
    policy: RetentionPolicy,
    floor: int | None,
    active_segment: int,
    now_s: float,
    config: JournalConfig,
    io: FileIO,
    held: Callable[[RetentionHold], None] | None = None,
) -> list[DeletedSegment]:
    """Apply ``policy`` to one partition; returns (and logs) what was deleted, and tells
    ``held`` about the segment the floor kept, if any."""
    if policy.max_age_s is None and policy.max_bytes is None:
        return []
    segments = list_segments(part)
    sizes = {}
    for base in segments:
        try:
            sizes[base] = os.path.getsize(segment_path(part, base))
        except FileNotFoundError:
            sizes[base] = 0
    total = sum(sizes.values())
    deleted: list[DeletedSegment] = []
    for i, base in enumerate(segments[:-1]):
        end = segments[i + 1]
        if base >= active_segment:
            break
        reason = None
        if policy.max_bytes is not None and total > policy.max_bytes:
            reason = "size"
        elif policy.max_age_s is not None:
            newest_bound = _first_timestamp(segment_path(part, end), config)
            if newest_bound is not None and newest_bound <= (now_s - policy.max_age_s) * 1000:
                reason = "age"
        if reason is None:
            break
        if floor is not None and end > floor:
            if held is not None:
                held(RetentionHold(pid, base, end, sizes[base], reason, floor))
            break
        path = segment_path(part, base)
        path.unlink(missing_ok=True)
        index_path(part, base).unlink(missing_ok=True)
        total -= sizes[base]
        record = DeletedSegment(pid, path, base, end, sizes[base], reason)
        deleted.append(record)
        log.info(
            "journal segment deleted",
            extra={
                "partition": str(pid),
                "file": str(path),
                "base_offset": base,
                "end_offset": end,
                "bytes": sizes[base],
                "reason": reason,
                "floor": floor,
            },
        )
    if deleted:
        io.fsync_dir(part)
    return deleted
