"""An event's origin: the journal position where it was first acknowledged.

An event keeps its identity wherever it travels.  The forward sink stamps every event it sends
with its origin in the LogEntry metadata (keeping an origin the event already carries), so an
event forwarded through tiers of servers, or to two aggregators for redundancy, is still one
event: the Cassandra materializers key their rows by the origin, not by where the event was
read.

The metadata value is ASCII fields separated by single spaces, the raw category last (it may
hold any bytes, spaces too)::

    1 <journal id, 32 hex digits> <partition> <offset> <time in µs> <category bytes>

The leading ``1`` is the encoding's version.  A value that does not parse is ignored (the event
is then identified by where it was read) and counted by the sink that read it.  Like the
catch-all route's ``scribe_category`` key, the origin is trusted: clients on the Scribe port can
set metadata, so a network that admits untrusted clients should not forward their metadata.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from journal import JournalMessage, PartitionId, read_journal_id

ORIGIN_KEY = b"scribe_origin"
_VERSION = b"1"


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an event was first journaled, and its event time there."""

    journal_id: uuid.UUID
    category: bytes
    partition: int
    offset: int
    time_us: int

    def encode(self) -> bytes:
        head = b"%s %s %d %d %d " % (
            _VERSION,
            self.journal_id.hex.encode(),
            self.partition,
            self.offset,
            self.time_us,
        )
        return head + self.category


def decode_origin(value: bytes) -> Origin | None:
    """The origin in a metadata value, or None when it is not one this code can read."""
    parts = value.split(b" ", 5)
    if len(parts) != 6 or parts[0] != _VERSION:
        return None
    try:
        journal_id = uuid.UUID(hex=parts[1].decode("ascii"))
        partition, offset, time_us = int(parts[2]), int(parts[3]), int(parts[4])
    except ValueError:
        return None
    if len(parts[1]) != 32 or partition < 0 or offset < 0 or time_us < 0:
        return None
    return Origin(journal_id, parts[5], partition, offset, time_us)


def local_origin(journal_id: uuid.UUID, pid: PartitionId, message: JournalMessage) -> Origin:
    """The origin of a message first journaled at ``pid`` of journal ``journal_id``."""
    return Origin(journal_id, pid.category, pid.partition, message.offset, message.timestamp_us)


def origin_of(
    journal_id: uuid.UUID, pid: PartitionId, message: JournalMessage
) -> tuple[Origin, bool]:
    """The message's origin (its stamped one, else where it was read) and whether a stamped
    value was present but unreadable."""
    if message.metadata:
        value = message.metadata.get(ORIGIN_KEY)
        if value is not None:
            origin = decode_origin(value)
            if origin is not None:
                return origin, False
            return local_origin(journal_id, pid, message), True
    return local_origin(journal_id, pid, message), False


class JournalIdentity:
    """The identity of the journal in ``journal_dir``, read when first asked for and kept.

    A consumer may start before the log server has created its journal; by the time there is a
    message to read, the identity exists.
    """

    def __init__(self, journal_dir: Path) -> None:
        self._dir = Path(journal_dir)
        self._value: uuid.UUID | None = None

    def __call__(self) -> uuid.UUID:
        if self._value is None:
            self._value = read_journal_id(self._dir)
        return self._value
