"""The local coordinator: the shared contract, plus what only processes on one host can show."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from coordinator_contract import GROUP, CoordinatorContract, MakeMember, pids, wait_until
from pipeline_cli import IgnoringListener

from consumers import (
    CoordinationError,
    Fenced,
    LocalCoordinator,
    LocalCoordinatorConfig,
    list_groups,
)
from consumers.coordination import Coordinator
from journal import PartitionId

MEMBER_SCRIPT = Path(__file__).with_name("member_process.py")


def _config(state_dir: Path) -> LocalCoordinatorConfig:
    return LocalCoordinatorConfig(state_dir=state_dir, rescan_interval_s=0.05, revoke_timeout_s=5)


class TestLocalCoordinatorContract(CoordinatorContract):
    settle_s = 5.0

    @pytest.fixture
    def make_member(self, tmp_path: Path) -> MakeMember:
        def make(group: str, member_id: str) -> Coordinator:
            return LocalCoordinator(_config(tmp_path / "state"), group, member_id)

        return make


async def test_member_id_in_use_is_refused(tmp_path: Path) -> None:
    a = LocalCoordinator(_config(tmp_path), "g", "same")
    b = LocalCoordinator(_config(tmp_path), "g", "same")
    listener = IgnoringListener()
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run, listener)
        with pytest.raises(CoordinationError, match="already active"):
            await b.run(listener)
        a.stop()


async def test_state_file_is_replaced_atomically_and_unreadable_state_refused(
    tmp_path: Path,
) -> None:
    admin = LocalCoordinator(_config(tmp_path), "g", "admin")
    pid = PartitionId(b"a/b\x00", 3)  # category text is made filesystem-safe
    await admin.reset(pid, 5)
    assert await admin.committed(pid) == 5
    _check_and_damage_state(tmp_path)
    with pytest.raises(CoordinationError, match="unreadable"):
        await admin.committed(pid)


def _check_and_damage_state(state_dir: Path) -> None:
    states = list(state_dir.rglob("*.state"))
    assert len(states) == 1
    assert states[0].parent.name == "a%2Fb%00"
    assert states[0].parent.parent.name == "partitions"
    assert not list(state_dir.rglob("*.tmp"))
    states[0].write_bytes(b"garbage")


# -- several processes on one host --------------------------------------------------------------


class MemberProcess:
    """``member_process.py``: owns partitions, commits increasing offsets, reports on stdout."""

    def __init__(self, state_dir: Path, member_id: str, partitions: int) -> None:
        self.member_id = member_id
        self.proc = subprocess.Popen(
            [sys.executable, str(MEMBER_SCRIPT), str(state_dir), GROUP, member_id, str(partitions)],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.owned: dict[int, int] = {}  # partition -> epoch
        self.events: list[dict[str, object]] = []

    async def pump(self) -> None:
        assert self.proc.stdout is not None
        stream = trio.lowlevel.FdStream(os.dup(self.proc.stdout.fileno()))
        buffer = b""
        async with stream:
            while chunk := await stream.receive_some():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    event = json.loads(line)
                    self.events.append(event)
                    partition = int(event["partition"])
                    if event["event"] == "assigned":
                        assert partition not in self.owned
                        self.owned[partition] = int(event["epoch"])
                    elif event["event"] in ("revoked", "lost"):
                        self.owned.pop(partition, None)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.owned.clear()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def processes() -> Iterator[list[MemberProcess]]:
    started: list[MemberProcess] = []
    yield started
    for member in started:
        member.close()


async def test_processes_share_partitions_and_take_over_from_killed_member(
    tmp_path: Path, processes: list[MemberProcess]
) -> None:
    state = tmp_path / "state"
    admin = LocalCoordinator(_config(state), GROUP, "admin")
    all_pids = pids(8)
    history: dict[PartitionId, int] = {}

    async def offsets_never_go_backwards() -> None:
        while True:
            for pid in all_pids:
                offset = await admin.committed(pid)
                if offset is not None:
                    assert offset >= history.get(pid, 0), f"{pid} went backwards"
                    history[pid] = offset
            await trio.sleep(0.02)

    def exclusive_and_complete(members: list[MemberProcess]) -> bool:
        owned = [set(m.owned) for m in members]
        for i, mine in enumerate(owned):
            for other in owned[i + 1 :]:
                assert not mine & other, "a partition has two owners"
        return set().union(*owned) == set(range(8)) and all(len(o) == 4 for o in owned)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(offsets_never_go_backwards)
        a = MemberProcess(state, "a", 8)
        b = MemberProcess(state, "b", 8)
        processes += [a, b]
        nursery.start_soon(a.pump)
        nursery.start_soon(b.pump)
        await wait_until(lambda: exclusive_and_complete([a, b]), 20, "a and b to share evenly")
        assert await admin.members() == ["a", "b"]
        epochs_of_a = dict(a.owned)
        await trio.sleep(0.3)  # let both commit a few times

        a.kill()
        await wait_until(lambda: len(b.owned) == 8, 10, "b to take over a's partitions")
        for partition, epoch in epochs_of_a.items():
            assert b.owned[partition] > epoch
            # A's last lease is fenced now: its commits can never land.
            with pytest.raises(Fenced):
                await admin.commit(PartitionId(b"cat", partition), 1 << 40, epoch)
        assert await admin.members() == ["b"]
        await trio.sleep(0.2)
        nursery.cancel_scope.cancel()
    assert all(offset > 0 for offset in history.values())
    assert len(history) == 8


async def test_all_committed_and_list_groups(tmp_path: Path) -> None:
    admin = LocalCoordinator(_config(tmp_path), "g/1", "admin")
    await admin.reset(PartitionId(b"x", 0), 5)
    await admin.reset(PartitionId(b"\xff", 2), 7)
    assert await admin.all_committed() == {PartitionId(b"x", 0): 5, PartitionId(b"\xff", 2): 7}
    assert await trio.to_thread.run_sync(list_groups, tmp_path) == ["g/1"]


async def test_deleted_group_is_no_longer_listed(tmp_path: Path) -> None:
    admin = LocalCoordinator(_config(tmp_path), "gone", "admin")
    await admin.reset(PartitionId(b"x", 0), 5)
    await LocalCoordinator(_config(tmp_path), "kept", "admin").reset(PartitionId(b"x", 0), 1)
    assert await trio.to_thread.run_sync(list_groups, tmp_path) == ["gone", "kept"]
    epoch = await admin.current_epoch(PartitionId(b"x", 0))
    assert await admin.delete() == 1
    assert await trio.to_thread.run_sync(list_groups, tmp_path) == ["kept"]
    assert await admin.all_committed() == {}
    # The tombstone keeps the epoch growing: a lease of before the delete stays fenced.
    assert await admin.current_epoch(PartitionId(b"x", 0)) == (epoch or 0) + 1
