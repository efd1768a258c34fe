"""The Cassandra sink: runs a materializer and does all of its I/O.

For each journal batch of one partition:

1. the messages become `Event`s identified by their origin (`consumers.origin`);
2. the materializer turns them into rows and rejected events (if it raises, the sink tries the
   events one by one, so one poison message cannot block its partition);
3. every row is bound to its table's prepared ``INSERT ... USING TIMESTAMP ? AND TTL ?``
   (columns a row leaves out are unset: no cell, no tombstone), and rows sharing a table and a
   partition key are grouped into UNLOGGED batches of at most ``max_batch_rows`` rows and
   ``max_batch_bytes`` bound bytes;
4. all batches go out concurrently (the session bounds requests in flight) and are waited for;
5. a batch Cassandra refuses as invalid is retried row by row, and the rows still refused reject
   their events; a value that does not fit its column rejects its event at binding;
6. rejected events are written to ``dead_letters`` with the reason;
7. ``write`` returns only when Cassandra acknowledged every row and dead letter, at the
   configured consistency.  Then, and only then, the runtime commits the offsets.

A timeout, an unavailable or overloaded cluster, or Cassandra being down raises ``SinkError``:
the runtime pauses the partition and retries the same batch with backoff.  Rewriting rows that
were already written changes nothing (keys and write times derive from the events), so a retry,
a redelivery after a crash, or a replay leaves the tables as they were.  An event that is
rejected after some of its rows were written (a plugin's event with several rows) is
dead-lettered whole; replaying it rewrites all of its rows.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from consumers.cassandra import UNSET, Bound, CassandraConfig, CassandraSession, Prepared
from consumers.errors import (
    CassandraBindError,
    CassandraInvalidRequest,
    SchemaMismatch,
    StorageError,
)
from consumers.latency import LatencyWindow
from consumers.origin import ORIGIN_KEY, origin_of
from consumers.sinks.base import SinkError
from consumers.sinks.cassandra import deadletters, schema
from consumers.sinks.cassandra.model import (
    Event,
    Materialized,
    Materializer,
    MaterializerError,
    Rejected,
    Row,
)
from journal import JournalMessage, PartitionId

log = logging.getLogger(__name__)

DEAD_LETTER_LOG_INTERVAL_S = 10.0
# Rows bound between two schedule points (about a millisecond's work).
BIND_CHUNK_ROWS = 100


@dataclass(frozen=True)
class _Insert:
    """A table's prepared insert: its value columns in bind order."""

    prepared: Prepared
    columns: tuple[str, ...]
    known: frozenset[str]
    timestamped: bool


SessionSource = Callable[[], Awaitable[CassandraSession]]


class CassandraSink:
    """Materializes a consumer group's partitions into Cassandra; see the module docstring.

    ``session`` is a session, or an async function giving one (connecting on first use, so a
    member can start while Cassandra is down); it belongs to the caller and may be shared by
    several sinks.  ``journal_id`` identifies the journal the group reads (or a function that
    reads it when first needed).  `start` creates or checks the tables and prepares the
    statements; `write` calls it first when it has not succeeded yet, so a sink whose cluster
    was unreachable at start starts with the first batch it can write.
    """

    def __init__(
        self,
        session: CassandraSession | SessionSource,
        materializer: Materializer,
        *,
        group: str,
        journal_id: uuid.UUID | Callable[[], uuid.UUID],
        config: CassandraConfig,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._session_source = session
        self._materializer = materializer
        self._group = group
        self._journal_id_source = journal_id
        self._config = config
        self._keyspace = config.keyspace
        self._clock = clock
        self._inserts: dict[str, _Insert] = {}
        self._session: CassandraSession | None = None
        self._starting = trio.Lock()
        self._journal_id_value: uuid.UUID | None = None
        self._latency = LatencyWindow()
        self._last_dead_letter_log = -DEAD_LETTER_LOG_INTERVAL_S
        self._unlogged_dead_letters = 0
        self._counters = {
            "events": 0,
            "rows written": 0,
            "batches": 0,
            "dead letters": 0,
            "transient errors": 0,
            "invalid batches": 0,
            "bad origins": 0,
        }

    @property
    def materializer(self) -> Materializer:
        return self._materializer

    @property
    def started(self) -> bool:
        return self._session is not None

    # -- start -------------------------------------------------------------------------------

    async def start(self) -> list[str]:
        """Connect, create or migrate the tables (with ``create_schema``), check every table the
        materializer writes, prepare the inserts.  Returns what schema work was done.

        Raises `SchemaMismatch` naming each problem, another `StorageError` when Cassandra
        cannot be reached.
        """
        source = self._session_source
        session = source if isinstance(source, CassandraSession) else await source()
        done = await self._start(session)
        # Only now: a session set means every insert is prepared (`started`, `_ensure_started`).
        self._session = session
        return done

    async def _start(self, session: CassandraSession) -> list[str]:
        owned = [*self._materializer.tables(), deadletters.DEAD_LETTERS]
        done: list[str] = []
        if self._config.create_schema:
            done = await schema.apply(session, self._keyspace, owned, owner=f"group {self._group}")
        writes = {*self._materializer.writes(), deadletters.TABLE}
        live = await schema.read_tables(session, self._keyspace, writes)
        wrong = schema.problems(owned, live)
        wrong += [f"table {name!r} does not exist" for name in sorted(writes - set(live))]
        if wrong:
            raise SchemaMismatch(sorted(set(wrong)))
        try:
            self._materializer.check(live)
        except MaterializerError as exc:
            raise SchemaMismatch([f"{self._materializer.name} materializer: {exc}"]) from exc
        inserts: dict[str, _Insert] = {}
        for name in sorted(writes):
            columns = tuple(sorted(live[name].columns))
            timestamped = name != deadletters.TABLE
            inserts[name] = _Insert(
                await session.prepare(self._insert_cql(name, columns, timestamped)),
                columns,
                frozenset(columns),
                timestamped,
            )
        self._inserts = inserts
        return done

    def _insert_cql(self, table: str, columns: tuple[str, ...], timestamped: bool) -> str:
        names = ", ".join(columns)
        markers = ", ".join("?" for _ in columns)
        # Dead letters take the server's time: the newest failure (or a replay's delete) wins.
        using = " USING TIMESTAMP ? AND TTL ?" if timestamped else ""
        return f"INSERT INTO {self._keyspace}.{table} ({names}) VALUES ({markers}){using}"

    # -- Sink --------------------------------------------------------------------------------

    async def write(self, pid: PartitionId, messages: Sequence[JournalMessage]) -> None:
        journal_id = self._journal_id()
        category, partition = pid.category, pid.partition
        # A message without metadata has no origin but where it was read: the same Event as
        # `event` makes, without building its Origin first.
        events = [
            self.event(journal_id, pid, m)
            if m.metadata
            else Event(
                category, journal_id, partition, m.offset, m.timestamp_us, m.message, m.metadata
            )
            for m in messages
        ]
        await self.write_events(events, str(pid))

    async def _ensure_started(self, where: str) -> None:
        if self.started:
            return
        async with self._starting:
            if self._session is not None:  # another partition's write started it meanwhile
                return
            try:
                await self.start()
            except StorageError as exc:
                raise _retryable(where, f"cannot start: {exc}") from exc
            log.info("cassandra sink started", extra={"group": self._group})

    def _journal_id(self) -> uuid.UUID:
        if self._journal_id_value is None:
            source = self._journal_id_source
            self._journal_id_value = source if isinstance(source, uuid.UUID) else source()
        return self._journal_id_value

    def event(self, journal_id: uuid.UUID, pid: PartitionId, message: JournalMessage) -> Event:
        """The `Event` of a message read at ``pid`` of journal ``journal_id``."""
        origin, unreadable = origin_of(journal_id, pid, message)
        if unreadable:
            self._counters["bad origins"] += 1
        metadata = message.metadata
        if metadata and ORIGIN_KEY in metadata:
            metadata = {k: v for k, v in metadata.items() if k != ORIGIN_KEY} or None
        return Event(
            origin.category,
            origin.journal_id,
            origin.partition,
            origin.offset,
            origin.time_us,
            message.message,
            metadata,
        )

    async def write_events(self, events: Sequence[Event], where: str = "") -> list[Rejected]:
        """Materialize and write ``events``; returns the ones dead-lettered.

        Raises ``SinkError`` when Cassandra could not take them for now.
        """
        if not events:
            return []
        await self._ensure_started(where)
        out = self._materialize(events)
        rejected = {id(r.event): r for r in out.rejected}
        bound = await self._bind(out.rows, rejected)
        refused = await self._send(bound, where)
        for row, error in refused:
            rejected.setdefault(id(row.event), Rejected(row.event, f"Cassandra refused: {error}"))
        letters = list(rejected.values())
        if letters:
            await self._write_dead_letters(letters, where)
        self._counters["events"] += len(events)
        return letters

    async def aclose(self) -> None:
        """The session belongs to the caller; nothing to release here."""

    def metrics(self) -> dict[str, int]:
        return {**self._counters, **self._latency.summary("cassandra latency")}

    # -- materialize and bind ----------------------------------------------------------------

    def _live_session(self) -> CassandraSession:
        assert self._session is not None, "start() first"
        return self._session

    def _materialize(self, events: Sequence[Event]) -> Materialized:
        try:
            return self._materializer.materialize(events)
        except Exception as exc:
            if len(events) == 1:
                reason = f"{self._materializer.name} materializer raised {exc!r}"
                return Materialized(rejected=[Rejected(events[0], reason)])
            log.warning(
                "materializer raised; materializing event by event",
                extra={"group": self._group, "events": len(events), "error": repr(exc)},
            )
        out = Materialized()
        for event in events:
            one = self._materialize([event])
            out.rows += one.rows
            out.rejected += one.rejected
        return out

    async def _bind(
        self, rows: Sequence[Row], rejected: dict[int, Rejected]
    ) -> list[tuple[Row, Bound]]:
        bind = self._live_session().bind
        inserts = self._inserts
        bound: list[tuple[Row, Bound]] = []
        for index, row in enumerate(rows):
            if index % BIND_CHUNK_ROWS == BIND_CHUNK_ROWS - 1:
                # Binding a thousand rows takes the trio thread over 10 ms: let the other
                # partitions' finished requests be handled meanwhile, and their next ones go out.
                await trio.lowlevel.checkpoint()
            if rejected and id(row.event) in rejected:
                continue
            insert = inserts.get(row.table)
            try:
                if insert is None:
                    raise ValueError(f"table {row.table!r} is not one the materializer declared")
                values = row.values
                if not insert.known.issuperset(values):
                    unknown = next(c for c in values if c not in insert.known)
                    raise ValueError(f"table {row.table!r} has no column {unknown!r}")
                params: list[Any] = [values.get(c, UNSET) for c in insert.columns]
                params += (row.timestamp_us, row.ttl_s)
                bound.append((row, bind(insert.prepared, params)))
            except (ValueError, CassandraBindError) as exc:
                rejected[id(row.event)] = Rejected(row.event, str(exc))
        # Rows of an event rejected after some of its rows were bound are dropped with it.
        if not rejected:
            return bound
        return [(row, b) for row, b in bound if id(row.event) not in rejected]

    # -- send --------------------------------------------------------------------------------

    def _batches(self, bound: Sequence[tuple[Row, Bound]]) -> list[list[tuple[Row, Bound]]]:
        """Rows grouped by table and partition key, cut at the batch limits, in first-seen
        order."""
        max_rows, max_bytes = self._config.max_batch_rows, self._config.max_batch_bytes
        open_batches: dict[tuple[str, Any], list[tuple[Row, Bound]]] = {}
        sizes: dict[tuple[str, Any], int] = {}
        batches: list[list[tuple[Row, Bound]]] = []
        for item in bound:
            row, statement = item
            key = (row.table, statement.partition_key)
            current = open_batches.get(key)
            if (
                current is None
                or len(current) >= max_rows
                or sizes[key] + statement.size > max_bytes
            ):
                current = open_batches[key] = []
                sizes[key] = 0
                batches.append(current)
            current.append(item)
            sizes[key] += statement.size
        return batches

    async def _send(self, bound: Sequence[tuple[Row, Bound]], where: str) -> list[tuple[Row, str]]:
        """Write every row; returns the rows Cassandra refused as invalid, with the reason."""
        batches = self._batches(bound)
        outcomes = await self._timed_write([[b for _, b in batch] for batch in batches])
        self._raise_transient(outcomes, where)
        refused: list[tuple[Row, str]] = []
        retry: list[tuple[Row, Bound]] = []
        for batch, error in zip(batches, outcomes, strict=True):
            if error is None:
                self._counters["rows written"] += len(batch)
            elif len(batch) == 1:
                refused.append((batch[0][0], _reason(error)))
            else:
                self._counters["invalid batches"] += 1
                retry += batch
        if retry:
            # Find the rows at fault: each on its own.
            outcomes = await self._timed_write([[b] for _, b in retry])
            self._raise_transient(outcomes, where)
            for (row, _), error in zip(retry, outcomes, strict=True):
                if error is None:
                    self._counters["rows written"] += 1
                else:
                    refused.append((row, _reason(error)))
        return refused

    async def _timed_write(self, groups: Sequence[Sequence[Bound]]) -> list[StorageError | None]:
        start = time.perf_counter()
        outcomes = await self._live_session().write(groups)
        self._latency.add(time.perf_counter() - start)
        self._counters["batches"] += len(groups)
        return outcomes

    def _raise_transient(self, outcomes: Sequence[StorageError | None], where: str) -> None:
        for error in outcomes:
            if error is not None and not isinstance(error, CassandraInvalidRequest):
                self._counters["transient errors"] += 1
                raise _retryable(where, str(error))

    async def _write_dead_letters(self, letters: Sequence[Rejected], where: str) -> None:
        insert = self._inserts[deadletters.TABLE]
        name = self._materializer.name
        failed_at_ms = int(self._clock() * 1000)
        bound = []
        for letter in letters:
            row = deadletters.values(self._group, name, letter.event, letter.reason, failed_at_ms)
            bound.append(self._live_session().bind(insert.prepared, row))
        outcomes = await self._timed_write([[b] for b in bound])
        self._raise_transient(outcomes, where)
        for letter, error in zip(letters, outcomes, strict=True):
            if error is not None:
                # Never lose it: a dead letter the cluster refuses is a fault of ours to fix.
                raise _retryable(where, f"dead letter for {letter.event.position} refused: {error}")
        self._counters["dead letters"] += len(letters)
        self._log_dead_letters(letters)

    def _log_dead_letters(self, letters: Sequence[Rejected]) -> None:
        # One line per batch at most every DEAD_LETTER_LOG_INTERVAL_S: a stream of poison
        # messages must not flood the log (the counter and the table have every one).
        now = time.monotonic()
        self._unlogged_dead_letters += len(letters)
        if now - self._last_dead_letter_log < DEAD_LETTER_LOG_INTERVAL_S:
            return
        log.warning(
            "dead letters written",
            extra={
                "group": self._group,
                "count": self._unlogged_dead_letters,
                "event": letters[0].event.position,
                "reason": letters[0].reason,
            },
        )
        self._unlogged_dead_letters = 0
        self._last_dead_letter_log = now


def _retryable(where: str, reason: str) -> SinkError:
    """The error that pauses the partition (``where`` names the batch, when known)."""
    return SinkError("cassandra", None, f"{where}: {reason}" if where else reason)


def _reason(error: StorageError) -> str:
    return error.reason if isinstance(error, CassandraInvalidRequest) else str(error)
