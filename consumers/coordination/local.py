"""The local coordinator: one host, no ZooKeeper.  Offsets in files, ownership by file locks.

Layout under ``LocalCoordinatorConfig.state_dir`` (names are the journal's injective,
filesystem-safe category encoding of the group name, member id and category)::

    <group>/members/<member>.member          flock(LOCK_EX) held by the live member; JSON about it
    <group>/partitions/<category>/<n>.lock   flock(LOCK_EX) held by the partition's owner
    <group>/partitions/<category>/<n>.guard  flock(LOCK_EX) held briefly around every state change
    <group>/partitions/<category>/<n>.state  JSON {"format": 1, "group": name, "category": hex,
                                             "partition": n, "offset": next-to-consume|null,
                                             "epoch": n, "owner": member|null, "updated": unix time,
                                             "deleted_at_epoch": n (after ``delete``)}

Invariants (this is where fencing lives):

* The kernel drops a process's flocks when it dies, so a dead member's partitions and membership
  free themselves; a live (even stopped) process keeps them.  Lock files are never deleted (that
  would let two processes lock two different inodes of one name); member files are, by whoever
  finds them unlocked, and a member re-checks after locking that its file is still the one at
  that path.
* ``.state`` is only ever replaced whole (temp file, fsync, rename, fsync directory), so readers
  see the old or the new state, never a torn one, and what a commit returned for survives a crash.
* Every read-modify-write of ``.state`` (takeover, commit, reset) runs under ``.guard``: the new
  owner bumps the epoch under it, a commit checks the epoch under it, so a commit with an old epoch
  can never land after a takeover, and a takeover always sees the last accepted commit.
* A new owner takes ``.lock`` first and bumps the epoch second, so at any time at most one member
  holds both the lock and the current epoch.
* ``delete`` leaves a tombstone: the epoch bumped, no offset, and ``deleted_at_epoch`` equal to
  the epoch.  Such a partition is no longer listed (``all_committed``, ``list_groups``); the next
  takeover bumps the epoch past the tombstone and the partition lives again.  Never unlinked,
  so an epoch is never handed out twice.

Balancing: every ``rescan_interval_s`` a member counts the live members M and, of the P
partitions it knows, keeps at most ceil(P / M): it revokes the extras (gracefully) and takes
unowned ones up to that share.  A dead member's partitions are taken within about one interval.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import socket
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import trio

from consumers.config import LocalCoordinatorConfig
from consumers.coordination.protocol import (
    Lease,
    MemberState,
    OwnershipListener,
)
from consumers.errors import (
    CoordinationError,
    DeleteRefused,
    Fenced,
    ResetRefused,
)
from journal import PartitionId, category_dir_name

log = logging.getLogger(__name__)

STATE_FORMAT = 1
_T = TypeVar("_T")


def _fsync(fd: int) -> None:
    """The one fsync of this module (a test may replace it)."""
    os.fsync(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _fsync(fd)
    finally:
        os.close(fd)


def _replace_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        _fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on ``path`` (created if missing), or None when taken."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def _guard(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held for one small read-modify-write: never long
        yield
    finally:
        os.close(fd)


def _deleted(state: dict[str, Any]) -> bool:
    """The partition's offsets were deleted (``delete``) and nobody has taken it since."""
    return bool(state.get("deleted_at_epoch") == state.get("epoch"))


def pid_of(state: dict[str, Any]) -> PartitionId:
    return PartitionId(bytes.fromhex(state["category"]), int(state["partition"]))


def list_groups(state_dir: Path) -> list[str]:
    """The groups that have state under ``state_dir`` (names read from their state files),
    except those whose offsets were deleted."""
    groups: set[str] = set()
    for group_dir in Path(state_dir).iterdir() if Path(state_dir).is_dir() else ():
        for path in group_dir.glob("partitions/*/*.state"):
            try:
                state = json.loads(path.read_bytes())
                if not _deleted(state):
                    groups.add(str(state["group"]))
                    break
            except (OSError, ValueError, KeyError):
                continue
    return sorted(groups)


class LocalCoordinator(MemberState):
    """A member of ``group`` on this host (``consumers.coordination.protocol`` has the contract)."""

    def __init__(
        self,
        config: LocalCoordinatorConfig,
        group: str,
        member_id: str | None = None,
    ) -> None:
        if not group:
            raise ValueError("group must not be empty")
        self._config = config
        self._group = group
        self._member_id = member_id or f"{socket.gethostname()}-{os.getpid()}-{id(self):x}"
        self._root = Path(config.state_dir) / category_dir_name(group.encode())
        self._limiter = trio.CapacityLimiter(config.io_threads)
        self._partitions: frozenset[PartitionId] = frozenset()
        self._leases: dict[PartitionId, Lease] = {}
        self._lock_fds: dict[PartitionId, int] = {}
        self._member_fd: int | None = None
        self._wake = trio.Event()
        self._stopping = False

    # -- identity and local state ------------------------------------------------------------

    # -- paths and blocking helpers ----------------------------------------------------------

    def _partition_base(self, pid: PartitionId) -> Path:
        return self._root / "partitions" / category_dir_name(pid.category) / str(pid.partition)

    def _paths(self, pid: PartitionId) -> tuple[Path, Path, Path]:
        base = self._partition_base(pid)
        return (
            base.with_name(base.name + ".lock"),
            base.with_name(base.name + ".guard"),
            base.with_name(base.name + ".state"),
        )

    async def _io(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    def _read_state(self, path: Path) -> dict[str, Any] | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            state = json.loads(data)
            if state.get("format") != STATE_FORMAT:
                raise ValueError(f"unknown format {state.get('format')!r}")
            if not isinstance(state.get("epoch"), int):
                raise ValueError("no epoch")
            return dict(state)
        except ValueError as exc:
            # Never guess an offset: refusing is safer than re-reading or skipping a partition.
            raise CoordinationError(f"{path}: unreadable offset state: {exc}") from exc

    def _write_state(self, path: Path, pid: PartitionId, state: dict[str, Any]) -> None:
        state.update(
            format=STATE_FORMAT,
            group=self._group,
            category=pid.category.hex(),
            partition=pid.partition,
            updated=time.time(),
        )
        _replace_durably(path, json.dumps(state, sort_keys=True).encode())

    # -- offsets -----------------------------------------------------------------------------

    def _commit_blocking(self, pid: PartitionId, offset: int, epoch: int) -> None:
        _, guard, state_path = self._paths(pid)
        guard.parent.mkdir(parents=True, exist_ok=True)
        with _guard(guard):
            state = self._read_state(state_path)
            current = None if state is None else int(state["epoch"])
            if state is None or current != epoch:
                raise Fenced(pid, epoch, current)
            committed = state.get("offset")
            if committed is not None and offset <= committed:
                return  # never backwards; equal is a no-op (no fsync needed)
            state["offset"] = offset
            self._write_state(state_path, pid, state)

    async def commit(self, pid: PartitionId, offset: int, epoch: int) -> None:
        if offset < 0:
            raise ValueError(f"offset must not be negative, got {offset}")
        try:
            await self._io(self._commit_blocking, pid, offset, epoch)
        except Fenced:
            self._wake.set()  # let the rescan find the bumped epoch and report the loss
            raise

    async def committed(self, pid: PartitionId) -> int | None:
        state = await self._io(self._read_state, self._paths(pid)[2])
        if state is None or state.get("offset") is None:
            return None
        return int(state["offset"])

    def _reset_blocking(self, pid: PartitionId, offset: int) -> None:
        _, guard, state_path = self._paths(pid)
        guard.parent.mkdir(parents=True, exist_ok=True)
        with _guard(guard):
            state = self._read_state(state_path) or {"epoch": 0}
            # The bump fences the current owner: its next commit fails, it drops the partition
            # and whoever takes it next starts from the reset offset.
            state["epoch"] = int(state["epoch"]) + 1
            state["offset"] = offset
            state["owner"] = None
            self._write_state(state_path, pid, state)

    async def reset(self, pid: PartitionId, offset: int, *, force: bool = False) -> None:
        if offset < 0:
            raise ValueError(f"offset must not be negative, got {offset}")
        active = await self.members()
        if active and not force:
            raise ResetRefused(self._group, active)
        await self._io(self._reset_blocking, pid, offset)
        log.warning(
            "offset reset",
            extra={"group": self._group, "partition": str(pid), "offset": offset, "forced": force},
        )

    def _all_committed_blocking(self) -> dict[PartitionId, int | None]:
        out: dict[PartitionId, int | None] = {}
        for path in sorted((self._root / "partitions").glob("*/*.state")):
            state = self._read_state(path)
            if state is not None and not _deleted(state):
                offset = state.get("offset")
                out[pid_of(state)] = None if offset is None else int(offset)
        return out

    async def all_committed(self) -> dict[PartitionId, int | None]:
        """Every partition the group has state for, with its committed offset (for tools and
        retention floors)."""
        return await self._io(self._all_committed_blocking)

    def _delete_blocking(self) -> int:
        deleted = 0
        for state_path in sorted((self._root / "partitions").glob("*/*.state")):
            with _guard(state_path.with_suffix(".guard")):
                state = self._read_state(state_path)
                if state is None or _deleted(state):
                    continue
                # A tombstone, not an unlink: the epoch must keep growing (an owner that missed
                # the delete is fenced, and no later lease can repeat its epoch).
                state["epoch"] = int(state["epoch"]) + 1
                state["offset"] = None
                state["owner"] = None
                state["deleted_at_epoch"] = state["epoch"]
                self._write_state(state_path, pid_of(state), state)
            deleted += 1
        return deleted

    async def delete(self, *, force: bool = False) -> int:
        active = await self.members()
        if active and not force:
            raise DeleteRefused(self._group, active)
        deleted = await self._io(self._delete_blocking)
        log.warning(
            "group offsets deleted",
            extra={"group": self._group, "partitions": deleted, "forced": force},
        )
        return deleted

    async def current_epoch(self, pid: PartitionId) -> int | None:
        """The partition's current epoch (None before its first owner); for tools and tests."""
        state = await self._io(self._read_state, self._paths(pid)[2])
        return None if state is None else int(state["epoch"])

    # -- membership --------------------------------------------------------------------------

    def _members_blocking(self) -> list[str]:
        directory = self._root / "members"
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return []
        active: list[str] = []
        for name in names:
            if not name.endswith(".member"):
                continue
            path = directory / name
            try:
                fd = _try_lock(path)
            except FileNotFoundError:
                continue
            if fd is None:
                try:
                    info = json.loads(path.read_bytes() or b"{}")
                except (OSError, ValueError):
                    info = {}
                # A member writes its info right after locking: an empty file is one starting.
                active.append(str(info.get("member", name.removesuffix(".member"))))
                continue
            try:
                # Nobody holds it: its member is gone.  Unlink while locked; a member registering
                # under this name concurrently notices its inode is no longer at the path.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            finally:
                os.close(fd)
        return sorted(active)

    async def members(self) -> list[str]:
        return await self._io(self._members_blocking)

    def _register_blocking(self) -> int:
        directory = self._root / "members"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / (category_dir_name(self._member_id.encode()) + ".member")
        for _ in range(100):
            fd = _try_lock(path)
            if fd is None:
                raise CoordinationError(
                    f"member id {self._member_id!r} is already active in group {self._group!r}"
                )
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                info = {"member": self._member_id, "pid": os.getpid(), "host": socket.gethostname()}
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(info).encode(), 0)
                return fd
            os.close(fd)
        raise CoordinationError(f"could not register member {self._member_id!r}")

    def _unregister_blocking(self, fd: int) -> None:
        path = self._root / "members" / (category_dir_name(self._member_id.encode()) + ".member")
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        finally:
            os.close(fd)

    # -- ownership ---------------------------------------------------------------------------

    def _take_blocking(self, pid: PartitionId) -> tuple[int, int] | None:
        """(lock fd, new epoch) when the partition was free, else None."""
        lock, guard, state_path = self._paths(pid)
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = _try_lock(lock)
        if fd is None:
            return None
        try:
            with _guard(guard):
                state = self._read_state(state_path) or {"epoch": 0, "offset": None}
                state["epoch"] = int(state["epoch"]) + 1
                state["owner"] = self._member_id
                self._write_state(state_path, pid, state)
        except BaseException:
            os.close(fd)
            raise
        return fd, int(state["epoch"])

    def _epoch_blocking(self, pid: PartitionId) -> int | None:
        state = self._read_state(self._paths(pid)[2])
        return None if state is None else int(state["epoch"])

    def _release(self, pid: PartitionId) -> None:
        self._leases.pop(pid, None)
        fd = self._lock_fds.pop(pid, None)
        if fd is not None:
            os.close(fd)

    async def _revoke(self, listener: OwnershipListener, lease: Lease) -> None:
        await self._await_revocation(listener, lease, self._config.revoke_timeout_s)
        self._release(lease.pid)
        log.info(
            "partition released",
            extra={"group": self._group, "member": self._member_id, "partition": str(lease.pid)},
        )

    def _lose(self, listener: OwnershipListener, lease: Lease, reason: str) -> None:
        self._release(lease.pid)
        listener.lost(lease)
        self._log_lost(lease, reason)

    def _order(self, pid: PartitionId) -> tuple[int, bytes, int]:
        # Each member tries free partitions in its own pseudo-random order, so members starting
        # together rarely race for the same lock.
        key = self._member_id.encode() + pid.category + pid.partition.to_bytes(4, "big")
        return zlib.crc32(key), pid.category, pid.partition

    async def _rebalance(self, listener: OwnershipListener) -> None:
        for pid, lease in list(self._leases.items()):
            epoch = await self._io(self._epoch_blocking, pid)
            if epoch != lease.epoch and pid in self._leases:
                self._lose(listener, lease, f"epoch is now {epoch}")
        members = await self._io(self._members_blocking)
        wanted = self._partitions
        share = math.ceil(len(wanted) / max(1, len(members)))
        for pid in sorted(self._leases, key=self._order, reverse=True):
            if self._stopping:
                return
            if pid not in wanted or len(self._leases) > share:
                await self._revoke(listener, self._leases[pid])
        for pid in sorted(wanted - self._leases.keys(), key=self._order):
            if self._stopping or len(self._leases) >= share:
                return
            taken = await self._io(self._take_blocking, pid)
            if taken is None:
                continue
            fd, epoch = taken
            self._lock_fds[pid] = fd
            await self._grant(listener, Lease(pid, epoch))

    async def run(
        self,
        listener: OwnershipListener,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        if self._member_fd is not None:
            raise RuntimeError("this member is already running")
        self._member_fd = await self._io(self._register_blocking)
        log.info("member joined", extra={"group": self._group, "member": self._member_id})
        graceful = False
        try:
            task_status.started()
            while not self._stopping:
                self._wake = trio.Event()
                await self._rebalance(listener)
                with trio.move_on_after(self._config.rescan_interval_s):
                    await self._wake.wait()
            for lease in sorted(self._leases.values(), key=lambda lease: self._order(lease.pid)):
                await self._revoke(listener, lease)
            graceful = True
        finally:
            # Abrupt exit (cancelled, or an error): behave like a dying process.  Close the locks
            # first, then tell the listener, so nothing can write in between.
            for lease in list(self._leases.values()):
                self._release(lease.pid)
                listener.lost(lease)
            fd, self._member_fd = self._member_fd, None
            if fd is not None:
                if graceful:
                    with trio.CancelScope(shield=True):
                        await self._io(self._unregister_blocking, fd)
                else:
                    os.close(fd)
            log.info(
                "member left",
                extra={"group": self._group, "member": self._member_id, "graceful": graceful},
            )

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
