"""The ``latest`` materializer: the newest state per key.

One row per ``(category, key)``, holding the newest event's message, metadata, event time and
origin position.  Every column of the row is written ``USING TIMESTAMP`` the event's time in
microseconds, so Cassandra keeps, cell by cell, the newest event's values: an older event that
arrives later (a replay, a redelivery, a slower aggregator) never overwrites a newer one, and of
two events in one millisecond the later one wins (event times are strictly increasing along a
partition; give events of one key one partition, as routing's ``key-hash`` partitioner does).

The key is a field of a JSON message (``key_field``, a dotted path) or the bytes before the
first ``key_delimiter`` (the key routing's ``key-hash`` partitioner hashes); a message without a
key is rejected (a dead letter).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from consumers.sinks.cassandra.events import TtlS
from consumers.sinks.cassandra.jsonfields import MISSING, NotJson, lookup, parse_object, parse_path
from consumers.sinks.cassandra.model import (
    BaseMaterializer,
    Event,
    Materialized,
    Rejected,
    Row,
    TableSpec,
)
from consumers.sinks.cassandra.naming import check_name


@dataclass(frozen=True)
class LatestOptions:
    """``[consumers.cassandra]`` of a group with ``materializer = "latest"``."""

    table: str = "latest"
    # Exactly one of these: a dotted path into a JSON message, or the delimiter before which
    # the message's key ends.
    key_field: str | None = None
    key_delimiter: str | None = None
    # Rows expire this long after their event's write (0: never).
    ttl_s: TtlS = 0

    def __post_init__(self) -> None:
        check_name("table", self.table)
        if (self.key_field is None) == (self.key_delimiter is None):
            raise ValueError("key_field or key_delimiter: set exactly one of them")
        if self.key_field is not None:
            parse_path(self.key_field)
        if self.key_delimiter is not None and not self.key_delimiter:
            raise ValueError("key_delimiter must not be empty")


def latest_table(name: str) -> TableSpec:
    return TableSpec(
        name=name,
        columns=(
            ("category", "blob"),
            ("key", "blob"),
            ("message", "blob"),
            ("metadata", "frozen<map<blob, blob>>"),
            ("event_time", "timestamp"),
            ("journal_id", "uuid"),
            ("partition", "int"),
            ("offset", "bigint"),
        ),
        partition_key=("category", "key"),
        comment="scribe-pipeline latest: the newest event per key",
    )


def key_text(value: Any) -> bytes:
    """A JSON key value as bytes: strings as their UTF-8, anything else as compact JSON."""
    if isinstance(value, str):
        return value.encode("utf-8")
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode("utf-8")


class LatestMaterializer(BaseMaterializer):
    """The newest event per key in ``options.table``; see the module docstring."""

    name = "latest"

    def __init__(self, options: LatestOptions) -> None:
        self.options = options
        self._path = parse_path(options.key_field) if options.key_field is not None else None
        self._delimiter = (
            options.key_delimiter.encode("utf-8") if options.key_delimiter is not None else None
        )
        self._spec = latest_table(options.table)

    def tables(self) -> Sequence[TableSpec]:
        return (self._spec,)

    def key(self, event: Event) -> bytes:
        """The event's key; raises ValueError saying why it has none."""
        if self._delimiter is not None:
            key, found, _ = event.message.partition(self._delimiter)
            if not found:
                raise ValueError(f"message has no key delimiter {self.options.key_delimiter!r}")
            return key
        assert self._path is not None
        value = lookup(parse_object(event.message), self._path)
        if value is MISSING:
            raise ValueError(f"message has no key field {self.options.key_field!r}")
        if isinstance(value, dict | list):
            raise ValueError(f"key field {self.options.key_field!r} is not a scalar")
        return key_text(value)

    def materialize(self, events: Sequence[Event]) -> Materialized:
        out = Materialized()
        table, ttl_s = self.options.table, self.options.ttl_s
        for event in events:
            try:
                key = self.key(event)
            except (ValueError, NotJson) as exc:
                out.rejected.append(Rejected(event, str(exc)))
                continue
            values = {
                "category": event.category,
                "key": key,
                "message": event.message,
                # Written even when empty: an older event's metadata must not outlive it.
                "metadata": dict(event.metadata) if event.metadata else {},
                "event_time": event.time_us // 1000,
                "journal_id": event.journal_id,
                "partition": event.partition,
                "offset": event.offset,
            }
            out.rows.append(Row(table, values, event.time_us, event, ttl_s))
        return out
