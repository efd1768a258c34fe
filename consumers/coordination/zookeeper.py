"""The ZooKeeper coordinator: a consumer group's members on any number of hosts.

Znode layout, under the client's chroot (``ZooKeeperConfig.chroot``, ``/scribe-pipeline`` by
default).  ``<group>``, ``<member>`` and ``<category>`` are the journal's injective, '/'-free
``category_dir_name`` encoding of the group name, member id and category; ``<n>`` is the
partition number in decimal::

    /groups/<group>/members/<member>                 ephemeral  {"member", "host", "pid"}
    /groups/<group>/owners/<category>/<n>            ephemeral  {"member", "epoch"}
    /groups/<group>/partitions/<category>/<n>        persistent {"format": 1, "group",
                                                                 "category": hex, "partition",
                                                                 "deleted_at_epoch" (delete)}
    /groups/<group>/partitions/<category>/<n>/epoch  persistent  the epoch, decimal
    /groups/<group>/partitions/<category>/<n>/offset persistent  next offset to consume,
                                                                 decimal; empty: none committed

A group that reads the journal registry (``consumers.coordination.registry``) keys its state
by ``Unit`` (journal id, category, partition): the same ``owners`` and ``partitions`` nodes,
one level down under the unit's journal (``<journal>``: 32 hex digits), and the partition node
also holds ``"journal_id"``.  Plain partitions (the local journal, one ``fetch_from`` server)
keep the layout above, so nothing changes for a group that does not read the registry::

    /groups/<group>/journals/<journal>/owners/<category>/<n>          as owners/ above
    /groups/<group>/journals/<journal>/partitions/<category>/<n>      as partitions/ above,
                                                                       with .../epoch, .../offset

Offsets stored without a journal id are migrated, not lost: a member built with a
``legacy_journal_id`` (the identity of its local journal.dir, the journal those offsets were
committed against) creates a unit of that journal in one transaction with the retirement of the
old partition: the unit's offset is the old offset, the old epoch is bumped (fencing any member
still on the old layout), its offset emptied and its node tombstoned (``deleted_at_epoch``,
``migrated_to``), so the old offset is neither listed twice nor migrated twice.  A unit of
another journal leaves an old offset where it is and logs it; ``pipeline offsets show`` lists
it without journal id until the group's members on that server's host migrate it, or ``pipeline
offsets delete`` forgets it.

Invariants (this is where fencing lives):

* A partition node and its ``epoch`` ("0") and ``offset`` ("") children are created together in
  one transaction.  The epoch node is only ever changed by a versioned set (compare-and-set)
  from version E to data E+1, so its data always equals its version: *the epoch is the epoch
  node's version*, and "the epoch is still E" is ZooKeeper's own ``check(epoch, version=E)``.
* Takeover is one transaction: create the owner node (ephemeral; fails when anyone owns the
  partition) and move the epoch from E to E+1.  A member whose owner node survived a connection
  suspension (same session) takes it up again the same way, setting its owner node at its version
  instead of creating it.  So at most one session holds an owner node, and every lease carries an
  epoch no earlier lease had.
* A commit is one transaction: ``check(epoch, version=E)`` and set the offset at the version it
  was read at.  A member that lost its session (paused, partitioned) has been taken over: the
  epoch moved, the check fails, nothing changes (``Fenced``).  The versioned set keeps a commit
  from overwriting a reset it raced with; a commit below the committed offset writes nothing.
* A reset is one transaction: the epoch from E to E+1 and the new offset, so the current owner's
  next commit is fenced and whoever takes the partition next starts at the reset offset.
* A delete (``delete``) is one transaction per partition: the epoch from E to E+1, the offset
  emptied and ``deleted_at_epoch = E+1`` in the partition node.  While the epoch still equals
  it the partition is not listed (``all_committed``); the next takeover bumps the epoch past it.
  Nodes are never removed, so an epoch is never handed out twice.
* Release is graceful only: the listener commits (``revoking``), then the owner node is deleted
  at its version, and only by the session that created it.

Connection states: SUSPENDED calls ``listener.lost`` for every lease at once (the member stops
writing; ZooKeeper may already have given its partitions away).  CONNECTED again in the same
session: the member node is checked and the round runs again; owner nodes still held are taken
up again with a bumped epoch (a new lease), or released when the plan gives them away.  LOST (the
session expired, every ephemeral is gone): everything is dropped, kazoo opens a new session and
the member registers again.

Assignment (``plan_assignment``) is deterministic and sticky: each member computes it from the
sorted member list, the partitions it sees and the current owners.  A round runs only once the
member list has been stable for ``settle_s``; each member revokes what the plan gives away first,
then takes what the plan gives it as soon as it is free.  A dead member's partitions are owned
again within about the session timeout plus ``settle_s``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import (
    AbstractAsyncContextManager,
    AsyncExitStack,
    asynccontextmanager,
    contextmanager,
    suppress,
)
from dataclasses import dataclass

import trio

from consumers import errors as zkerr
from consumers.coordination.protocol import (
    Lease,
    MemberState,
    OwnershipListener,
    Unit,
    journal_of,
    unit_key,
)
from consumers.coordination.registry import Registration, registered_journals
from consumers.coordination.zk_client import (
    ConnectionState,
    TxnCheck,
    TxnCreate,
    TxnOp,
    TxnSet,
    ZooKeeperClient,
    ZooKeeperConfig,
    open_zookeeper,
)
from consumers.errors import (
    CoordinationError,
    CoordinatorUnavailable,
    DeleteRefused,
    Fenced,
    ResetRefused,
)
from journal import PartitionId, category_dir_name, category_from_dir_name

log = logging.getLogger(__name__)

PARTITION_FORMAT = 1
GROUPS = "/groups"
JOURNALS = "journals"  # under a group: the units of each registered journal

OpenClient = Callable[[ZooKeeperConfig], AbstractAsyncContextManager[ZooKeeperClient]]


def plan_assignment(
    members: Iterable[str],
    partitions: Iterable[PartitionId],
    owners: Mapping[PartitionId, str],
) -> dict[str, set[PartitionId]]:
    """Which partitions each member should own: deterministic, balanced and sticky.

    Every member gets floor(P/M) partitions, and the P mod M members owning the most now get one
    more (ties: the smaller id).  Each member keeps what it owns, in partition order, up to its
    share; the rest go, in partition order, to the member with the most room left (ties: the
    smaller id).  ``owners`` maps partitions to their current owner; owners that are not members
    are ignored.
    """
    names = sorted(set(members))
    wanted = sorted(set(partitions), key=_pid_key)
    plan: dict[str, set[PartitionId]] = {name: set() for name in names}
    if not names:
        return plan
    current: dict[str, list[PartitionId]] = {name: [] for name in names}
    for pid in wanted:
        owner = owners.get(pid)
        if owner in current:
            current[owner].append(pid)
    base, extra = divmod(len(wanted), len(names))
    by_holding = sorted(names, key=lambda name: (-len(current[name]), name))
    quota = {name: base + (1 if i < extra else 0) for i, name in enumerate(by_holding)}
    taken: set[PartitionId] = set()
    for name in names:
        kept = current[name][: quota[name]]
        plan[name].update(kept)
        taken.update(kept)
    for pid in wanted:
        if pid in taken:
            continue
        name = min(names, key=lambda n: (len(plan[n]) - quota[n], n))
        plan[name].add(pid)
    return plan


def _pid_key(pid: PartitionId) -> tuple[str, bytes, int]:
    return unit_key(pid)


def _decode_name(name: str) -> str | None:
    try:
        return category_from_dir_name(name).decode("utf-8", "surrogateescape")
    except ValueError:
        return None


def _parse_offset(data: bytes) -> int | None:
    text = data.strip()
    return int(text) if text else None


def _connected(client: ZooKeeperClient) -> bool:
    # A function, not an inline test: the state changes across every await.
    return client.state is ConnectionState.CONNECTED


@dataclass(frozen=True)
class _Owner:
    member: str
    mine: bool  # the node belongs to this member's current session
    version: int


async def list_groups(
    config: ZooKeeperConfig, open_client: OpenClient = open_zookeeper
) -> list[str]:
    """The groups that have state under ``config``'s chroot."""
    with _translated():
        async with open_client(config) as client:
            try:
                names = await client.get_children(GROUPS)
            except zkerr.NoNode:
                return []
    return sorted(name for name in map(_decode_name, names) if name is not None)


@contextmanager
def _translated() -> Iterator[None]:
    """ZooKeeper's errors as the coordination contract's."""
    try:
        yield
    except (zkerr.ConnectionInterrupted, zkerr.SessionLost, zkerr.ZooKeeperUnavailable) as exc:
        raise CoordinatorUnavailable(str(exc)) from exc
    except zkerr.ZooKeeperError as exc:
        raise CoordinationError(str(exc)) from exc


class ZooKeeperCoordinator(MemberState):
    """A member of ``group`` coordinated through ZooKeeper (contract: ``coordination.protocol``).

    ``committed``, ``commit``, ``reset``, ``members`` and ``all_committed`` use the member's
    session while ``run`` is running, else a short session of their own.
    """

    def __init__(
        self,
        config: ZooKeeperConfig,
        group: str,
        member_id: str | None = None,
        *,
        settle_s: float = 1.0,
        rescan_interval_s: float = 1.0,
        retry_interval_s: float = 0.2,
        revoke_timeout_s: float = 30.0,
        open_client: OpenClient = open_zookeeper,
        legacy_journal_id: str | None = None,
    ) -> None:
        """``legacy_journal_id``: the journal whose units take over the offsets stored without
        a journal id (the local journal's, for a group that reads the registry)."""
        if not group:
            raise ValueError("group must not be empty")
        for name, value in (
            ("settle_s", settle_s),
            ("rescan_interval_s", rescan_interval_s),
            ("retry_interval_s", retry_interval_s),
            ("revoke_timeout_s", revoke_timeout_s),
        ):
            if not (math.isfinite(value) and value >= 0) or (name != "settle_s" and value == 0):
                raise ValueError(f"{name} must be positive, got {value!r}")
        self._zk = config
        self._group = group
        self._member_id = member_id or f"{socket.gethostname()}-{os.getpid()}-{id(self):x}"
        self._settle_s = settle_s
        self._rescan_interval_s = rescan_interval_s
        self._retry_interval_s = retry_interval_s
        self._revoke_timeout_s = revoke_timeout_s
        self._open = open_client
        self._legacy_journal_id = legacy_journal_id
        self._base = f"{GROUPS}/{category_dir_name(group.encode('utf-8', 'surrogateescape'))}"
        self._partitions: frozenset[PartitionId] = frozenset()
        self._leases: dict[PartitionId, Lease] = {}
        self._client: ZooKeeperClient | None = None
        self._wake = trio.Event()
        self._stopping = False
        self._running = False
        self._rejoin = False
        self._verify_at = -math.inf
        self._last_members: list[str] | None = None
        self._settle_until = -math.inf
        self._ensured: set[str] = set()
        self.counters = {
            "taken": 0,
            "released": 0,
            "lost": 0,
            "fenced": 0,
            "suspended": 0,
            "sessions_lost": 0,
        }

    # -- identity and local state ------------------------------------------------------------

    # -- paths -------------------------------------------------------------------------------

    def _members_dir(self) -> str:
        return f"{self._base}/members"

    def _member_path(self, member: str) -> str:
        return (
            f"{self._members_dir()}/{category_dir_name(member.encode('utf-8', 'surrogateescape'))}"
        )

    def _unit_base(self, pid: PartitionId) -> str:
        """Where a key's nodes live: the group's own for a plain partition, its journal's
        for a ``Unit``."""
        journal_id = journal_of(pid)
        return self._base if journal_id is None else f"{self._base}/{JOURNALS}/{journal_id}"

    def _owner_dir(self, pid: PartitionId) -> str:
        return f"{self._unit_base(pid)}/owners/{category_dir_name(pid.category)}"

    def _owner_path(self, pid: PartitionId) -> str:
        return f"{self._owner_dir(pid)}/{pid.partition}"

    def _partition_dir(self, pid: PartitionId) -> str:
        return f"{self._unit_base(pid)}/partitions/{category_dir_name(pid.category)}"

    def _partition_path(self, pid: PartitionId) -> str:
        return f"{self._partition_dir(pid)}/{pid.partition}"

    # -- sessions ----------------------------------------------------------------------------

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[ZooKeeperClient]:
        if self._client is not None:
            yield self._client
            return
        async with self._open(self._zk) as client:
            yield client

    async def _ensure(self, client: ZooKeeperClient, path: str) -> None:
        if path not in self._ensured:
            await client.ensure_path(path)
            self._ensured.add(path)

    async def _ensure_partition(self, client: ZooKeeperClient, pid: PartitionId) -> None:
        path = self._partition_path(pid)
        if path in self._ensured:
            return
        if await client.exists(f"{path}/offset") is None:
            await self._ensure(client, self._partition_dir(pid))
            meta: dict[str, object] = {
                "format": PARTITION_FORMAT,
                "group": self._group,
                "category": pid.category.hex(),
                "partition": pid.partition,
            }
            journal_id = journal_of(pid)
            if journal_id is not None:
                meta["journal_id"] = journal_id
            with suppress(zkerr.NodeExists):  # another member created it first
                await self._create_partition(client, pid, meta)
        self._ensured.add(path)

    async def _create_partition(
        self, client: ZooKeeperClient, pid: PartitionId, meta: dict[str, object]
    ) -> None:
        """Create a key's nodes; a ``Unit`` of the legacy journal takes over the offset its
        partition has in the layout without journal ids, in the same transaction (see the
        module docstring)."""
        path = self._partition_path(pid)
        for _ in range(100):
            offset: bytes = b""
            legacy_ops: list[TxnOp] = []
            if isinstance(pid, Unit):
                legacy = await self._legacy_state(client, pid)
                if legacy is not None:
                    offset, legacy_ops = legacy
            try:
                await client.transaction(
                    [
                        TxnCreate(path, json.dumps(meta, sort_keys=True).encode()),
                        TxnCreate(f"{path}/epoch", b"0"),
                        TxnCreate(f"{path}/offset", offset),
                        *legacy_ops,
                    ]
                )
            except zkerr.BadVersion:
                continue  # the legacy partition moved meanwhile: look again
            if legacy_ops:
                log.warning(
                    "committed offset migrated to the journal's unit",
                    extra={
                        "group": self._group,
                        "partition": str(pid),
                        "offset": _parse_offset(offset),
                    },
                )
            return
        raise CoordinationError(f"{pid}: the legacy partition keeps changing; creation abandoned")

    async def _legacy_state(
        self, client: ZooKeeperClient, unit: Unit
    ) -> tuple[bytes, list[TxnOp]] | None:
        """The offset of ``unit``'s partition in the layout without journal ids, and the steps
        that retire it there (epoch bumped, offset emptied, tombstoned, ``migrated_to``).
        None when there is nothing to migrate: no such partition, deleted or migrated already,
        or ``unit`` is not of the legacy journal (then a stored offset is only logged)."""
        legacy = unit.partition_id
        path = self._partition_path(legacy)
        try:
            raw, meta_stat = await client.get(path)
            data, offset_stat = await client.get(f"{path}/offset")
        except zkerr.NoNode:
            return None
        version = await self._current_epoch(client, legacy)
        meta = json.loads(raw)
        if version is None or meta.get("deleted_at_epoch") == version:
            return None
        if unit.journal_id != self._legacy_journal_id:
            if _parse_offset(data) is not None:
                log.warning(
                    "an offset without journal id is not this unit's; left where it is",
                    extra={
                        "group": self._group,
                        "partition": str(unit),
                        "legacy_offset": _parse_offset(data),
                        "legacy_journal": self._legacy_journal_id,
                    },
                )
            return None
        meta["deleted_at_epoch"] = version + 1
        meta["migrated_to"] = unit.journal_id
        return data, [
            TxnSet(f"{path}/epoch", str(version + 1).encode(), version),
            TxnSet(f"{path}/offset", b"", offset_stat.version),
            TxnSet(path, json.dumps(meta, sort_keys=True).encode(), meta_stat.version),
        ]

    # -- offsets -----------------------------------------------------------------------------

    async def commit(self, pid: PartitionId, offset: int, epoch: int) -> None:
        if offset < 0:
            raise ValueError(f"offset must not be negative, got {offset}")
        with _translated():
            async with self._session() as client:
                try:
                    await self._commit_on(client, pid, offset, epoch)
                except Fenced:
                    self.counters["fenced"] += 1
                    self._verify_at = -math.inf  # let the next round find the bumped epoch
                    self._wake.set()
                    raise

    async def _current_epoch(self, client: ZooKeeperClient, pid: PartitionId) -> int | None:
        stat = await client.exists(f"{self._partition_path(pid)}/epoch")
        return None if stat is None else stat.version

    async def _commit_on(
        self, client: ZooKeeperClient, pid: PartitionId, offset: int, epoch: int
    ) -> None:
        base = self._partition_path(pid)
        epoch_path, offset_path = f"{base}/epoch", f"{base}/offset"
        for _ in range(100):
            try:
                data, stat = await client.get(offset_path)
            except zkerr.NoNode:
                raise Fenced(pid, epoch, None) from None  # never owned by anyone
            committed = _parse_offset(data)
            if committed is not None and offset <= committed:
                current = await self._current_epoch(client, pid)
                if current != epoch:
                    raise Fenced(pid, epoch, current)
                return  # never backwards; equal is a no-op
            try:
                # The fencing transaction: nothing moves unless the epoch is still ours.
                await client.transaction(
                    [
                        TxnCheck(epoch_path, epoch),
                        TxnSet(offset_path, str(offset).encode(), stat.version),
                    ]
                )
                return
            except (zkerr.BadVersion, zkerr.NoNode) as exc:
                if exc.path == epoch_path:
                    current = await self._current_epoch(client, pid)
                    raise Fenced(pid, epoch, current) from None
                # The offset changed since we read it (a reset raced with us): read it again.
        raise CoordinationError(f"{pid}: the offset keeps changing; commit abandoned")

    async def committed(self, pid: PartitionId) -> int | None:
        with _translated():
            async with self._session() as client:
                try:
                    data, _ = await client.get(f"{self._partition_path(pid)}/offset")
                except zkerr.NoNode:
                    return None
                return _parse_offset(data)

    async def reset(self, pid: PartitionId, offset: int, *, force: bool = False) -> None:
        if offset < 0:
            raise ValueError(f"offset must not be negative, got {offset}")
        with _translated():
            async with self._session() as client:
                active = await self._member_ids(client)
                if active and not force:
                    raise ResetRefused(self._group, active)
                await self._ensure_partition(client, pid)
                base = self._partition_path(pid)
                for _ in range(100):
                    version = await self._current_epoch(client, pid)
                    if version is None:
                        raise CoordinationError(f"{pid}: epoch node missing")
                    try:
                        # The bump fences the current owner; whoever takes the partition next
                        # starts from the reset offset.
                        await client.transaction(
                            [
                                TxnSet(f"{base}/epoch", str(version + 1).encode(), version),
                                TxnSet(f"{base}/offset", str(offset).encode()),
                            ]
                        )
                        break
                    except zkerr.BadVersion:
                        continue
                else:
                    raise CoordinationError(f"{pid}: the epoch keeps changing; reset abandoned")
        log.warning(
            "offset reset",
            extra={"group": self._group, "partition": str(pid), "offset": offset, "forced": force},
        )

    async def all_committed(self) -> dict[PartitionId, int | None]:
        """Every partition the group has state for, with its committed offset (for tools and
        retention floors)."""
        with _translated():
            async with self._session() as client:
                return await self._all_committed_on(client)

    async def _all_committed_on(self, client: ZooKeeperClient) -> dict[PartitionId, int | None]:
        out = await self._committed_under(client, self._base, None)
        try:
            journals = await client.get_children(f"{self._base}/{JOURNALS}")
        except zkerr.NoNode:
            return out
        for journal_id in sorted(journals):
            base = f"{self._base}/{JOURNALS}/{journal_id}"
            out.update(await self._committed_under(client, base, journal_id))
        return out

    async def _committed_under(
        self, client: ZooKeeperClient, base: str, journal_id: str | None
    ) -> dict[PartitionId, int | None]:
        """The keys under ``base`` (the group's own, or one journal's) with their offsets."""
        out: dict[PartitionId, int | None] = {}
        try:
            categories = await client.get_children(f"{base}/partitions")
        except zkerr.NoNode:
            return out
        for category in categories:
            directory = f"{base}/partitions/{category}"
            with suppress(zkerr.NoNode):
                for name in await client.get_children(directory):
                    try:
                        meta, _ = await client.get(f"{directory}/{name}")
                        data, _ = await client.get(f"{directory}/{name}/offset")
                        epoch = await client.exists(f"{directory}/{name}/epoch")
                    except zkerr.NoNode:
                        continue
                    info = json.loads(meta)
                    if epoch is not None and info.get("deleted_at_epoch") == epoch.version:
                        continue  # deleted (or migrated), and nobody has taken it since
                    raw_category = bytes.fromhex(info["category"])
                    pid: PartitionId = (
                        PartitionId(raw_category, int(name))
                        if journal_id is None
                        else Unit(raw_category, int(name), journal_id)
                    )
                    out[pid] = _parse_offset(data)
        return out

    async def delete(self, *, force: bool = False) -> int:
        deleted = 0
        with _translated():
            async with self._session() as client:
                active = await self._member_ids(client)
                if active and not force:
                    raise DeleteRefused(self._group, active)
                for pid in await self._all_committed_on(client):
                    if await self._tombstone(client, pid):
                        deleted += 1
        log.warning(
            "group offsets deleted",
            extra={"group": self._group, "partitions": deleted, "forced": force},
        )
        return deleted

    async def _tombstone(self, client: ZooKeeperClient, pid: PartitionId) -> bool:
        """Delete one partition's offset: a tombstone in one transaction (see the module
        docstring); False when it was deleted already or is gone."""
        path = self._partition_path(pid)
        for _ in range(100):
            try:
                raw, meta_stat = await client.get(path)
            except zkerr.NoNode:
                return False
            version = await self._current_epoch(client, pid)
            meta = json.loads(raw)
            if version is None or meta.get("deleted_at_epoch") == version:
                return False
            meta["deleted_at_epoch"] = version + 1
            try:
                await client.transaction(
                    [
                        TxnSet(f"{path}/epoch", str(version + 1).encode(), version),
                        TxnSet(f"{path}/offset", b""),
                        TxnSet(path, json.dumps(meta, sort_keys=True).encode(), meta_stat.version),
                    ]
                )
                return True
            except zkerr.BadVersion:
                continue  # a takeover or another delete raced with us: look again
        raise CoordinationError(f"{pid}: the epoch keeps changing; delete abandoned")

    async def current_epoch(self, pid: PartitionId) -> int | None:
        """The partition's current epoch (None before its first owner); for tools and tests."""
        with _translated():
            async with self._session() as client:
                return await self._current_epoch(client, pid)

    async def owners(self) -> dict[PartitionId, str]:
        """Who owns which of the partitions this member knows, as ZooKeeper says now."""
        with _translated():
            async with self._session() as client:
                found = await self._owners(client, self._partitions)
        return {pid: owner.member for pid, owner in found.items()}

    async def journals(self) -> dict[str, Registration]:
        """The journals registered now (``consumers.coordination.registry``), by journal id."""
        with _translated():
            async with self._session() as client:
                return await registered_journals(client)

    # -- membership --------------------------------------------------------------------------

    async def _member_ids(self, client: ZooKeeperClient) -> list[str]:
        try:
            names = await client.get_children(self._members_dir())
        except zkerr.NoNode:
            return []
        members: list[str] = []
        for name in names:
            member = _decode_name(name)
            if member is None:  # a hashed (very long) id: its node holds it
                try:
                    data, _ = await client.get(f"{self._members_dir()}/{name}")
                except zkerr.NoNode:
                    continue
                member = str(json.loads(data)["member"])
            members.append(member)
        return sorted(members)

    async def members(self) -> list[str]:
        with _translated():
            async with self._session() as client:
                return await self._member_ids(client)

    async def _register(self, client: ZooKeeperClient, wait_s: float) -> None:
        """Create this member's ephemeral node; wait up to ``wait_s`` for an older session's node
        of the same id (a restarted process) to expire."""
        await self._ensure(client, self._members_dir())
        path = self._member_path(self._member_id)
        info = {"member": self._member_id, "host": socket.gethostname(), "pid": os.getpid()}
        deadline = trio.current_time() + wait_s
        while True:
            try:
                await client.create(path, json.dumps(info).encode(), ephemeral=True)
                return
            except zkerr.NodeExists:
                stat = await client.exists(path)
                if stat is not None and stat.ephemeral_owner == client.session_id:
                    return  # ours: an earlier attempt's outcome was unknown
                if trio.current_time() >= deadline:
                    raise CoordinationError(
                        f"member id {self._member_id!r} is already active in group {self._group!r}"
                    ) from None
            await trio.sleep(self._retry_interval_s)

    # -- ownership ---------------------------------------------------------------------------

    async def _owners(
        self, client: ZooKeeperClient, pids: Iterable[PartitionId]
    ) -> dict[PartitionId, _Owner]:
        by_dir: dict[str, dict[int, PartitionId]] = {}
        for pid in pids:
            by_dir.setdefault(self._owner_dir(pid), {})[pid.partition] = pid
        found: dict[PartitionId, _Owner] = {}
        for directory, numbers in sorted(by_dir.items()):
            try:
                names = await client.get_children(directory)
            except zkerr.NoNode:
                continue
            for name in names:
                if not name.isdigit() or int(name) not in numbers:
                    continue
                pid = numbers[int(name)]
                try:
                    data, stat = await client.get(self._owner_path(pid))
                except zkerr.NoNode:
                    continue
                member = str(json.loads(data).get("member", ""))
                mine = stat.ephemeral_owner == client.session_id
                found[pid] = _Owner(member, mine, stat.version)
        return found

    async def _take(
        self, client: ZooKeeperClient, pid: PartitionId, held_version: int | None
    ) -> int | None:
        """Own ``pid`` with a new epoch; None when someone else got it first.  ``held_version``
        is the version of this session's surviving owner node, if any."""
        await self._ensure_partition(client, pid)
        await self._ensure(client, self._owner_dir(pid))
        epoch_path = f"{self._partition_path(pid)}/epoch"
        version = await self._current_epoch(client, pid)
        if version is None:
            return None
        epoch = version + 1
        data = json.dumps({"member": self._member_id, "epoch": epoch}).encode()
        owner_path = self._owner_path(pid)
        claim = (
            TxnCreate(owner_path, data, ephemeral=True)
            if held_version is None
            else TxnSet(owner_path, data, held_version)
        )
        try:
            # Ownership and the new epoch in one step: no one can own it with an old epoch.
            await client.transaction([claim, TxnSet(epoch_path, str(epoch).encode(), version)])
        except (zkerr.NodeExists, zkerr.BadVersion, zkerr.NoNode):
            return None
        return epoch

    async def _release_node(self, client: ZooKeeperClient, pid: PartitionId) -> None:
        """Delete this session's owner node of ``pid`` (never another session's)."""
        path = self._owner_path(pid)
        try:
            stat = await client.exists(path)
            if stat is not None and stat.ephemeral_owner == client.session_id:
                await client.delete(path, version=stat.version)
        except (zkerr.NoNode, zkerr.BadVersion):
            pass
        except zkerr.ZooKeeperError as exc:
            # The node stays ours until the session ends; the next round releases it.
            log.warning(
                "could not release partition node",
                extra={"group": self._group, "partition": str(pid), "error": str(exc)},
            )

    def _lose(self, listener: OwnershipListener, lease: Lease, reason: str) -> None:
        if self._leases.get(lease.pid) != lease:
            return
        del self._leases[lease.pid]
        self.counters["lost"] += 1
        listener.lost(lease)
        self._log_lost(lease, reason)

    def _lose_all(self, listener: OwnershipListener, reason: str) -> None:
        for lease in sorted(self._leases.values(), key=lambda lease: _pid_key(lease.pid)):
            self._lose(listener, lease, reason)

    async def _revoke(
        self, client: ZooKeeperClient, listener: OwnershipListener, lease: Lease
    ) -> None:
        await self._await_revocation(listener, lease, self._revoke_timeout_s)
        if self._leases.get(lease.pid) == lease:
            del self._leases[lease.pid]
        await self._release_node(client, lease.pid)
        self.counters["released"] += 1
        log.info(
            "partition released",
            extra={"group": self._group, "member": self._member_id, "partition": str(lease.pid)},
        )

    async def _verify(self, client: ZooKeeperClient, listener: OwnershipListener) -> None:
        """Drop leases whose owner node or epoch is no longer ours."""
        for pid, lease in sorted(self._leases.items(), key=lambda item: _pid_key(item[0])):
            owner = await client.exists(self._owner_path(pid))
            epoch = await self._current_epoch(client, pid)
            if self._leases.get(pid) != lease:
                continue
            if owner is None or owner.ephemeral_owner != client.session_id:
                self._lose(listener, lease, "ownership node gone")
            elif epoch != lease.epoch:
                self._lose(listener, lease, f"epoch is now {epoch}")
                await self._release_node(client, pid)

    async def _rebalance(self, client: ZooKeeperClient, listener: OwnershipListener) -> float:
        """One assignment round; returns how long to wait before the next one."""
        members = await self._member_ids(client)
        now = trio.current_time()
        if members != self._last_members:
            log.info(
                "group membership",
                extra={"group": self._group, "member": self._member_id, "members": members},
            )
            self._last_members = members
            self._settle_until = now + self._settle_s
        if now < self._settle_until:
            return self._settle_until - now
        if self._member_id not in members:
            self._rejoin = True  # our node is gone (the session was replaced): register again
            return self._retry_interval_s
        wanted = self._partitions
        owners = await self._owners(client, wanted | self._leases.keys())
        plan = plan_assignment(members, wanted, {pid: o.member for pid, o in owners.items()})
        target = plan.get(self._member_id, set())
        for pid in sorted(self._leases, key=_pid_key):
            if self._stopping:
                return 0
            lease = self._leases.get(pid)
            if lease is not None and pid not in target:
                await self._revoke(client, listener, lease)
        for pid, held in sorted(owners.items(), key=lambda item: _pid_key(item[0])):
            # Held since before a suspension, and given to someone else now.
            if held.mine and pid not in self._leases and pid not in target:
                await self._release_node(client, pid)
        converged = True
        for pid in sorted(target - self._leases.keys(), key=_pid_key):
            if self._stopping or not _connected(client):
                return self._retry_interval_s
            owner = owners.get(pid)
            if owner is not None and not owner.mine:
                converged = False  # its owner has not released it yet
                continue
            epoch = await self._take(client, pid, None if owner is None else owner.version)
            if epoch is None:
                converged = False
                continue
            if not _connected(client):  # suspended meanwhile
                return self._retry_interval_s  # the owner node stays ours: taken up on reconnect
            self.counters["taken"] += 1
            await self._grant(listener, Lease(pid, epoch))
        return self._rescan_interval_s if converged else self._retry_interval_s

    # -- the member's task -------------------------------------------------------------------

    async def _round(self, client: ZooKeeperClient, listener: OwnershipListener) -> float:
        if self._rejoin:
            await self._register(client, self._zk.session_timeout_s)
            self._rejoin = False
        if trio.current_time() >= self._verify_at:
            await self._verify(client, listener)
            self._verify_at = trio.current_time() + self._rescan_interval_s
        return await self._rebalance(client, listener)

    async def _loop(self, client: ZooKeeperClient, listener: OwnershipListener) -> None:
        while not self._stopping:
            self._wake = trio.Event()
            delay = self._retry_interval_s
            if _connected(client):
                try:
                    delay = await self._round(client, listener)
                except (zkerr.ZooKeeperError, CoordinationError) as exc:
                    log.warning(
                        "coordination round failed; retrying",
                        extra={"group": self._group, "member": self._member_id, "error": str(exc)},
                    )
            with trio.move_on_after(delay):
                await self._wake.wait()

    async def _watch_connection(self, client: ZooKeeperClient, listener: OwnershipListener) -> None:
        async for event in client.connection_events:
            if event.state is ConnectionState.SUSPENDED:
                # Stop writing at once: ZooKeeper may be giving our partitions away right now.
                self.counters["suspended"] += 1
                self._lose_all(listener, "connection suspended")
            elif event.state is ConnectionState.LOST:
                self.counters["sessions_lost"] += 1
                self._lose_all(listener, "session lost")
                self._rejoin = True
            else:
                self._rejoin = True  # check our member node (a new session has none)
                self._verify_at = -math.inf
            log.warning(
                "zookeeper connection",
                extra={
                    "group": self._group,
                    "member": self._member_id,
                    "state": event.state.value,
                },
            )
            self._wake.set()

    async def _watch_members(self, client: ZooKeeperClient) -> None:
        while True:
            try:
                _, watch = await client.get_children_watched(self._members_dir())
            except zkerr.ZooKeeperError:
                await trio.sleep(self._retry_interval_s)
                continue
            await watch.wait()  # also fires when the session expires
            self._wake.set()

    async def run(
        self,
        listener: OwnershipListener,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        if self._running:
            raise RuntimeError("this member is already running")
        self._running = True
        graceful = False
        try:
            async with AsyncExitStack() as stack:
                with _translated():
                    session = await stack.enter_async_context(self._open(self._zk))
                try:
                    self._client = session
                    with _translated():
                        await self._register(session, self._zk.session_timeout_s)
                    log.info(
                        "member joined",
                        extra={
                            "group": self._group,
                            "member": self._member_id,
                            "session": f"{session.session_id:x}",
                        },
                    )
                    self._last_members = None
                    self._verify_at = -math.inf
                    task_status.started()
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._watch_connection, session, listener)
                        nursery.start_soon(self._watch_members, session)
                        await self._loop(session, listener)
                        await self._leave(session, listener)
                        graceful = True
                        nursery.cancel_scope.cancel()
                finally:
                    # Abrupt exit (cancelled, or an error) behaves like a dying process: stop
                    # the listener writing, then close the session (removing our ephemerals).
                    self._lose_all(listener, "member left")
                    self._client = None
        finally:
            self._running = False
            log.info(
                "member left",
                extra={"group": self._group, "member": self._member_id, "graceful": graceful},
            )

    async def _leave(self, client: ZooKeeperClient, listener: OwnershipListener) -> None:
        for lease in sorted(self._leases.values(), key=lambda lease: _pid_key(lease.pid)):
            await self._revoke(client, listener, lease)
        path = self._member_path(self._member_id)
        with suppress(zkerr.ZooKeeperError):
            stat = await client.exists(path)
            if stat is not None and stat.ephemeral_owner == client.session_id:
                await client.delete(path, version=stat.version)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    @property
    def connection_state(self) -> ConnectionState:
        """The session's latest state, read without blocking (LOST while no session is open)."""
        client = self._client
        return ConnectionState.LOST if client is None else client.state
