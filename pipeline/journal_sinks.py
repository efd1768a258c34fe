"""One sink per journal read, for groups that read several journals.

The Cassandra materializers key rows, and the forward sink stamps events, with the journal an
event was read from (its origin, ``consumers.origin``).  A sink is built for one journal
identity, so a group reading every registered journal (``journals = "registry"``) writes each
``Unit``'s batches through the sink of the unit's own journal, made when its first batch comes.
They share what is expensive (the Cassandra session belongs to the application).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence

from consumers import Sink
from consumers.coordination import journal_of
from journal import JournalMessage, PartitionId

# Figures that are levels (a latency), not counts: the group shows the worst journal's.
LEVEL_MARK = "latency"


class SinkPerJournal:
    """A ``Sink`` that hands each batch to the sink of the journal it was read from.

    ``make(journal_id)`` builds a sink for one journal; ``default()`` is the journal of a
    plain ``PartitionId`` (one that names no journal).
    """

    def __init__(self, make: Callable[[uuid.UUID], Sink], default: Callable[[], uuid.UUID]) -> None:
        self._make = make
        self._default = default
        self._sinks: dict[uuid.UUID, Sink] = {}

    def probe(self) -> Sink:
        """A sink that is never written to, for the checks made before the member starts
        (a files directory, a Cassandra schema)."""
        return self._make(uuid.UUID(int=0))

    def sink_for(self, pid: PartitionId) -> Sink:
        journal_id = journal_of(pid)
        key = self._default() if journal_id is None else uuid.UUID(hex=journal_id)
        sink = self._sinks.get(key)
        if sink is None:
            sink = self._sinks[key] = self._make(key)
        return sink

    async def write(self, pid: PartitionId, messages: Sequence[JournalMessage]) -> None:
        await self.sink_for(pid).write(pid, messages)

    def metrics(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for sink in self._sinks.values():
            for key, value in sink.metrics().items():
                if LEVEL_MARK in key:
                    total[key] = max(total.get(key, 0), value)
                else:
                    total[key] = total.get(key, 0) + value
        return total

    async def aclose(self) -> None:
        for sink in self._sinks.values():
            await sink.aclose()
