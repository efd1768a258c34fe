"""``ClusterJournalSource``: the registry's journals as units, read from this host's files when
they are its own journal (read_local), else through the registered server."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from consumers.cluster_source import ClusterJournalSource
from consumers.coordination import Unit
from consumers.coordination.registry import Registration
from consumers.source import LocalJournalSource
from journal import JournalConfig, PartitionId, UnknownPartition, open_journal

OTHER = "ab" * 16


async def test_units_of_every_journal_and_local_reads_of_our_own(tmp_path: Path) -> None:
    journal_dir = tmp_path / "journal"
    async with open_journal(journal_dir, JournalConfig()) as journal:
        await journal.append(b"app", 0, [b"one", b"two"])
        own = journal.journal_id.hex
        registry = {
            own: Registration(own, "127.0.0.1", 1, "here", 1, (PartitionId(b"app", 0),)),
            OTHER: Registration(OTHER, "127.0.0.1", 1, "there", 2, (PartitionId(b"app", 0),)),
        }

        async def registered() -> dict[str, Registration]:
            return registry

        async with trio.open_nursery() as nursery:
            source = ClusterJournalSource(
                registered,
                nursery,
                local=LocalJournalSource(journal_dir),
                local_journal_id=lambda: own,
            )
            units = await source.partitions()
            assert set(units) == {Unit(b"app", 0, own), Unit(b"app", 0, OTHER)}
            # Our own journal's unit comes from the files: no server is asked (port 1).
            reader = await source.open_reader(Unit(b"app", 0, own), 1)
            assert [m.message for m in reader.read()] == [b"two"]
            reader.close()
            # A unit of a journal that left the registry cannot be opened: it pauses.
            del registry[OTHER]
            await source.partitions()
            with pytest.raises(UnknownPartition):
                await source.open_reader(Unit(b"app", 0, OTHER), 0)
            # A plain partition names no journal: not one of the registry's.
            with pytest.raises(UnknownPartition):
                await source.open_reader(PartitionId(b"app", 0), 0)
            await source.aclose()
