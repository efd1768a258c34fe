"""Coordination of a consumer group: who owns which partition, and the committed offsets.

The contract every coordinator keeps (the local one here, ZooKeeper's in production; the suite in
``tests/consumers/coordinator_contract.py`` checks it against each):

Membership
    A member is one ``Coordinator`` object, created for a group name and a member id.  It joins
    when ``run(listener)`` starts and leaves when ``run`` returns: after ``stop()`` (graceful)
    or when cancelled or its process dies (abrupt).  ``members()`` lists the group's active
    member ids.  The member tells the coordinator which partitions the group consumes as it
    discovers them (``set_partitions``); only those are assigned to it.

Ownership
    Each partition has at most one owner among the active members.  When the coordinator gives a
    partition to this member it calls ``listener.assigned(Lease(pid, epoch))``.  The epoch is a
    fencing token: it is bumped, durably, on every takeover, so it is strictly greater than any
    epoch a previous owner held.  Taking it back happens in one of two ways:

    * ``listener.revoking(lease)`` (graceful: rebalancing, ``stop()``): the member stops writing,
      commits what its sink confirmed with that lease's epoch, and returns; only then is the
      partition released.  A coordinator may bound the wait and release anyway.
    * ``listener.lost(lease)`` (abrupt: session lost or suspended, epoch found bumped, a fenced
      commit): ownership is already gone or in doubt; the member must stop writing at once.  It is
      synchronous so that nothing can run in between.  A lost partition may be assigned again
      later, always with a new ``assigned`` call.

    Assignment changes are delivered one at a time, in order, from the coordinator's own task.

Offsets
    The committed offset of a partition is the offset of the next message to consume (None: nothing
    committed; start at the earliest).  ``commit(pid, offset, epoch)`` is atomic: it succeeds only
    while ``epoch`` is the partition's current epoch, else it raises ``Fenced`` and changes nothing.
    Committed offsets never go backwards: a commit below the committed offset is accepted and
    ignored.  Only ``reset(pid, offset, force=...)`` (an operator's command) moves an offset
    anywhere, also backwards; it is refused with ``ResetRefused`` while the group has active
    members unless ``force`` is set, and it bumps the epoch, so the current owner (if any) is
    fenced and takes the partition up again from the new offset.  ``delete(force=...)`` (an
    operator's command too) forgets every committed offset of the group, so that a group taken
    out of the configuration no longer holds retention back; it is refused with ``DeleteRefused``
    while the group has active members unless ``force`` is set.  Members still running after a
    forced delete lose their partitions and take them up again from the earliest offset, as a
    new group would.  ``committed``, ``reset``, ``delete`` and ``members`` work without joining
    (``run`` need not be running).

Units
    The key of ownership and offsets is a ``PartitionId``: a partition of the one journal the
    group reads (the files in ``journal.dir``, or one ``fetch_from`` server).  A group that
    reads every journal registered in ZooKeeper (``consumers.coordination.registry``) keys
    them by ``Unit``, a ``PartitionId`` that also names its journal: ``(journal_id, category,
    partition)``.  Everything above holds per key, whichever kind it is; a ``Unit`` never
    equals the ``PartitionId`` of the same category and partition.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import trio

from journal import PartitionId

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unit(PartitionId):
    """A partition of the journal ``journal_id`` (32 lowercase hex digits: the UUID of its
    ``.journal-id``): what a group reading several log servers owns and commits."""

    journal_id: str

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.journal_id, str) or normal_journal_id(self.journal_id) != (
            self.journal_id
        ):
            raise ValueError(f"journal_id must be 32 lowercase hex digits, got {self.journal_id!r}")

    def __str__(self) -> str:
        """``<first 8 hex digits of the journal>:category/partition`` for logs and messages."""
        return f"{self.journal_id[:8]}:{super().__str__()}"

    @property
    def partition_id(self) -> PartitionId:
        """The partition in its own journal's terms (what its reader and fetch service take)."""
        return PartitionId(self.category, self.partition)


def normal_journal_id(text: str) -> str:
    """A journal identity (any UUID spelling) as 32 lowercase hex digits; ``ValueError`` when
    it is not a UUID."""
    return uuid.UUID(text).hex


def journal_of(pid: PartitionId) -> str | None:
    """The journal a key names: a ``Unit``'s, None for a plain partition."""
    return pid.journal_id if isinstance(pid, Unit) else None


def unit_key(pid: PartitionId) -> tuple[str, bytes, int]:
    """Sort order of keys: by journal (plain partitions first), category, partition."""
    return journal_of(pid) or "", pid.category, pid.partition


@dataclass(frozen=True)
class Lease:
    """Ownership of one partition by this member, valid while ``epoch`` is current."""

    pid: PartitionId
    epoch: int


class OwnershipListener(Protocol):
    """What a member does when ownership changes (see the module docstring)."""

    async def assigned(self, lease: Lease) -> None:
        """The partition is now ours: start consuming from its committed offset."""

    async def revoking(self, lease: Lease) -> None:
        """Stop writing, commit what the sink confirmed, return; the partition is then released."""

    def lost(self, lease: Lease) -> None:
        """Ownership is gone or in doubt: stop writing at once (no commit is possible)."""


class Coordinator(Protocol):
    """One member of a consumer group (see the module docstring for the contract)."""

    @property
    def group(self) -> str: ...

    @property
    def member_id(self) -> str: ...

    def set_partitions(self, pids: Iterable[PartitionId]) -> None:
        """The group's partitions as this member sees them; assignment considers these only."""

    def owned(self) -> dict[PartitionId, int]:
        """The partitions this member owns now, with their epochs."""

    async def run(
        self,
        listener: OwnershipListener,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Join the group (``started`` once joined) and keep ownership until ``stop()``."""

    def stop(self) -> None:
        """Leave gracefully: revoke every partition (listener commits), release, leave."""

    async def commit(self, pid: PartitionId, offset: int, epoch: int) -> None:
        """Store ``offset`` if ``epoch`` is current (else ``Fenced``); never moves backwards."""

    async def committed(self, pid: PartitionId) -> int | None:
        """The committed offset (the next to consume), None when nothing was committed."""

    async def reset(self, pid: PartitionId, offset: int, *, force: bool = False) -> None:
        """Set the offset, in any direction; refused while members are active unless forced."""

    async def delete(self, *, force: bool = False) -> int:
        """Forget every committed offset (and epoch) of the group; returns how many partitions
        it had.  Refused while members are active unless forced."""

    async def members(self) -> list[str]:
        """The ids of the group's active members, sorted."""

    async def all_committed(self) -> dict[PartitionId, int | None]:
        """Every partition the group has state for, with its committed offset (for tools and
        retention floors)."""


class MemberState:
    """Identity, visible partitions and leases, kept the same way by every coordinator.

    Subclasses set ``_group``, ``_member_id``, ``_partitions``, ``_leases`` and ``_wake`` (set
    whenever the member should re-examine its assignment).
    """

    _group: str
    _member_id: str
    _partitions: frozenset[PartitionId]
    _leases: dict[PartitionId, Lease]
    _wake: trio.Event

    @property
    def group(self) -> str:
        return self._group

    @property
    def member_id(self) -> str:
        return self._member_id

    def set_partitions(self, pids: Iterable[PartitionId]) -> None:
        new = frozenset(pids)
        if new != self._partitions:
            self._partitions = new
            self._wake.set()

    def owned(self) -> dict[PartitionId, int]:
        return {pid: lease.epoch for pid, lease in self._leases.items()}

    async def _grant(self, listener: OwnershipListener, lease: Lease) -> None:
        """Record a partition just taken, log it, and hand it to the listener."""
        self._leases[lease.pid] = lease
        log.info(
            "partition assigned",
            extra={
                "group": self._group,
                "member": self._member_id,
                "partition": str(lease.pid),
                "epoch": lease.epoch,
            },
        )
        await listener.assigned(lease)

    def _log_lost(self, lease: Lease, reason: str) -> None:
        log.warning(
            "partition lost",
            extra={
                "group": self._group,
                "member": self._member_id,
                "partition": str(lease.pid),
                "epoch": lease.epoch,
                "reason": reason,
            },
        )

    async def _await_revocation(
        self, listener: OwnershipListener, lease: Lease, timeout_s: float
    ) -> None:
        """``listener.revoking(lease)``, bounded: past ``timeout_s`` the partition is released
        anyway (a sink stuck on a dead server must not hold a rebalance)."""
        with trio.move_on_after(timeout_s) as scope:
            await listener.revoking(lease)
        if scope.cancelled_caught:
            log.warning(
                "revocation timed out; releasing anyway",
                extra={
                    "group": self._group,
                    "member": self._member_id,
                    "partition": str(lease.pid),
                },
            )
