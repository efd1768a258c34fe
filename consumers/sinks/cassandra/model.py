"""What a materializer works with: events in, rows and rejections out, and the tables it needs.

A materializer is pure.  It never talks to Cassandra: it declares its tables (`TableSpec`) and
turns a batch of `Event`s into `Row`s and `Rejected` events.  The sink prepares the statements,
binds, batches by partition key, bounds requests in flight, retries and writes dead letters, so
a user's materializer (a plugin) gets all of that for free.

Idempotence is the materializer's half of the bargain: a row's key must derive from the event
(its origin position or its content), and its ``timestamp_us`` from the event's time, never from
the clock, so that materializing the same event twice writes the same cells.  No counters, no
list appends, no ``now()``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from consumers.sinks.base import ORIGINAL_CATEGORY_KEY


@dataclass(frozen=True, slots=True)
class Event:
    """One journal message as a materializer sees it, identified by its origin.

    ``category``, ``journal_id``, ``partition`` and ``offset`` are the position where the event
    was first journaled (`consumers.origin`); for an event read where it was logged, that is
    where it was read.  ``time_us`` is its event time there: microseconds since the epoch,
    strictly increasing along a partition, so a later event always has a larger time, also
    within one millisecond.  ``metadata`` is the LogEntry metadata without the origin.
    """

    category: bytes
    journal_id: uuid.UUID
    partition: int
    offset: int
    time_us: int
    message: bytes
    metadata: Mapping[bytes, bytes] | None = None

    @property
    def original_category(self) -> bytes:
        """The category the client sent (the catch-all route keeps it in the metadata)."""
        if self.metadata:
            original = self.metadata.get(ORIGINAL_CATEGORY_KEY)
            if original is not None:
                return original
        return self.category

    @property
    def time_ms(self) -> int:
        return self.time_us // 1000

    @property
    def position(self) -> str:
        """``category/partition@offset in journal`` for messages and logs."""
        category = self.category.decode("utf-8", "backslashreplace")
        return f"{category}/{self.partition}@{self.offset} in journal {self.journal_id}"


@dataclass(frozen=True, slots=True)
class Row:
    """One row to write: ``values`` by column name; columns left out are not written (no cell,
    no tombstone).  Written ``USING TIMESTAMP timestamp_us`` and ``TTL ttl_s`` (0: none)."""

    table: str
    values: Mapping[str, Any]
    timestamp_us: int
    event: Event
    ttl_s: int = 0


@dataclass(frozen=True, slots=True)
class Rejected:
    """An event that cannot be materialized, and why (it becomes a dead letter)."""

    event: Event
    reason: str


@dataclass
class Materialized:
    """A materializer's answer for one batch."""

    rows: list[Row] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


@dataclass(frozen=True)
class TableSpec:
    """A table the project creates and migrates, by version.

    Version 1 is ``CREATE TABLE IF NOT EXISTS`` from ``columns``, ``partition_key``,
    ``clustering`` and ``options``; version ``n + 1`` runs ``migrations[n - 1]`` (each a CQL
    statement with ``{table}`` standing for the qualified name, e.g. ``ALTER TABLE {table} ADD
    x int``).  ``columns`` always lists the latest version's columns and CQL types, which the
    sink checks against the live table at start.
    """

    name: str
    columns: tuple[tuple[str, str], ...]
    partition_key: tuple[str, ...]
    clustering: tuple[tuple[str, str], ...] = ()
    options: tuple[str, ...] = ()
    migrations: tuple[str, ...] = ()
    comment: str = ""
    # The compaction strategy and its options (empty: Cassandra's default, left as it is).
    # Unlike the columns it may change between versions of a configuration (a new TTL):
    # `schema.apply` alters a table whose compaction differs.
    compaction: tuple[tuple[str, str], ...] = ()

    @property
    def version(self) -> int:
        return 1 + len(self.migrations)

    @property
    def column_types(self) -> dict[str, str]:
        return dict(self.columns)

    def create_cql(self, keyspace: str) -> str:
        columns = ",\n".join(f"    {name} {kind}" for name, kind in self.columns)
        clustering = "".join(f", {name}" for name, _ in self.clustering)
        key = f"(({', '.join(self.partition_key)}){clustering})"
        options = list(self.options)
        if self.compaction:
            options.insert(0, self.compaction_cql())
        if self.clustering:
            order = ", ".join(f"{name} {direction}" for name, direction in self.clustering)
            options.insert(0, f"CLUSTERING ORDER BY ({order})")
        if self.comment:
            options.append("comment = '" + self.comment.replace("'", "''") + "'")
        with_clause = ("\nWITH " + "\n AND ".join(options)) if options else ""
        return (
            f"CREATE TABLE IF NOT EXISTS {keyspace}.{self.name} (\n{columns},\n"
            f"    PRIMARY KEY {key}\n){with_clause}"
        )

    def compaction_cql(self) -> str:
        """``compaction = {...}`` for CREATE and ALTER."""
        inner = ", ".join(f"'{key}': '{value}'" for key, value in self.compaction)
        return f"compaction = {{{inner}}}"


@dataclass(frozen=True)
class LiveTable:
    """A table as the cluster has it: column types (as system_schema spells them) and keys."""

    name: str
    columns: Mapping[str, str]
    partition_key: tuple[str, ...]
    clustering: tuple[str, ...] = ()
    compaction: Mapping[str, str] = field(default_factory=dict)

    @property
    def primary_key(self) -> tuple[str, ...]:
        return self.partition_key + self.clustering


class MaterializerError(ValueError):
    """A materializer's configuration does not fit (options, or the live table's schema)."""


@runtime_checkable
class Materializer(Protocol):
    """Turns events into rows.  Implement ``tables`` and ``materialize``; the others have
    defaults in `BaseMaterializer`.

    ``tables()`` lists the tables the project creates and migrates for it; ``writes()`` every
    table its rows go to (its own, and tables it does not own, such as a mapping's target).
    ``check(tables)`` gets the live `LiveTable` of every table in ``writes()`` before the first
    batch and raises `MaterializerError` when they do not fit.
    ``materialize`` must not raise for one bad event: it rejects it.  (If it raises anyway, the
    sink retries event by event and dead-letters the ones that raise.)
    """

    name: str

    def tables(self) -> Sequence[TableSpec]: ...

    def writes(self) -> Sequence[str]: ...

    def check(self, tables: Mapping[str, LiveTable]) -> None: ...

    def materialize(self, events: Sequence[Event]) -> Materialized: ...


class BaseMaterializer:
    """Defaults for the optional parts of `Materializer`."""

    name = "materializer"

    def tables(self) -> Sequence[TableSpec]:
        return ()

    def writes(self) -> Sequence[str]:
        return tuple(spec.name for spec in self.tables())

    def check(self, tables: Mapping[str, LiveTable]) -> None:
        return None
