"""The ZooKeeper coordinator against the real ZooKeeper: the shared contract, the znode layout,
and what only a real session can show (suspension, expiry, fencing of a member that lost it)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from coordinator_contract import (
    GROUP,
    CoordinatorContract,
    MakeMember,
    RecordingListener,
    Running,
    pids,
    wait_until,
)

from consumers import Fenced, Lease, ResetRefused
from consumers.coordination import Coordinator
from consumers.coordination.zk_client import ZooKeeperClient, ZooKeeperConfig, open_zookeeper
from consumers.coordination.zookeeper import ZooKeeperCoordinator, list_groups
from journal import PartitionId

pytestmark = pytest.mark.timeout(120)


def member(
    config: ZooKeeperConfig, group: str, member_id: str, **kw: float
) -> ZooKeeperCoordinator:
    return ZooKeeperCoordinator(
        config,
        group,
        member_id,
        settle_s=kw.get("settle_s", 0.3),
        rescan_interval_s=kw.get("rescan_interval_s", 0.3),
        retry_interval_s=0.05,
        revoke_timeout_s=5.0,
    )


class TestZooKeeperCoordinatorContract(CoordinatorContract):
    settle_s = 8.0  # a crashed member's session closes at once; settle 0.3 s

    @pytest.fixture
    def make_member(self, zk: ZooKeeperClient, zk_config: ZooKeeperConfig) -> MakeMember:
        def make(group: str, member_id: str) -> Coordinator:
            return member(zk_config, group, member_id)

        return make


async def test_znode_layout(zk: ZooKeeperClient, zk_config: ZooKeeperConfig) -> None:
    parts = [PartitionId(b"a/b", 0), PartitionId(b"a/b", 1)]
    a = member(zk_config, "g/1", "m:1")
    a.set_partitions(parts)
    async with trio.open_nursery() as nursery:
        running = Running(a, RecordingListener(a))
        await nursery.start(running.run)
        await wait_until(lambda: len(a.owned()) == 2, 10)
        await a.commit(parts[1], 42, a.owned()[parts[1]])
        base = "/groups/g%2F1"
        assert await zk.get_children(f"{base}/members") == ["m%3A1"]
        assert await zk.get_children(f"{base}/owners/a%2Fb") == ["0", "1"]
        data, stat = await zk.get(f"{base}/owners/a%2Fb/1")
        assert stat.ephemeral and json.loads(data) == {"member": "m:1", "epoch": 1}
        meta, stat = await zk.get(f"{base}/partitions/a%2Fb/1")
        assert not stat.ephemeral
        assert json.loads(meta)["category"] == b"a/b".hex()
        epoch, stat = await zk.get(f"{base}/partitions/a%2Fb/1/epoch")
        assert (epoch, stat.version) == (b"1", 1)
        assert (await zk.get(f"{base}/partitions/a%2Fb/1/offset"))[0] == b"42"
        assert (await zk.get(f"{base}/partitions/a%2Fb/0/offset"))[0] == b""
        assert await a.owners() == {parts[0]: "m:1", parts[1]: "m:1"}
        a.stop()
    assert await zk.get_children(f"{base}/owners/a%2Fb") == []
    assert await zk.get_children(f"{base}/members") == []
    assert await a.all_committed() == {parts[0]: None, parts[1]: 42}
    assert await list_groups(zk_config) == ["g/1"]


async def test_expired_session_is_fenced_and_rejoins(
    zk: ZooKeeperClient, zk_config: ZooKeeperConfig
) -> None:
    """A member whose session expires loses everything at once; the other member takes over with
    new epochs; the old leases can never commit again; the first member rejoins and shares."""
    parts = pids(4)
    sessions: list[ZooKeeperClient] = []

    @asynccontextmanager
    async def capture(config: ZooKeeperConfig) -> AsyncIterator[ZooKeeperClient]:
        async with open_zookeeper(config) as client:
            sessions.append(client)
            yield client

    a = ZooKeeperCoordinator(
        zk_config, GROUP, "a", settle_s=0.3, rescan_interval_s=0.3, open_client=capture
    )
    b = member(zk_config, GROUP, "b")
    a.set_partitions(parts)
    b.set_partitions(parts)
    async with trio.open_nursery() as nursery:
        ra, rb = Running(a, RecordingListener(a)), Running(b, RecordingListener(b))
        await nursery.start(ra.run)
        await wait_until(lambda: len(a.owned()) == 4, 10, "a to own everything")
        old = a.owned()
        await nursery.start(rb.run)
        await wait_until(lambda: len(a.owned()) == len(b.owned()) == 2, 10, "sharing")
        kept = a.owned()
        await sessions[0].expire_session()
        await wait_until(lambda: a.counters["sessions_lost"] == 1, 10, "a to see LOST")
        assert all(("lost", Lease(pid, e)) in ra.listener.events for pid, e in kept.items())
        await wait_until(lambda: set(kept) <= set(b.owned()) or len(a.owned()) == 2, 10)
        for pid, epoch in kept.items():
            with pytest.raises(Fenced):
                await a.commit(pid, 1000, epoch)  # the old lease is dead for good
        await wait_until(lambda: len(a.owned()) == len(b.owned()) == 2, 15, "sharing again")
        for pid, epoch in a.owned().items():
            assert epoch > old[pid]
        assert [await a.committed(pid) for pid in parts].count(1000) == 0
        a.stop()
        b.stop()


async def test_reset_refused_lists_members(zk: ZooKeeperClient, zk_config: ZooKeeperConfig) -> None:
    a = member(zk_config, GROUP, "a")
    admin = member(zk_config, GROUP, "admin")
    async with trio.open_nursery() as nursery:
        await nursery.start(Running(a, RecordingListener(a)).run)
        with pytest.raises(ResetRefused) as refused:
            await admin.reset(PartitionId(b"x", 0), 5)
        assert refused.value.members == ["a"]
        a.stop()
