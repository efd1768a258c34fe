"""Units, (journal id, category, partition), in the ZooKeeper coordinator and the journal
registry, against the real ZooKeeper: the whole coordinator contract keyed by units, the znode
layout, the migration of offsets stored without journal id, a server gone and back, and the
registrar's node (contents, updates, re-registration after a session loss)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import coordinator_contract
import pytest
import trio
from coordinator_contract import (
    CoordinatorContract,
    MakeMember,
    RecordingListener,
    Running,
    wait_until,
)

from consumers.coordination import Coordinator, Unit
from consumers.coordination.registry import JournalRegistrar, Registration, registered_journals
from consumers.coordination.zk_client import ZooKeeperClient, ZooKeeperConfig, open_zookeeper
from consumers.coordination.zookeeper import ZooKeeperCoordinator
from journal import PartitionId

pytestmark = pytest.mark.timeout(120)

J1 = "11" * 16
J2 = "22" * 16


def member(
    config: ZooKeeperConfig, group: str, member_id: str, legacy: str | None = None
) -> ZooKeeperCoordinator:
    return ZooKeeperCoordinator(
        config,
        group,
        member_id,
        settle_s=0.3,
        rescan_interval_s=0.3,
        retry_interval_s=0.05,
        revoke_timeout_s=5.0,
        legacy_journal_id=legacy,
    )


def units(n: int, category: bytes = b"cat") -> list[PartitionId]:
    # Two journals with the same category and partition numbers: distinct keys.
    return [Unit(category, i // 2, J1 if i % 2 == 0 else J2) for i in range(n)]


class TestUnitsKeepTheContract(CoordinatorContract):
    settle_s = 8.0

    @pytest.fixture(autouse=True)
    def keyed_by_units(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(coordinator_contract, "pids", units)

    @pytest.fixture
    def make_member(self, zk: ZooKeeperClient, zk_config: ZooKeeperConfig) -> MakeMember:
        def make(group: str, member_id: str) -> Coordinator:
            return member(zk_config, group, member_id)

        return make


async def start(nursery: trio.Nursery, coordinator: Coordinator, keys: list[Any]) -> Running:
    coordinator.set_partitions(keys)
    running = Running(coordinator, RecordingListener(coordinator))
    await nursery.start(running.run)
    return running


async def test_unit_znodes_live_under_their_journal(
    zk: ZooKeeperClient, zk_config: ZooKeeperConfig
) -> None:
    unit = Unit(b"app", 1, J1)
    async with trio.open_nursery() as nursery:
        a = await start(nursery, member(zk_config, "g", "a"), [unit])
        await wait_until(lambda: unit in a.member.owned(), 8)
        await a.member.commit(unit, 7, a.member.owned()[unit])
        base = f"/groups/g/journals/{J1}"
        owner, _ = await zk.get(f"{base}/owners/app/1")
        assert json.loads(owner)["member"] == "a"
        meta, _ = await zk.get(f"{base}/partitions/app/1")
        assert json.loads(meta)["journal_id"] == J1
        offset, _ = await zk.get(f"{base}/partitions/app/1/offset")
        assert offset == b"7"
        assert await zk.exists("/groups/g/partitions/app/1") is None  # not the plain layout
        assert await a.member.all_committed() == {unit: 7}
        a.member.stop()


async def test_a_gone_servers_units_are_paused_not_forgotten(
    zk: ZooKeeperClient, zk_config: ZooKeeperConfig
) -> None:
    kept, gone = Unit(b"app", 0, J1), Unit(b"app", 0, J2)
    async with trio.open_nursery() as nursery:
        a = await start(nursery, member(zk_config, "g", "a"), [kept, gone])
        await wait_until(lambda: len(a.member.owned()) == 2, 8)
        a.listener.commit_on_revoke[gone] = 40
        # The server of J2 leaves the registry: its unit is revoked (committed), not lost.
        a.member.set_partitions([kept])
        await wait_until(lambda: set(a.member.owned()) == {kept}, 8)
        assert ("revoking", a.listener.events[-1][1]) == a.listener.events[-1]
        assert (await a.member.all_committed())[gone] == 40
        epoch = await a.member.current_epoch(gone)
        # It comes back: taken up again from its offset, with a new epoch.
        a.member.set_partitions([kept, gone])
        await wait_until(lambda: gone in a.member.owned(), 8)
        assert a.member.owned()[gone] > (epoch or 0)
        assert await a.member.committed(gone) == 40
        a.member.stop()


async def test_offsets_without_journal_id_move_to_the_local_journals_units(
    zk: ZooKeeperClient, zk_config: ZooKeeperConfig
) -> None:
    legacy = [PartitionId(b"app", 0), PartitionId(b"app", 1)]
    old = member(zk_config, "g", "admin")
    await old.reset(legacy[0], 120)
    await old.reset(legacy[1], 80)
    # A member on another host (its journal is J2) leaves them where they are.
    remote = member(zk_config, "g", "remote", legacy=J2)
    async with trio.open_nursery() as nursery:
        r = await start(nursery, remote, [Unit(b"app", 0, J1)])
        await wait_until(lambda: len(r.member.owned()) == 1, 8)
        assert await remote.committed(Unit(b"app", 0, J1)) is None
        remote.stop()
    assert (await old.all_committed())[legacy[1]] == 80
    # The member whose journal.dir holds J1 migrates them: once, atomically.
    local = member(zk_config, "g", "local", legacy=J1)
    async with trio.open_nursery() as nursery:
        m = await start(nursery, local, [Unit(b"app", 1, J1)])
        await wait_until(lambda: len(m.member.owned()) == 1, 8)
        assert await local.committed(Unit(b"app", 1, J1)) == 80
        local.stop()
    committed = await old.all_committed()
    assert legacy[1] not in committed  # retired: listed once, under its unit
    assert committed[Unit(b"app", 1, J1)] == 80
    assert committed[legacy[0]] == 120  # its unit was created by the remote member first
    meta, _ = await zk.get("/groups/g/partitions/app/1")
    assert json.loads(meta)["migrated_to"] == J1


class Recording:
    """An ``open_client`` that keeps the clients it opened (to expire their sessions)."""

    def __init__(self) -> None:
        self.clients: list[ZooKeeperClient] = []

    def __call__(self, config: ZooKeeperConfig) -> AbstractAsyncContextManager[ZooKeeperClient]:
        @asynccontextmanager
        async def opened() -> AsyncIterator[ZooKeeperClient]:
            async with open_zookeeper(config) as client:
                self.clients.append(client)
                yield client

        return opened()


async def node(zk: ZooKeeperClient, journal_id: str) -> Registration | None:
    return (await registered_journals(zk)).get(journal_id)


async def poll(check: Callable[[], Any], limit_s: float = 10) -> Any:
    with trio.fail_after(limit_s):
        while not (value := await check()):  # noqa: ASYNC110 (polling ZooKeeper's state)
            await trio.sleep(0.05)
        return value


async def test_the_registrar_publishes_updates_and_re_registers(
    zk: ZooKeeperClient, zk_config: ZooKeeperConfig
) -> None:
    partitions = [PartitionId(b"app", 0)]
    opened = Recording()
    registrar = JournalRegistrar(
        zk_config,
        J1,
        ("127.0.0.1", 7777),
        lambda: list(partitions),
        interval_s=0.1,
        retry_interval_s=0.1,
        open_client=opened,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(registrar.run)
        first = await poll(lambda: node(zk, J1))
        assert first.fetch_address == "127.0.0.1:7777"
        assert first.partitions == (PartitionId(b"app", 0),)
        assert first.pid > 0 and first.host
        stat = await zk.exists(f"/journals/{J1}")
        assert stat is not None and stat.ephemeral

        partitions.append(PartitionId(b"new", 3))  # a new category appears
        updated = await poll(
            lambda: _with_partitions(zk, {PartitionId(b"app", 0), PartitionId(b"new", 3)})
        )
        assert updated.journal_id == J1
        assert registrar.counters["updates"] >= 1

        # The session expires: the node goes with it, and comes back in the new session.
        session = opened.clients[-1].session_id
        await opened.clients[-1].expire_session()
        await poll(lambda: _owned_by_another_session(zk, session))
        assert registrar.counters["registrations"] >= 2
        nursery.cancel_scope.cancel()
    await poll(lambda: _gone(zk))  # its session closed with it


async def _with_partitions(zk: ZooKeeperClient, wanted: set[PartitionId]) -> Registration | None:
    found = await node(zk, J1)
    return found if found is not None and set(found.partitions) == wanted else None


async def _owned_by_another_session(zk: ZooKeeperClient, session: int) -> bool:
    stat = await zk.exists(f"/journals/{J1}")
    return stat is not None and stat.ephemeral_owner not in (0, session)


async def _gone(zk: ZooKeeperClient) -> bool:
    return await zk.exists(f"/journals/{J1}") is None


async def test_a_stale_registration_of_the_journal_is_replaced_at_once(
    zk: ZooKeeperClient, zk_config: ZooKeeperConfig
) -> None:
    # A killed server's node, in a session that has not expired yet.
    stale = Registration(J1, "127.0.0.1", 1, "old-host", 1, ())
    await zk.ensure_path("/journals")
    await zk.create(f"/journals/{J1}", stale.encode(), ephemeral=True)
    registrar = JournalRegistrar(
        zk_config, J1, ("127.0.0.1", 2), lambda: [], interval_s=0.1, retry_interval_s=0.1
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(registrar.run)
        fresh = await poll(lambda: _at_port(zk, 2), limit_s=3)  # well within the session timeout
        assert fresh.host != "old-host"
        nursery.cancel_scope.cancel()


async def _at_port(zk: ZooKeeperClient, port: int) -> Registration | None:
    found = await node(zk, J1)
    return found if found is not None and found.fetch_port == port else None
