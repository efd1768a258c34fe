"""Retention floors of a server whose journal is read by registry groups, against the real
ZooKeeper (this test's own chroot) and a real journal of one-batch segments.

The server's configuration names no group (its consumers run elsewhere); the groups are known
from their offsets.  A unit of another journal with the same category and partition never holds
this journal's retention; this journal's unit owned but not committed yet holds it from the
start; a partition with an offset in the layout without journal ids and its unit (not migrated
yet) is held at the lower of the two; a partition no group reads is deleted down to its active
segment.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from coordinator_contract import wait_until
from pipeline_cli import IgnoringListener

from consumers.coordination import Unit
from consumers.coordination.zk_client import ZooKeeperClient, ZooKeeperConfig
from consumers.coordination.zookeeper import ZooKeeperCoordinator
from journal import JournalConfig, PartitionId, RetentionPolicy, list_partitions, open_journal
from pipeline import config as config_module
from pipeline.consumer_app import retention_floors
from pipeline.floors import ConsumerFloor, floor_lookup

pytestmark = pytest.mark.timeout(120)

OTHER = "ab" * 16  # another server's journal
BATCH = 10  # messages per append; every append is a segment of its own (segment_bytes = 1)
BATCHES = 10


def member(zk_config: ZooKeeperConfig, group: str) -> ZooKeeperCoordinator:
    return ZooKeeperCoordinator(zk_config, group, "m", settle_s=0.2, rescan_interval_s=0.2)


def server_config(tmp_path: Path, zk_config: ZooKeeperConfig) -> Path:
    path = tmp_path / "server.toml"
    path.write_text(
        f"""
[journal]
dir = "{tmp_path / "journal"}"
[coordination]
kind = "zookeeper"
[coordination.zookeeper]
hosts = "{zk_config.hosts}"
chroot = "{zk_config.chroot}"
"""
    )
    return path


async def own_and_commit(
    zk_config: ZooKeeperConfig, group: str, commits: dict[Unit, int], uncommitted: list[Unit]
) -> None:
    """A member of ``group`` that owns every unit given, commits ``commits`` and leaves."""
    coordinator = member(zk_config, group)
    coordinator.set_partitions([*commits, *uncommitted])
    async with trio.open_nursery() as nursery:
        await nursery.start(coordinator.run, IgnoringListener())
        await wait_until(lambda: len(coordinator.owned()) == len(commits) + len(uncommitted), 10)
        owned = coordinator.owned()
        for unit, offset in commits.items():
            await coordinator.commit(unit, offset, owned[unit])
        coordinator.stop()


async def test_retention_counts_only_this_journals_units(
    tmp_path: Path, zk: ZooKeeperClient, zk_config: ZooKeeperConfig
) -> None:
    journal_dir = tmp_path / "journal"
    async with open_journal(journal_dir, JournalConfig(segment_bytes=1)) as journal:
        for partition in range(4):
            for _ in range(BATCHES):
                await journal.append(b"app", partition, [b"m%d" % i for i in range(BATCH)])
        local = journal.journal_id.hex
        committed, uncommitted = Unit(b"app", 0, local), Unit(b"app", 1, local)
        # Another journal's app/0, far behind: its server's retention, not this one's.
        elsewhere = Unit(b"app", 0, OTHER)
        await own_and_commit(zk_config, "remote", {committed: 55, elsewhere: 2}, [uncommitted])
        # app/2 has an old-layout offset (before units) and its unit's, not migrated yet.
        legacy = member(zk_config, "legacy")
        await legacy.reset(PartitionId(b"app", 2), 25)
        await legacy.reset(Unit(b"app", 2, local), 75)

        config = config_module.load(server_config(tmp_path, zk_config), environ={})
        floors = await retention_floors(config)
        assert floors == {
            PartitionId(b"app", 0): ConsumerFloor({"remote": 55}),
            PartitionId(b"app", 1): ConsumerFloor({"remote": 0}),
            PartitionId(b"app", 2): ConsumerFloor({"legacy": 25}),
        }

        # Retention as the server applies it: everything sealed may go, above the floors.
        def everything(category: bytes) -> RetentionPolicy:
            return RetentionPolicy(max_bytes=0)

        await trio.to_thread.run_sync(journal.apply_retention, everything, floor_lookup(floors))
    earliest = {info.partition: info.earliest_offset for info in list_partitions(journal_dir)}
    assert earliest == {
        0: 50,  # the segment holding 55 stays; the one holding the other journal's 2 is gone
        1: 0,  # owned, nothing committed: held from the start
        2: 20,  # the lower of the two offsets holds
        3: (BATCHES - 1) * BATCH,  # no group: down to the active segment
    }
