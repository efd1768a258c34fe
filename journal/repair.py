"""``repair``: cut a damaged partition so that it opens again, and keep what can be kept.

With the journal locked (no writer runs; ``JournalLocked`` while a server has it open):

1. Every segment is scanned from its start.  At the first invalid batch the rest of that segment
   goes to a side file ``<segment>.cut-<n>`` (copied and synced before the segment is cut), and
   every later segment is renamed to one.  Indexes that are missing, damaged or disagree with the
   log are rebuilt.
2. Salvage (unless turned off): the intact batches found in those side files are appended at new
   offsets (``journal.salvage``).  The side files stay as they are.
3. The partition continues at ``resume``: above every offset a reader may have seen (the old
   high-water mark) and every offset the cut bytes hold, so no offset is ever reused.  The offsets
   from the cut to ``resume`` are a gap, documented in the ``gaps`` file with how many messages
   were salvaged after it: ``verify`` accepts it, readers continue over it by themselves, and
   consumers log and count what they skip.
4. A new checkpoint names the end.  Everything it names is synced first, and the ``hwm`` file is
   rewritten in place, so readers in other processes (which keep it open) see the new mark.

A repair that stops half way (a crash, a full disk) leaves a partition that recovery refuses or
opens as before: run it again.  The side files stay; a second run salvages only what it cuts.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from journal.config import JournalConfig
from journal.errors import UnknownPartition
from journal.fileio import FileIO, naming, write_file_atomic
from journal.format import (
    CUT_INFIX,
    HWM_FILE,
    HWM_SIZE,
    NO_BATCH,
    FormatError,
    Gap,
    HighWaterMark,
)
from journal.gaps import add_gap
from journal.layout import partition_dir
from journal.recovery import move_aside_tail, side_file_name, write_hwm
from journal.salvage import FoundBatch, select_batches, write_salvaged
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
from journal.types import PartitionId, RepairResult

log = logging.getLogger(__name__)


def repair(
    directory: Path,
    pid: PartitionId,
    config: JournalConfig | None = None,
    *,
    salvage: bool = True,
    clock: Callable[[], float] = time.time,
) -> RepairResult:
    """Cut a partition at its first damage so that it opens again (see the module docstring).

    ``salvage``: keep the intact batches after the damage, at new offsets.  ``clock`` stamps the
    documented gap.
    """
    directory = Path(directory)
    config = config or JournalConfig()
    io = FileIO()
    part = partition_dir(directory, pid)
    if not part.is_dir():
        raise UnknownPartition(pid)
    lock = _lock(directory)
    try:
        return _repair(part, pid, config, io, salvage, clock)
    finally:
        _unlock(lock)


@dataclass
class _Cut:
    """What the scan kept, and what it moved aside."""

    kept: list[int] = field(default_factory=list)
    next_offset: int = 0
    last_batch: int = NO_BATCH
    last_timestamp_ms: int = -1
    cut_file: Path | None = None
    cut_position: int | None = None
    side_files: list[Path] = field(default_factory=list)
    aside: list[int] = field(default_factory=list)
    bytes_removed: int = 0
    indexes_rebuilt: int = 0


def _repair(
    part: Path,
    pid: PartitionId,
    config: JournalConfig,
    io: FileIO,
    salvage: bool,
    clock: Callable[[], float],
) -> RepairResult:
    try:
        old = read_hwm_file(part)
    except FormatError:
        old = None
    cut = _cut_at_damage(part, config, io)
    found: list[FoundBatch] = []
    if salvage:
        found = select_batches(cut.side_files, cut.next_offset, config.max_record_bytes)
    resume = max(
        [cut.next_offset, *cut.aside, *(f.header.end_offset for f in found)]
        + ([old.hwm] if old is not None else [])
    )
    last_ts = cut.last_timestamp_ms
    if old is not None:
        # Readers may have seen times of what was cut: the writer's times continue above them.
        last_ts = max(last_ts, old.hwm_timestamp_ms)
    gap: Gap | None = None
    if resume > cut.next_offset:
        salvaged = sum(f.header.count for f in found)
        gap = Gap(cut.next_offset, resume, salvaged, int(clock() * 1000))
        # Documented before any segment after it exists, so no reader meets it undocumented.
        add_gap(io, part, gap)
    if found:
        end = write_salvaged(io, part, found, resume, last_ts, config)
        with naming(part):
            io.fsync_dir(part)
        active, position, last_batch = end.segment_base, end.segment_size, end.last_batch
        next_offset, last_ts = end.next_offset, end.last_timestamp_ms
    elif gap is not None or not cut.kept:
        _empty_segment(io, part, resume)
        active, position, last_batch, next_offset = resume, 0, NO_BATCH, resume
    else:
        active = cut.kept[-1]
        position = os.path.getsize(segment_path(part, active))
        last_batch, next_offset = cut.last_batch, cut.next_offset
    checkpoint = HighWaterMark(
        next_offset, last_ts, active, position, next_offset, last_batch, last_ts
    )
    _write_checkpoint(io, part, checkpoint)
    salvaged_messages = sum(f.header.count for f in found)
    result = RepairResult(
        pid,
        cut.cut_file,
        cut.cut_position,
        cut.side_files,
        cut.bytes_removed,
        next_offset,
        cut.indexes_rebuilt,
        salvaged_messages=salvaged_messages,
        salvaged_batches=len(found),
        gap=None if gap is None else (gap.start, gap.end),
    )
    log.warning(
        "journal partition repaired",
        extra={
            "partition": str(pid),
            "cut_file": str(cut.cut_file) if cut.cut_file else None,
            "cut_position": cut.cut_position,
            "bytes_removed": cut.bytes_removed,
            "salvaged_messages": salvaged_messages,
            "gap": None if gap is None else f"{gap.start}..{gap.end - 1}",
            "next_offset": next_offset,
            "side_files": [str(p) for p in cut.side_files],
        },
    )
    return result


def _cut_at_damage(part: Path, config: JournalConfig, io: FileIO) -> _Cut:
    """Step 1 of the module docstring."""
    segments = list_segments(part)
    cut = _Cut(next_offset=segments[0] if segments else 0)
    aside: list[int] = []
    for i, base in enumerate(segments):
        path = segment_path(part, base)
        if cut.kept and base < cut.next_offset:
            aside = segments[i:]
            break
        with naming(path):
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
        cut.kept.append(base)
        cut.next_offset, cut.last_batch = end.next_offset, end.last_batch
        if end.last_timestamp_ms is not None:
            cut.last_timestamp_ms = end.last_timestamp_ms
        if end.error is not None:
            side, count = move_aside_tail(io, path, end.position, CUT_INFIX)
            cut.cut_file, cut.cut_position = path, end.position
            cut.side_files.append(side)
            cut.bytes_removed += count
            bad_index = True
            builder.entries = [e for e in builder.entries if e.position < end.position]
        if bad_index:
            write_index(io, index_path(part, base), builder.entries)
            cut.indexes_rebuilt += 1
        if end.error is not None:
            aside = segments[i + 1 :]
            break
    for base in aside:
        path = segment_path(part, base)
        side = side_file_name(path, CUT_INFIX)
        with naming(path):
            cut.bytes_removed += os.path.getsize(path)
            os.rename(path, side)
            index_path(part, base).unlink(missing_ok=True)
        cut.side_files.append(side)
        if cut.cut_file is None:
            cut.cut_file, cut.cut_position = path, 0
    if aside:
        with naming(part):
            io.fsync_dir(part)
    cut.aside = aside
    return cut


def _empty_segment(io: FileIO, part: Path, base: int) -> None:
    """The segment the writer continues in after a gap, with its (empty) index."""
    path = segment_path(part, base)
    with naming(path):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))
    write_index(io, index_path(part, base), [])
    with naming(part):
        io.fsync_dir(part)


def _write_checkpoint(io: FileIO, part: Path, checkpoint: HighWaterMark) -> None:
    # In place when the file is there (as the writer does: 68 bytes within one sector are never
    # torn), so that a reader in another process, which keeps it open, sees the new mark; a
    # replaced file would leave that reader polling the old one for good.
    path = part / HWM_FILE
    if path.is_file() and path.stat().st_size == HWM_SIZE:
        write_hwm(io, part, checkpoint)
    else:
        write_file_atomic(io, path, checkpoint.encode())
