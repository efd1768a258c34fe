"""The journal registry: which log servers exist, where their fetch service listens, and
which partitions their journals hold.

With ZooKeeper coordination every log server that has a fetch port keeps one ephemeral node
under the pipeline's root (``JournalRegistrar``)::

    /journals/<journal id, 32 hex digits>   ephemeral  {"format": 1, "journal_id", "fetch":
                                                        "host:port", "host", "pid",
                                                        "partitions": [[category hex, n], ...]}

The node lives as long as the server's session: a server that dies or is cut off disappears
from the registry after the session timeout, and comes back when it registers again.  The
partition list is rewritten as categories and partitions appear, at most once every
``interval_s`` (a burst of new categories costs one write).  After a session loss the node is
created again in the new session.  A node of the same journal left by an earlier session (the
server was killed and restarted within the session timeout) is replaced at once: only one
process can hold a journal open, so that session's owner is gone.

Consumer groups reading the registry (``registered_journals``) own ``Unit``s, keyed by journal
id (``consumers.coordination.zookeeper``), so a server that goes away keeps its committed
offsets, and its units are taken up again from them when it is back.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager, suppress
from dataclasses import dataclass

import trio

from consumers import errors as zkerr
from consumers.coordination.protocol import normal_journal_id
from consumers.coordination.zk_client import (
    ConnectionState,
    ZooKeeperClient,
    ZooKeeperConfig,
    open_zookeeper,
)
from journal import PartitionId

log = logging.getLogger(__name__)

REGISTRY = "/journals"
REGISTRATION_FORMAT = 1

OpenClient = Callable[[ZooKeeperConfig], AbstractAsyncContextManager[ZooKeeperClient]]


@dataclass(frozen=True)
class Registration:
    """One registered journal: its identity, its server's fetch address, its partitions."""

    journal_id: str  # 32 lowercase hex digits
    fetch_host: str
    fetch_port: int
    host: str  # the server's host name
    pid: int  # the server's process id
    partitions: tuple[PartitionId, ...]

    @property
    def fetch_address(self) -> str:
        host = f"[{self.fetch_host}]" if ":" in self.fetch_host else self.fetch_host
        return f"{host}:{self.fetch_port}"

    def encode(self) -> bytes:
        return json.dumps(
            {
                "format": REGISTRATION_FORMAT,
                "journal_id": self.journal_id,
                "fetch": self.fetch_address,
                "host": self.host,
                "pid": self.pid,
                "partitions": [[p.category.hex(), p.partition] for p in self.partitions],
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> Registration | None:
        """The registration in a node's data; None for one this code cannot read (a newer
        format, or damage): that server is then not consumed, and a warning says so."""
        try:
            info = json.loads(data)
            if info.get("format") != REGISTRATION_FORMAT:
                return None
            host, _, port = str(info["fetch"]).rpartition(":")
            return cls(
                journal_id=normal_journal_id(str(info["journal_id"])),
                fetch_host=host.removeprefix("[").removesuffix("]"),
                fetch_port=int(port),
                host=str(info.get("host", "")),
                pid=int(info.get("pid", 0)),
                partitions=tuple(
                    PartitionId(bytes.fromhex(category), int(n))
                    for category, n in info["partitions"]
                ),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


def registration_path(journal_id: str) -> str:
    return f"{REGISTRY}/{journal_id}"


async def registered_journals(client: ZooKeeperClient) -> dict[str, Registration]:
    """Every journal registered now, by journal id."""
    try:
        names = await client.get_children(REGISTRY)
    except zkerr.NoNode:
        return {}
    found: dict[str, Registration] = {}
    for name in sorted(names):
        try:
            data, _ = await client.get(registration_path(name))
        except zkerr.NoNode:
            continue  # gone since the listing
        registration = Registration.decode(data)
        if registration is None or registration.journal_id != name:
            log.warning("unreadable journal registration ignored", extra={"node": name})
            continue
        found[name] = registration
    return found


class JournalRegistrar:
    """Keeps this server's journal registered while ``run`` runs (see the module docstring).

    ``partitions`` tells the journal's partitions now (cheap: it is called every
    ``interval_s``).  ZooKeeper unreachable never stops the server: the registrar retries
    every ``retry_interval_s`` and registers when it can.
    """

    def __init__(
        self,
        config: ZooKeeperConfig,
        journal_id: str,
        fetch_address: tuple[str, int],
        partitions: Callable[[], Iterable[PartitionId]],
        *,
        interval_s: float = 1.0,
        retry_interval_s: float = 1.0,
        open_client: OpenClient = open_zookeeper,
    ) -> None:
        self._zk = config
        self._journal_id = normal_journal_id(journal_id)
        self._fetch = fetch_address
        self._partitions = partitions
        self._interval_s = interval_s
        self._retry_interval_s = retry_interval_s
        self._open = open_client
        self._path = registration_path(self._journal_id)
        self.registered: Registration | None = None  # what the node holds now
        self.counters = {"registrations": 0, "updates": 0, "failures": 0}

    def current(self) -> Registration:
        host, port = self._fetch
        return Registration(
            journal_id=self._journal_id,
            fetch_host=host,
            fetch_port=port,
            host=socket.gethostname(),
            pid=os.getpid(),
            partitions=tuple(
                sorted(set(self._partitions()), key=lambda p: (p.category, p.partition))
            ),
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Register, keep the node current, and register again after a session loss; forever
        (cancel to stop: the session's end removes the node)."""
        task_status.started()
        while True:
            try:
                async with self._open(self._zk) as client:
                    await self._serve(client)
            except zkerr.CoordinationError as exc:
                self._failed(exc)
            await trio.sleep(self._retry_interval_s)

    async def _serve(self, client: ZooKeeperClient) -> None:
        wake = trio.Event()

        async def watch_connection() -> None:
            async for event in client.connection_events:
                if event.state is not ConnectionState.SUSPENDED:
                    self.registered = None  # a new session has no node: look again
                    wake.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_connection)
            while True:
                wake = trio.Event()
                if client.state is ConnectionState.CONNECTED:
                    try:
                        await self._publish(client)
                    except zkerr.CoordinationError as exc:
                        self._failed(exc)
                with trio.move_on_after(self._interval_s):
                    await wake.wait()

    def _failed(self, exc: zkerr.CoordinationError) -> None:
        """Counted and logged; what the node holds is unknown until the next publish."""
        self.counters["failures"] += 1
        self.registered = None
        log.warning(
            "journal registration failed; retrying",
            extra={"journal_id": self._journal_id, "error": str(exc)},
        )

    async def _publish(self, client: ZooKeeperClient) -> None:
        wanted = self.current()
        if wanted == self.registered:
            return
        data = wanted.encode()
        stat = await client.exists(self._path)
        if stat is not None and stat.ephemeral_owner == client.session_id:
            await client.set(self._path, data, version=stat.version)
            self.counters["updates"] += 1
        else:
            if stat is not None:
                # An earlier session's node of this journal: its process is gone (the journal
                # is locked by one process at a time), so it need not wait for the timeout.
                log.warning(
                    "replacing a stale registration of this journal",
                    extra={"journal_id": self._journal_id},
                )
                with suppress(zkerr.NoNode, zkerr.BadVersion):
                    await client.delete(self._path, version=stat.version)
            await client.ensure_path(REGISTRY)
            await client.create(self._path, data, ephemeral=True)
            self.counters["registrations"] += 1
            log.info(
                "journal registered",
                extra={"journal_id": self._journal_id, "fetch": wanted.fetch_address},
            )
        self.registered = wanted
