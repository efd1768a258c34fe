"""A local-coordinator member in its own process, for the multi-process tests.

Usage: member_process.py STATE_DIR GROUP MEMBER_ID PARTITIONS.  Owns what it is given, commits
an increasing offset on each owned partition every 20 ms, and prints one JSON line per ownership
event.  Runs until killed (or SIGTERM: leaves gracefully).
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import trio

from consumers import Fenced, Lease, LocalCoordinator, LocalCoordinatorConfig
from journal import PartitionId


class Member:
    def __init__(self, coordinator: LocalCoordinator) -> None:
        self.coordinator = coordinator
        self.owned: dict[PartitionId, Lease] = {}

    def emit(self, event: str, lease: Lease) -> None:
        line = {"event": event, "partition": lease.pid.partition, "epoch": lease.epoch}
        print(json.dumps(line), flush=True)

    async def assigned(self, lease: Lease) -> None:
        self.owned[lease.pid] = lease
        self.emit("assigned", lease)

    async def revoking(self, lease: Lease) -> None:
        del self.owned[lease.pid]
        self.emit("revoked", lease)

    def lost(self, lease: Lease) -> None:
        self.owned.pop(lease.pid, None)
        self.emit("lost", lease)

    async def commit_loop(self) -> None:
        while True:
            for pid, lease in list(self.owned.items()):
                offset = (await self.coordinator.committed(pid) or 0) + 1
                with contextlib.suppress(Fenced):
                    await self.coordinator.commit(pid, offset, lease.epoch)
            await trio.sleep(0.02)


async def main(state_dir: str, group: str, member_id: str, partitions: int) -> None:
    config = LocalCoordinatorConfig(state_dir=Path(state_dir), rescan_interval_s=0.05)
    coordinator = LocalCoordinator(config, group, member_id)
    coordinator.set_partitions(PartitionId(b"cat", i) for i in range(partitions))
    member = Member(coordinator)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(member.commit_loop)
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            nursery.start_soon(_stop_on_signal, signals, coordinator)
            await coordinator.run(member)
        nursery.cancel_scope.cancel()


async def _stop_on_signal(signals: AsyncIterator[int], coordinator: LocalCoordinator) -> None:
    async for _ in signals:
        coordinator.stop()


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
