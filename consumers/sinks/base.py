"""The interface every sink implements: files, forwarding, and the Cassandra materializers.

Contract:

* ``write(pid, messages)`` gets a non-empty batch of one partition, in offset order, and returns
  only when every message of it is durable in the sink (on disk and fsynced, acknowledged by the
  upstream, written at the consistency level the materializer needs).  The runtime commits the
  offsets after it returns, so returning early loses data on a crash.
* Delivery is at-least-once: after a crash or a change of owner a batch, or part of it, comes
  again.  Sinks that can, are idempotent (keys derived from the pid and offset); the others (files,
  forwarding) may show duplicates, never gaps.
* Failures that may pass (the service is down, the disk is full, the upstream says TRY_LATER
  for too long) raise ``SinkError``: the runtime pauses the partition and retries the same batch
  with backoff, so nothing is skipped.  Any other exception is a bug and stops the consumer.
* ``write`` may be cancelled (the partition was lost or revoked); the batch then counts as not
  written and comes again, so cancellation never needs to undo anything.  Concurrent calls for
  different partitions must be safe.
* ``metrics()`` returns the sink's counters; ``aclose()`` releases its resources.
* A setting the sink can never work with (a path it cannot write) is ``SinkUnusable``, raised by
  the sink's own check before the first write, never retried.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from journal import JournalMessage, PartitionId

# The LogEntry metadata key under which the catch-all route keeps an event's original category.
ORIGINAL_CATEGORY_KEY = b"scribe_category"


class SinkError(Exception):
    """A retryable failure to make a batch durable; ``sink`` names the sink, ``pid`` the batch's."""

    def __init__(self, sink: str, pid: PartitionId | None, reason: str) -> None:
        where = f" ({pid})" if pid is not None else ""
        super().__init__(f"{sink}{where}: {reason}")
        self.sink = sink
        self.pid = pid
        self.reason = reason


class SinkUnusable(Exception):  # noqa: N818 (reads as a state)
    """A sink cannot work as configured, however often it is retried (a directory it cannot
    create or write): found when the consumer starts.  ``setting`` names the sink's option."""

    def __init__(self, sink: str, setting: str, reason: str) -> None:
        super().__init__(f"{sink} {setting}: {reason}")
        self.sink = sink
        self.setting = setting
        self.reason = reason


class Sink(Protocol):
    """Where a consumer group's messages go (see the module docstring)."""

    async def write(self, pid: PartitionId, messages: Sequence[JournalMessage]) -> None: ...

    def metrics(self) -> dict[str, int]: ...

    async def aclose(self) -> None: ...


def original_category(pid: PartitionId, message: JournalMessage) -> bytes:
    """The category an event was sent with: the metadata's original category, else the pid's."""
    if message.metadata:
        original = message.metadata.get(ORIGINAL_CATEGORY_KEY)
        if original is not None:
            return original
    return pid.category
