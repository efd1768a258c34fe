"""Where a member's partitions come from: the journal's files on this host, or a log server's
fetch service (``consumers.remote_reader``).  The runtime sees only these two interfaces, so it
cannot tell the two apart.

``PartitionReader`` is what ``journal.JournalReader`` offers the runtime: ``read`` returns what
is there without waiting, ``read_wait`` waits for a first message, ``skipped`` and
``skip_reasons`` name the offsets that hold no data (gaps), and damage raises
``JournalCorrupt``.  ``JournalSource.open_reader`` raises ``OffsetOutOfRange`` for an offset
outside what the journal holds, as ``journal.open_reader`` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import trio

from journal import JournalConfig, JournalMessage, PartitionId, list_partitions, open_reader


class PartitionReader(Protocol):
    """Reads one partition from an offset; one task uses it at a time."""

    skipped: list[tuple[int, int]]
    skip_reasons: dict[tuple[int, int], str]

    @property
    def position(self) -> int: ...

    def high_water_mark(self) -> int: ...

    def read(self, max_messages: int = 1000, max_bytes: int = 1 << 20) -> list[JournalMessage]: ...

    async def read_wait(
        self, max_messages: int = 1000, max_bytes: int = 1 << 20
    ) -> list[JournalMessage]: ...

    def close(self) -> None: ...


class JournalSource(Protocol):
    """A journal's partitions, and readers of them."""

    async def partitions(self) -> list[PartitionId]:
        """Every partition now; raises ``JournalError`` or ``OSError`` when it cannot tell."""
        ...

    async def open_reader(self, pid: PartitionId, offset: int) -> PartitionReader:
        """A reader from ``offset`` (which must lie between the earliest offset kept and the
        high-water mark: ``OffsetOutOfRange`` otherwise), continuing over gaps."""
        ...


class LocalJournalSource:
    """The journal files in ``directory``, written by a server on this host."""

    def __init__(self, directory: Path, config: JournalConfig | None = None) -> None:
        self.directory = Path(directory)
        self._config = config

    async def partitions(self) -> list[PartitionId]:
        try:
            infos = await trio.to_thread.run_sync(list_partitions, self.directory)
        except FileNotFoundError:
            return []
        return [PartitionId(info.category, info.partition) for info in infos]

    async def open_reader(self, pid: PartitionId, offset: int) -> PartitionReader:
        def opened() -> PartitionReader:
            return open_reader(self.directory, pid, offset, self._config, skip_gaps=True)

        return await trio.to_thread.run_sync(opened)
