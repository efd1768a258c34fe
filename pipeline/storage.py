"""The process's Cassandra session, shared by every consumer group that writes to Cassandra.

One session per process (the ``[cassandra]`` table): one connection pool, one bound on requests
in flight.  It connects when a group first needs it, not before, so a process whose groups write
only files never talks to Cassandra, and a member that starts while Cassandra is down keeps
trying (its partitions pause with backoff) instead of failing.  While Cassandra is unreachable,
a new connection is tried at most every ``RECONNECT_INTERVAL_S``: every partition of every group
asks for the session on each retry, and each attempt builds a driver cluster and logs.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import trio

from consumers.cassandra import CassandraConfig, CassandraSession, open_cassandra
from consumers.errors import StorageError

RECONNECT_INTERVAL_S = 5.0


class Storage:
    """Hands out the shared session, connecting (and creating the keyspace) on first use."""

    def __init__(
        self,
        config: CassandraConfig,
        stack: AsyncExitStack,
        *,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.config = config
        self._stack = stack
        self._clock = clock
        self._session: CassandraSession | None = None
        self._lock = trio.Lock()
        self._failure: StorageError | None = None
        self._failed_at = -math.inf

    @property
    def connected(self) -> bool:
        """Whether the session is open (once opened, it is kept until the process exits) and
        reaches at least one host of the cluster now."""
        return self._session is not None and self._session.hosts_up > 0

    async def session(self) -> CassandraSession:
        """The connected session; raises a ``StorageError`` when Cassandra cannot be reached
        (the same error again, without a new attempt, within ``RECONNECT_INTERVAL_S``)."""
        async with self._lock:
            if self._session is not None:
                return self._session
            if self._failure is not None and self._clock() - self._failed_at < RECONNECT_INTERVAL_S:
                raise self._failure.with_traceback(None)
            try:
                self._session = await self._stack.enter_async_context(open_cassandra(self.config))
            except StorageError as exc:
                self._failure, self._failed_at = exc, self._clock()
                raise
            self._failure = None
            return self._session


@asynccontextmanager
async def open_storage(
    config: CassandraConfig, *, clock: Callable[[], float] = trio.current_time
) -> AsyncIterator[Storage]:
    """A `Storage` whose session, if one was opened, is shut down on exit."""
    async with AsyncExitStack() as stack:
        yield Storage(config, stack, clock=clock)
