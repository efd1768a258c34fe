"""Every journal in the registry as one ``JournalSource`` of ``Unit``s.

A group with ``journals = "registry"`` reads the partitions of every log server registered in
ZooKeeper (``consumers.coordination.registry``): ``partitions`` lists each registered journal's
partitions as ``Unit(category, partition, journal_id)``, and ``open_reader`` reads a unit
through its server's fetch service (``consumers.remote_reader``), or from the files of this
host's own journal when it is that journal and ``read_local`` is set: the same messages at the
same offsets either way.

Before the first read of a server, its fetch service is asked which journal it serves; a server
at a registered address that serves another journal (a stale registration) is a connection
error, retried with the runtime's backoff, never read as if it were the registered one.  A unit
whose journal is no longer registered cannot be opened (``UnknownPartition``): the runtime
pauses it, and the coordinator gives it up when the member's next scan no longer lists it.

A journal registered at a new fetch address (its server restarted on another port or host)
retires the old address at the scan that sees it: the readers still open there, retrying it
for ever, are closed (``RemoteJournalSource.close_readers``; a pending read raises
``JournalClosed``), so the runtime reopens each unit from its position, here, at the address
registered now.  A journal gone from the registry keeps its readers: its server may come back
at the same address, and the coordinator gives its units up meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

import trio

from consumers.coordination import Unit, normal_journal_id
from consumers.coordination.registry import Registration
from consumers.remote_reader import RemoteJournalSource, RemoteReadConfig
from consumers.source import LocalJournalSource, PartitionReader
from journal import PartitionId, UnknownPartition

log = logging.getLogger(__name__)

Registry = Callable[[], Awaitable[Mapping[str, Registration]]]


class ClusterJournalSource:
    """The registered journals' units; remote readers run in ``nursery``."""

    def __init__(
        self,
        registry: Registry,
        nursery: trio.Nursery,
        config: RemoteReadConfig | None = None,
        *,
        local: LocalJournalSource | None = None,
        local_journal_id: Callable[[], str | None] = lambda: None,
    ) -> None:
        """``local`` and ``local_journal_id`` (None while this host has no journal): the
        journal whose units are read from files (``read_local``); without ``local`` every
        unit is read through its server."""
        self._registry = registry
        self._nursery = nursery
        self._config = config or RemoteReadConfig()
        self._local = local
        self._local_journal_id = local_journal_id
        self._registrations: dict[str, Registration] = {}
        self._servers: dict[tuple[str, str], RemoteJournalSource] = {}
        self._verified: set[tuple[str, str]] = set()

    @property
    def registrations(self) -> dict[str, Registration]:
        """The journals registered at the last scan."""
        return dict(self._registrations)

    async def partitions(self) -> list[PartitionId]:
        """Every registered journal's partitions, as units; raises ``CoordinationError`` when
        the registry cannot be read (the caller keeps what it had)."""
        self._registrations = dict(await self._registry())
        self._retire_moved()
        return [
            Unit(pid.category, pid.partition, journal_id)
            for journal_id, registration in sorted(self._registrations.items())
            for pid in registration.partitions
        ]

    async def open_reader(self, pid: PartitionId, offset: int) -> PartitionReader:
        if not isinstance(pid, Unit):
            raise UnknownPartition(pid)
        if self._local is not None and pid.journal_id == self._local_journal_id():
            return await self._local.open_reader(pid.partition_id, offset)
        registration = self._registrations.get(pid.journal_id)
        if registration is None:
            raise UnknownPartition(pid)
        server = await self._server(registration)
        return await server.open_reader(pid.partition_id, offset)

    async def _server(self, registration: Registration) -> RemoteJournalSource:
        key = (registration.journal_id, registration.fetch_address)
        server = self._servers.get(key)
        if server is None:
            server = RemoteJournalSource(
                registration.fetch_host, registration.fetch_port, self._nursery, self._config
            )
            self._servers[key] = server
        if key not in self._verified:
            description = await server.describe()
            served = normal_journal_id(description.journal_id)
            if served != registration.journal_id:
                raise ConnectionError(
                    f"{server.peer} serves journal {served}, not the registered "
                    f"{registration.journal_id}"
                )
            self._verified.add(key)
        return server

    def _retire_moved(self) -> None:
        """Close the readers of every journal now registered at another fetch address."""
        for key in list(self._servers):
            journal_id, address = key
            registration = self._registrations.get(journal_id)
            if registration is None or registration.fetch_address == address:
                continue
            server = self._servers.pop(key)
            self._verified.discard(key)
            closed = server.close_readers(
                f"journal {journal_id} moved to {registration.fetch_address}"
            )
            # Its control connection may be stuck connecting to the old address: closed aside,
            # so that the scan does not wait for it.
            self._nursery.start_soon(server.aclose)
            log.warning(
                "journal registered at a new fetch address; its units reopen there",
                extra={
                    "journal_id": journal_id,
                    "old": address,
                    "new": registration.fetch_address,
                    "readers": closed,
                },
            )

    async def aclose(self) -> None:
        for server in self._servers.values():
            await server.aclose()
        self._servers.clear()
