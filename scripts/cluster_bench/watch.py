"""What the failover benchmark observes, every ``poll_s``: when each member's files-sink output
of each category grew (`OutputWatch`: a delivery), and who owns each category's partition in
ZooKeeper (`OwnerWatch`).  Each member writes to a directory of its own (its slot), so a
delivery names the member that made it."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import trio

from consumers import errors as zkerr
from consumers.coordination.zk_client import ZooKeeperClient
from journal import category_dir_name

# A watch keeps this many seconds of history: more than a round lasts, so memory stays bounded
# however many rounds run.
HISTORY_S = 300.0


def current_file(out_dir: Path, category: bytes) -> Path:
    """The files sink's ``<file_path>/<category>/<category>_current`` symlink."""
    name: str = category_dir_name(category)
    return out_dir / name / f"{name}_current"


@dataclass
class OutputWatch:
    out_dirs: list[Path]
    categories: list[bytes]
    poll_s: float
    # category -> [(monotonic time, slot)] of every growth seen
    growth: dict[bytes, list[tuple[float, int]]] = field(default_factory=dict)
    _sizes: dict[tuple[int, bytes], int] = field(default_factory=dict)

    async def run(self) -> None:
        while True:
            now = time.monotonic()
            for slot, out_dir in enumerate(self.out_dirs):
                for category in self.categories:
                    try:
                        size = os.stat(current_file(out_dir, category)).st_size
                    except FileNotFoundError:
                        continue
                    if size > self._sizes.get((slot, category), 0):
                        self.growth.setdefault(category, []).append((now, slot))
                    self._sizes[slot, category] = size
            for category, events in self.growth.items():
                if events and events[0][0] < now - HISTORY_S:
                    self.growth[category] = [e for e in events if e[0] >= now - HISTORY_S]
            await trio.sleep(self.poll_s)

    def first_after(self, category: bytes, since: float, not_slot: int) -> float | None:
        """When another slot than ``not_slot`` first wrote ``category`` after ``since``."""
        for at, slot in self.growth.get(category, []):
            if at > since and slot != not_slot:
                return at
        return None

    def last_by(self, category: bytes, slot: int, before: float) -> float | None:
        """When ``slot`` last wrote ``category`` before ``before``."""
        times = [at for at, s in self.growth.get(category, []) if s == slot and at < before]
        return times[-1] if times else None

    def wrote_since(self, category: bytes, slot: int, since: float) -> bool:
        return any(at >= since and s == slot for at, s in self.growth.get(category, []))


@dataclass
class OwnerWatch:
    client: ZooKeeperClient
    group: str
    categories: list[bytes]
    poll_s: float
    # category -> the member id owning its partition 0 now (None: nobody)
    owner: dict[bytes, str | None] = field(default_factory=dict)
    # category -> [(monotonic time seen, member id or None, the owner node's creation as
    # ZooKeeper's wall clock in ms, 0 for None)] of every change seen
    changes: dict[bytes, list[tuple[float, str | None, int]]] = field(default_factory=dict)
    # member node name -> monotonic time it was first seen gone
    gone: dict[str, float] = field(default_factory=dict)
    # member id -> pid, from the members' nodes (kept after a node is gone)
    pids: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    _read_nodes: dict[str, str] = field(default_factory=dict)  # member id -> node name

    async def run(self) -> None:
        group = category_dir_name(self.group.encode())
        while True:
            try:
                await self._poll(group)
            except zkerr.CoordinationError:
                self.errors += 1  # the ensemble may be busy; the next poll asks again
            await trio.sleep(self.poll_s)

    async def _poll(self, group: str) -> None:
        try:
            members = await self.client.get_children(f"/groups/{group}/members")
        except zkerr.NoNode:
            members = []
        now = time.monotonic()
        for node in self._read_nodes.values():
            if node not in members:
                self.gone.setdefault(node, now)
        for member in members:
            if member in self._read_nodes.values():
                continue
            try:
                data, _ = await self.client.get(f"/groups/{group}/members/{member}")
            except zkerr.NoNode:
                continue
            info = json.loads(data)
            self.pids[str(info["member"])] = int(info["pid"])
            self._read_nodes[str(info["member"])] = member
        for category in self.categories:
            path = f"/groups/{group}/owners/{category_dir_name(category)}/0"
            try:
                data, stat = await self.client.get(path)
                owner: str | None = str(json.loads(data)["member"])
                created_ms = stat.created_ms
            except zkerr.NoNode:
                owner, created_ms = None, 0
            if category not in self.owner or owner != self.owner[category]:
                self.changes.setdefault(category, []).append((time.monotonic(), owner, created_ms))
            self.owner[category] = owner
        now = time.monotonic()
        for category, events in self.changes.items():
            if len(events) > 1 and events[0][0] < now - HISTORY_S:
                self.changes[category] = events[-1:]

    def member_of(self, pid: int) -> str | None:
        return next((m for m, p in self.pids.items() if p == pid), None)

    def taken_over(self, category: bytes, since: float, not_member: str) -> float | None:
        """When (wall clock, from the owner node's creation: exact, unlike the polls) a member
        other than ``not_member`` first owned ``category``, seen after ``since`` (monotonic)."""
        for at, owner, created_ms in self.changes.get(category, []):
            if at > since and owner is not None and owner != not_member:
                return created_ms / 1000
        return None

    def left(self, member: str, since: float) -> float | None:
        """When (monotonic, to a poll) ``member``'s node was first seen gone after ``since``."""
        node = self._read_nodes.get(member)
        at = self.gone.get(node) if node is not None else None
        return at if at is not None and at > since else None

    def stable_since(self) -> float:
        """When the last ownership change was seen."""
        return max((events[-1][0] for events in self.changes.values() if events), default=0.0)
