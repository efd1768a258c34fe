"""The process's Cassandra session, shared by every consumer group that writes to Cassandra.

One session per process (the ``[cassandra]`` table): one connection pool, one bound on requests
in flight.  It connects when a group first needs it, not before, so a process whose groups write
only files never talks to Cassandra, and a member that starts while Cassandra is down keeps
trying (its partitions pause with backoff) instead of failing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import trio

from consumers.cassandra import CassandraConfig, CassandraSession, open_cassandra


class Storage:
    """Hands out the shared session, connecting (and creating the keyspace) on first use."""

    def __init__(self, config: CassandraConfig, stack: AsyncExitStack) -> None:
        self.config = config
        self._stack = stack
        self._session: CassandraSession | None = None
        self._lock = trio.Lock()

    async def session(self) -> CassandraSession:
        """The connected session; raises a ``StorageError`` when Cassandra cannot be reached
        (the next call tries again)."""
        async with self._lock:
            if self._session is None:
                self._session = await self._stack.enter_async_context(open_cassandra(self.config))
            return self._session


@asynccontextmanager
async def open_storage(config: CassandraConfig) -> AsyncIterator[Storage]:
    """A `Storage` whose session, if one was opened, is shut down on exit."""
    async with AsyncExitStack() as stack:
        yield Storage(config, stack)
