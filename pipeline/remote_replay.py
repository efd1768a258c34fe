"""Replaying a range of a partition of another host's journal, through its fetch service.

The same ranges as ``pipeline.replay`` (offsets or times; the end never passes the high-water
mark when the replay starts), resolved by the server (``describe``, ``offsetForTime``), and the
messages read with the consumers' remote reader: whole batches verified by their crc, and what
retention deleted meanwhile skipped, as a local replay does.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from consumers import RemoteJournalSource, Sink
from journal import PartitionId
from pipeline.replay import ReplayPlan, ReplayRange
from scribe_compat import AsyncFetchClient, PartitionState

# The longest a replay waits for the next response before it looks at its position again.
POLL_S = 1.0


async def plan_remote(
    client: AsyncFetchClient, state: PartitionState, bounds: ReplayRange
) -> ReplayPlan:
    """``bounds`` in ``state``'s partition as offsets, asking the server for times."""
    pid = PartitionId(state.category, state.partition)
    start = state.earliest
    if bounds.from_offset is not None:
        start = max(start, bounds.from_offset)
    if bounds.from_time_ms is not None:
        at = await client.offset_for_time(pid.category, pid.partition, bounds.from_time_ms)
        start = max(start, at)
    end = state.high_water_mark
    if bounds.to_offset is not None:
        end = min(end, bounds.to_offset)
    if bounds.to_time_ms is not None:
        end = min(end, await client.offset_for_time(pid.category, pid.partition, bounds.to_time_ms))
    return ReplayPlan(pid, start, max(start, end))


async def replay_remote(
    source: RemoteJournalSource,
    plan: ReplayPlan,
    sink: Sink,
    *,
    batch_messages: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write ``plan``'s messages, read from ``source``, to ``sink`` in order."""
    if plan.messages == 0:
        return 0
    written = 0
    reader = await source.open_reader(plan.pid, plan.start)
    try:
        while reader.position < plan.end:
            want = min(batch_messages, plan.end - reader.position)
            batch = reader.read(want)
            if not batch:
                # A wait bounded so that a skip past the end (retention) ends the loop too.
                with trio.move_on_after(POLL_S):
                    batch = await reader.read_wait(want)
            batch = [m for m in batch if m.offset < plan.end]
            if batch:
                await sink.write(plan.pid, batch)
                written += len(batch)
                if progress is not None:
                    progress(len(batch))
    finally:
        reader.close()
    return written
