"""The coordinator contract (see ``consumers.coordination.protocol``), for every implementation.

Use it by subclassing ``CoordinatorContract`` in a test module and providing the ``make_member``
fixture: a callable ``(group, member_id) -> Coordinator``.  Members of one test share one
coordination namespace (state directory, ZooKeeper chroot); each test uses its own.  ``settle_s``
bounds how long assignment may take to converge; ``crash`` ends a member abruptly (override it
when cancelling ``run`` is not how the implementation dies).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest
import trio

from consumers.coordination import Coordinator, DeleteRefused, Fenced, Lease, ResetRefused
from journal import PartitionId

MakeMember = Callable[[str, str], Coordinator]
GROUP = "contract"


def pids(n: int, category: bytes = b"cat") -> list[PartitionId]:
    return [PartitionId(category, i) for i in range(n)]


class RecordingListener:
    """Tracks what a member was told, and checks the listener rules as it goes."""

    def __init__(self, member: Coordinator) -> None:
        self.member = member
        self.owned: dict[PartitionId, Lease] = {}
        self.events: list[tuple[str, Lease]] = []
        # Offsets to commit (with the lease's epoch) when a partition is revoked.
        self.commit_on_revoke: dict[PartitionId, int] = {}
        self.revoke_commit_errors: list[BaseException] = []

    async def assigned(self, lease: Lease) -> None:
        assert lease.pid not in self.owned, f"{lease.pid} assigned twice"
        self.owned[lease.pid] = lease
        self.events.append(("assigned", lease))

    async def revoking(self, lease: Lease) -> None:
        assert self.owned.get(lease.pid) == lease, f"revoking {lease} that is not owned"
        offset = self.commit_on_revoke.get(lease.pid)
        if offset is not None:
            try:
                await self.member.commit(lease.pid, offset, lease.epoch)
            except Fenced as exc:
                self.revoke_commit_errors.append(exc)
        del self.owned[lease.pid]
        self.events.append(("revoking", lease))

    def lost(self, lease: Lease) -> None:
        if self.owned.get(lease.pid) == lease:
            del self.owned[lease.pid]
        self.events.append(("lost", lease))


class Running:
    """A member running in a nursery, with its listener and a way to stop or crash it."""

    def __init__(self, member: Coordinator, listener: RecordingListener) -> None:
        self.member = member
        self.listener = listener
        self.scope = trio.CancelScope()
        self.finished = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with self.scope:
                await self.member.run(self.listener, task_status=task_status)
        finally:
            self.finished.set()


async def wait_until(predicate: Callable[[], bool], limit_s: float, what: str = "") -> None:
    """Polls: the contract is about state, and implementations notify in different ways."""
    with trio.move_on_after(limit_s):
        while not predicate():  # noqa: ASYNC110 (polling state on purpose)
            await trio.sleep(0.01)
        return
    raise AssertionError(f"timed out after {limit_s}s waiting for {what or predicate}")


async def wait_members(member: Coordinator, expected: list[str], limit_s: float) -> None:
    with trio.move_on_after(limit_s):
        while await member.members() != expected:  # noqa: ASYNC110 (polling state on purpose)
            await trio.sleep(0.02)
        return
    raise AssertionError(f"members are {await member.members()}, expected {expected}")


def _exclusive(members: Iterable[Running]) -> bool:
    seen: set[PartitionId] = set()
    for running in members:
        owned = set(running.member.owned())
        if owned & seen:
            return False
        seen |= owned
    return True


class CoordinatorContract:
    settle_s: float = 5.0

    @pytest.fixture
    def make_member(self) -> MakeMember:
        raise NotImplementedError("a contract test module provides make_member")

    async def start(
        self, nursery: trio.Nursery, make_member: MakeMember, member_id: str, partitions: list[Any]
    ) -> Running:
        member = make_member(GROUP, member_id)
        member.set_partitions(partitions)
        running = Running(member, RecordingListener(member))
        await nursery.start(running.run)
        return running

    async def crash(self, running: Running) -> None:
        running.scope.cancel()
        await running.finished.wait()

    async def stop(self, running: Running) -> None:
        running.member.stop()
        with trio.fail_after(self.settle_s):
            await running.finished.wait()

    # -- membership and ownership ------------------------------------------------------------

    async def test_single_member_owns_everything(self, make_member: MakeMember) -> None:
        parts = pids(4)
        async with trio.open_nursery() as nursery:
            a = await self.start(nursery, make_member, "a", parts)
            await wait_until(lambda: set(a.member.owned()) == set(parts), self.settle_s)
            assert await a.member.members() == ["a"]
            assert set(a.listener.owned) == set(parts)
            assert all(epoch >= 1 for epoch in a.member.owned().values())
            await self.stop(a)
        assert a.member.owned() == {}
        assert a.listener.owned == {}
        assert await make_member(GROUP, "admin").members() == []

    async def test_two_members_share_partitions_exclusively(self, make_member: MakeMember) -> None:
        parts = pids(6)
        async with trio.open_nursery() as nursery:
            a = await self.start(nursery, make_member, "a", parts)
            b = await self.start(nursery, make_member, "b", parts)
            members = [a, b]

            def settled() -> bool:
                assert _exclusive(members), "a partition has two owners"
                owned = [set(m.member.owned()) for m in members]
                return owned[0] | owned[1] == set(parts) and all(len(o) == 3 for o in owned)

            await wait_until(settled, self.settle_s, "both members to own three partitions")
            assert await a.member.members() == ["a", "b"]
            for _ in range(20):  # stays exclusive and complete once settled
                assert _exclusive(members)
                await trio.sleep(0.01)
            assert {len(m.member.owned()) for m in members} == {3}
            await self.stop(a)
            await wait_until(lambda: set(b.member.owned()) == set(parts), self.settle_s)
            await self.stop(b)

    async def test_crashed_member_partitions_are_taken_over(self, make_member: MakeMember) -> None:
        parts = pids(4)
        async with trio.open_nursery() as nursery:
            a = await self.start(nursery, make_member, "a", parts)
            await wait_until(lambda: len(a.member.owned()) == 4, self.settle_s)
            old = a.member.owned()
            b = await self.start(nursery, make_member, "b", parts)
            await trio.sleep(0.05)
            await self.crash(a)
            assert a.listener.owned == {}
            await wait_until(lambda: set(b.member.owned()) == set(parts), self.settle_s)
            for pid, epoch in b.member.owned().items():
                assert epoch > old[pid]
            await wait_members(b.member, ["b"], self.settle_s)
            await self.stop(b)

    # -- offsets and fencing -----------------------------------------------------------------

    async def test_commit_is_monotonic(self, make_member: MakeMember) -> None:
        parts = pids(1)
        pid = parts[0]
        async with trio.open_nursery() as nursery:
            a = await self.start(nursery, make_member, "a", parts)
            await wait_until(lambda: pid in a.member.owned(), self.settle_s)
            epoch = a.member.owned()[pid]
            assert await a.member.committed(pid) is None
            await a.member.commit(pid, 10, epoch)
            assert await a.member.committed(pid) == 10
            await a.member.commit(pid, 5, epoch)  # ignored: never backwards
            assert await a.member.committed(pid) == 10
            await a.member.commit(pid, 11, epoch)
            assert await a.member.committed(pid) == 11
            await self.stop(a)
        assert await make_member(GROUP, "admin").committed(pid) == 11

    async def test_revocation_commits_before_release(self, make_member: MakeMember) -> None:
        parts = pids(2)
        async with trio.open_nursery() as nursery:
            a = await self.start(nursery, make_member, "a", parts)
            await wait_until(lambda: len(a.member.owned()) == 2, self.settle_s)
            a.listener.commit_on_revoke = {parts[0]: 7, parts[1]: 9}
            await self.stop(a)
            assert a.listener.revoke_commit_errors == []
            assert [kind for kind, _ in a.listener.events] == ["assigned"] * 2 + ["revoking"] * 2
            b = await self.start(nursery, make_member, "b", parts)
            await wait_until(lambda: len(b.member.owned()) == 2, self.settle_s)
            assert await b.member.committed(parts[0]) == 7
            assert await b.member.committed(parts[1]) == 9
            await self.stop(b)

    async def test_stale_epoch_is_fenced(self, make_member: MakeMember) -> None:
        parts = pids(1)
        pid = parts[0]
        async with trio.open_nursery() as nursery:
            a = await self.start(nursery, make_member, "a", parts)
            await wait_until(lambda: pid in a.member.owned(), self.settle_s)
            stale = a.member.owned()[pid]
            await a.member.commit(pid, 3, stale)
            await self.stop(a)
            b = await self.start(nursery, make_member, "b", parts)
            await wait_until(lambda: pid in b.member.owned(), self.settle_s)
            current = b.member.owned()[pid]
            assert current > stale
            with pytest.raises(Fenced) as caught:
                await a.member.commit(pid, 100, stale)
            assert caught.value.pid == pid
            assert caught.value.epoch == stale
            assert await b.member.committed(pid) == 3
            await b.member.commit(pid, 4, current)
            assert await b.member.committed(pid) == 4
            await self.stop(b)

    async def test_reset_refused_while_active_unless_forced(self, make_member: MakeMember) -> None:
        parts = pids(1)
        pid = parts[0]
        admin = make_member(GROUP, "admin")
        async with trio.open_nursery() as nursery:
            a = await self.start(nursery, make_member, "a", parts)
            await wait_until(lambda: pid in a.member.owned(), self.settle_s)
            epoch = a.member.owned()[pid]
            await a.member.commit(pid, 50, epoch)
            with pytest.raises(ResetRefused):
                await admin.reset(pid, 10)
            assert await admin.committed(pid) == 50
            await admin.reset(pid, 10, force=True)  # backwards, by an operator
            assert await admin.committed(pid) == 10
            with pytest.raises(Fenced):
                await a.member.commit(pid, 60, epoch)
            assert await admin.committed(pid) == 10
            # The owner drops the fenced lease and takes the partition up again, newer epoch.
            await wait_until(
                lambda: a.member.owned().get(pid, epoch) > epoch, self.settle_s, "re-assignment"
            )
            assert ("lost", Lease(pid, epoch)) in a.listener.events
            await self.stop(a)
        await admin.reset(pid, 0)  # nobody active: no force needed
        assert await admin.committed(pid) == 0

    async def test_delete_refused_while_active_unless_forced(self, make_member: MakeMember) -> None:
        parts = pids(2)
        admin = make_member(GROUP, "admin")
        async with trio.open_nursery() as nursery:
            a = await self.start(nursery, make_member, "a", parts)
            await wait_until(lambda: len(a.member.owned()) == 2, self.settle_s)
            old = a.member.owned()
            await a.member.commit(parts[0], 50, old[parts[0]])
            with pytest.raises(DeleteRefused) as refused:
                await admin.delete()
            assert refused.value.members == ["a"]
            assert await admin.committed(parts[0]) == 50
            assert await admin.delete(force=True) == 2
            assert await admin.committed(parts[0]) is None
            with pytest.raises(Fenced):
                await a.member.commit(parts[0], 60, old[parts[0]])
            # The member drops both partitions and takes them up again, as a new group would.
            await wait_until(
                lambda: (
                    all(("lost", Lease(pid, e)) in a.listener.events for pid, e in old.items())
                    and len(a.member.owned()) == 2
                ),
                self.settle_s,
                "re-assignment",
            )
            assert all(a.member.owned()[pid] > epoch for pid, epoch in old.items())
            epoch = a.member.owned()[parts[0]]
            await a.member.commit(parts[0], 3, epoch)
            assert await admin.committed(parts[0]) == 3
            await self.stop(a)
        assert await admin.delete() == 2  # nobody active: no force needed
        assert await admin.all_committed() == {}
        assert await admin.delete() == 0

    async def test_members_lists_active_members(self, make_member: MakeMember) -> None:
        admin = make_member(GROUP, "admin")
        assert await admin.members() == []
        async with trio.open_nursery() as nursery:
            a = await self.start(nursery, make_member, "a", [])
            b = await self.start(nursery, make_member, "b", [])
            assert await admin.members() == ["a", "b"]
            await self.stop(a)
            assert await admin.members() == ["b"]
            await self.crash(b)
            await wait_members(admin, [], self.settle_s)

    async def test_partitions_appearing_later_are_assigned(self, make_member: MakeMember) -> None:
        async with trio.open_nursery() as nursery:
            a = await self.start(nursery, make_member, "a", pids(1))
            await wait_until(lambda: len(a.member.owned()) == 1, self.settle_s)
            a.member.set_partitions([*pids(1), *pids(2, b"new")])
            await wait_until(lambda: len(a.member.owned()) == 3, self.settle_s)
            await self.stop(a)
