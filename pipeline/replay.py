"""Replaying a range of a journal partition into a sink (files, or any Scribe server).

Replays are how a materialized view is rebuilt from the journal, the source of truth.  The
range is given by offsets or times; the sink gets batches exactly as a consumer would hand them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from consumers import Sink
from journal import JournalConfig, PartitionId, open_reader


@dataclass(frozen=True)
class ReplayRange:
    from_offset: int | None = None
    from_time_ms: int | None = None
    # Exclusive end; None: up to the high-water mark when the replay starts.
    to_offset: int | None = None
    to_time_ms: int | None = None


@dataclass(frozen=True)
class ReplayPlan:
    pid: PartitionId
    start: int
    end: int

    @property
    def messages(self) -> int:
        return max(0, self.end - self.start)


def plan_replay(
    journal_dir: Path, pid: PartitionId, bounds: ReplayRange, config: JournalConfig | None = None
) -> ReplayPlan:
    """Resolve times to offsets; the end never passes the current high-water mark."""
    with open_reader(journal_dir, pid, None, config) as reader:
        start = reader.earliest_offset()
        if bounds.from_offset is not None:
            start = max(start, bounds.from_offset)
        if bounds.from_time_ms is not None:
            reader.seek_time(bounds.from_time_ms)
            start = max(start, reader.position)
        end = reader.high_water_mark()
        if bounds.to_offset is not None:
            end = min(end, bounds.to_offset)
        if bounds.to_time_ms is not None:
            reader.seek_time(bounds.to_time_ms)
            end = min(end, reader.position)
    return ReplayPlan(pid, start, max(start, end))


async def replay(
    journal_dir: Path,
    plan: ReplayPlan,
    sink: Sink,
    *,
    batch_messages: int = 1000,
    progress: Callable[[int], None] | None = None,
    config: JournalConfig | None = None,
) -> int:
    """Write ``plan``'s messages to ``sink`` in order; returns how many were written."""
    written = 0
    with open_reader(journal_dir, plan.pid, plan.start, config) as reader:
        while reader.position < plan.end:
            want = min(batch_messages, plan.end - reader.position)
            batch = reader.read(max_messages=want)
            if not batch:
                break  # the range was cut by retention meanwhile
            batch = [m for m in batch if m.offset < plan.end]
            await sink.write(plan.pid, batch)
            written += len(batch)
            if progress is not None:
                progress(len(batch))
    return written
