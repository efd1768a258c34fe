"""Dead letters: events a group could not materialize, kept with the reason and the original bytes.

A dead letter never blocks its partition: the rest of the batch is written and the offset moves
past it.  It is keyed by group and the event's origin position, so the same event failing twice
is one dead letter (the newest reason wins: dead letters are written at the time of failure, not
at the event's time, so that a later failure or a successful replay's delete always wins over an
older record).  ``pipeline deadletters replay`` runs them through the group's materializer again
(after a fix) and deletes the ones that were written.

Only faults of the data are dead letters: a message a materializer rejects, one that raises in a
plugin, a value Cassandra refuses as invalid.  Timeouts and an unavailable cluster never are.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from consumers.cassandra import CassandraSession
from consumers.sinks.cassandra.model import Event, TableSpec

TABLE = "dead_letters"

DEAD_LETTERS = TableSpec(
    name=TABLE,
    columns=(
        ("consumer_group", "text"),
        ("category", "blob"),
        ("journal_id", "uuid"),
        ("partition", "int"),
        ("offset", "bigint"),
        ("time_us", "bigint"),
        ("materializer", "text"),
        ("error", "text"),
        ("message", "blob"),
        ("metadata", "frozen<map<blob, blob>>"),
        ("failed_at", "timestamp"),
    ),
    partition_key=("consumer_group",),
    clustering=(
        ("category", "ASC"),
        ("journal_id", "ASC"),
        ("partition", "ASC"),
        ("offset", "ASC"),
    ),
    comment="scribe-pipeline: events a consumer group could not materialize",
)

# Cassandra refuses a mutation over half its commit log segment (16 MiB here by default); a
# dead letter keeps at most this much of the message and says when it cut.
MAX_KEPT_MESSAGE_BYTES = 4 << 20

_KEY = ("consumer_group", "category", "journal_id", "partition", "offset")


def values(
    group: str, materializer: str, event: Event, reason: str, failed_at_ms: int
) -> dict[str, Any]:
    """The dead letter's row (the message cut to `MAX_KEPT_MESSAGE_BYTES`, with a note)."""
    message = event.message
    if len(message) > MAX_KEPT_MESSAGE_BYTES:
        reason = f"{reason} (message of {len(message)} bytes cut to {MAX_KEPT_MESSAGE_BYTES})"
        message = message[:MAX_KEPT_MESSAGE_BYTES]
    row: dict[str, Any] = {
        "consumer_group": group,
        "category": event.category,
        "journal_id": event.journal_id,
        "partition": event.partition,
        "offset": event.offset,
        "time_us": event.time_us,
        "materializer": materializer,
        "error": reason,
        "message": message,
        "failed_at": failed_at_ms,
    }
    if event.metadata:
        row["metadata"] = dict(event.metadata)
    return row


@dataclass(frozen=True)
class DeadLetter:
    """A dead letter as read back."""

    group: str
    event: Event
    materializer: str
    error: str
    failed_at_ms: int


_COLUMNS = (
    "consumer_group, category, journal_id, partition, offset, time_us, materializer, error,"
    " message, metadata, failed_at"
)


def _from_row(row: Sequence[Any]) -> DeadLetter:
    group, category, journal_id, partition, offset, time_us = row[:6]
    materializer, error, message, metadata, failed_at = row[6:]
    event = Event(
        category=bytes(category),
        journal_id=journal_id,
        partition=int(partition),
        offset=int(offset),
        time_us=int(time_us),
        message=bytes(message or b""),
        metadata=dict(metadata) if metadata else None,
    )
    failed_ms = 0
    if failed_at is not None:
        # The driver hands timestamps out as naive datetimes in UTC.
        failed_ms = int(failed_at.replace(tzinfo=datetime.UTC).timestamp() * 1000)
    return DeadLetter(str(group), event, str(materializer), str(error), failed_ms)


async def list_dead_letters(
    session: CassandraSession,
    keyspace: str,
    group: str,
    *,
    category: bytes | None = None,
    limit: int | None = None,
) -> list[DeadLetter]:
    """A group's dead letters in key order (category, journal, partition, offset)."""
    query = f"SELECT {_COLUMNS} FROM {keyspace}.{TABLE} WHERE consumer_group = %s"
    params: list[Any] = [group]
    if category is not None:
        query += " AND category = %s"
        params.append(category)
    if limit is not None:
        query += f" LIMIT {int(limit)}"
    rows = await session.execute(query, params)
    return [_from_row(row) for row in rows.rows]


async def get_dead_letter(
    session: CassandraSession,
    keyspace: str,
    group: str,
    category: bytes,
    journal_id: uuid.UUID,
    partition: int,
    offset: int,
) -> DeadLetter | None:
    rows = await session.execute(
        f"SELECT {_COLUMNS} FROM {keyspace}.{TABLE} WHERE consumer_group = %s AND category = %s"
        " AND journal_id = %s AND partition = %s AND offset = %s",
        (group, category, journal_id, partition, offset),
    )
    row = rows.one()
    return None if row is None else _from_row(row)


async def delete_dead_letter(session: CassandraSession, keyspace: str, letter: DeadLetter) -> None:
    event = letter.event
    where = " AND ".join(f"{column} = %s" for column in _KEY)
    await session.execute(
        f"DELETE FROM {keyspace}.{TABLE} WHERE {where}",
        (letter.group, event.category, event.journal_id, event.partition, event.offset),
    )
