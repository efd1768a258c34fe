"""The ``events`` materializer: every event as a row, partitioned by category and time bucket.

Partition key ``(category, bucket)``: ``bucket`` is the start of the event's time bucket
(``bucket_s``, an hour by default), so no partition grows without bound and a journal batch,
whose events share a category and mostly a bucket, becomes a few large same-partition batches.
Rows cluster by event time, then by origin position, which is also what makes each row unique:
an event materialized twice (a replay, a redelivery, two aggregators) writes the same cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from annotated_types import Ge, Interval

from consumers.sinks.cassandra.model import BaseMaterializer, Event, Materialized, Row, TableSpec
from consumers.sinks.cassandra.naming import check_name

# Cassandra's limit on a TTL: 20 years.
MAX_TTL_S = 630_720_000
# Seconds until a row expires; 0 never.
TtlS = Annotated[int, Interval(ge=0, le=MAX_TTL_S)]


@dataclass(frozen=True)
class EventsOptions:
    """``[consumers.cassandra]`` of a group with ``materializer = "events"``."""

    table: str = "events"
    # One hour keeps a partition of a busy category at tens of MB (10,000 events/s of 200 bytes
    # is 7 GB an hour: raise the rate, lower the bucket).
    bucket_s: Annotated[int, Ge(1)] = 3600
    # Rows expire after this many seconds (0: never); with a TTL the table uses
    # TimeWindowCompactionStrategy with windows of about a thirtieth of it.
    ttl_s: TtlS = 0

    def __post_init__(self) -> None:
        check_name("table", self.table)


def events_table(name: str, ttl_s: int = 0) -> TableSpec:
    return TableSpec(
        name=name,
        columns=(
            ("category", "blob"),
            ("bucket", "timestamp"),
            ("event_time", "timestamp"),
            ("journal_id", "uuid"),
            ("partition", "int"),
            ("offset", "bigint"),
            ("message", "blob"),
            ("metadata", "frozen<map<blob, blob>>"),
        ),
        partition_key=("category", "bucket"),
        clustering=(
            ("event_time", "ASC"),
            ("journal_id", "ASC"),
            ("partition", "ASC"),
            ("offset", "ASC"),
        ),
        compaction=twcs(ttl_s) if ttl_s else (),
        comment="scribe-pipeline events: one row per journaled event",
    )


def twcs(ttl_s: int) -> tuple[tuple[str, str], ...]:
    """TimeWindowCompactionStrategy with about 30 windows per TTL, in whole units: whole windows
    expire together and are dropped without compaction."""
    window_s = max(60, ttl_s // 30)
    unit, size = next(
        (unit, size)
        for unit, size in (("DAYS", 86400), ("HOURS", 3600), ("MINUTES", 60))
        if window_s >= size
    )
    return (
        ("class", "TimeWindowCompactionStrategy"),
        ("compaction_window_unit", unit),
        ("compaction_window_size", str(window_s // size)),
    )


class EventsMaterializer(BaseMaterializer):
    """Every event as a row of ``options.table``; see the module docstring."""

    name = "events"

    def __init__(self, options: EventsOptions) -> None:
        self.options = options
        self._bucket_ms = options.bucket_s * 1000
        self._spec = events_table(options.table, options.ttl_s)

    def tables(self) -> Sequence[TableSpec]:
        return (self._spec,)

    def materialize(self, events: Sequence[Event]) -> Materialized:
        table, bucket_ms, ttl_s = self.options.table, self._bucket_ms, self.options.ttl_s
        rows = []
        for event in events:
            time_ms = event.time_us // 1000
            values: dict[str, Any] = {
                "category": event.category,
                "bucket": time_ms - time_ms % bucket_ms,
                "event_time": time_ms,
                "journal_id": event.journal_id,
                "partition": event.partition,
                "offset": event.offset,
                "message": event.message,
            }
            if event.metadata:
                values["metadata"] = dict(event.metadata)
            rows.append(Row(table, values, event.time_us, event, ttl_s))
        return Materialized(rows)
