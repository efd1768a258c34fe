"""The consumer runtime: one member of a consumer group, reading its partitions into a sink.

For each partition the coordinator gives it, a worker task:

1. starts at the committed offset (the earliest offset when nothing is committed);
2. reads a batch: it waits for a first message, then collects more until ``batch_messages``,
   ``batch_bytes`` or ``batch_wait_s`` after the first, whichever comes first;
3. hands the batch to the sink; a ``SinkError`` pauses the partition and retries the same batch
   with capped, jittered backoff, so nothing is skipped and order is kept;
   damage in the journal (``JournalCorrupt``) holds the partition at the damaged offset once
   the messages before it are delivered, counted (``read errors``) and reported
   (``consumers.damage``), and retried with the same backoff, so the partition goes on by
   itself after ``pipeline journal repair``; the offsets repair cut are skipped, logged and
   counted as skipped messages;
4. commits the offset after the last delivered message at most every ``commit_interval_s``
   (also while idle, so a quiet partition's last batch gets committed), and always on graceful
   revocation and stop.  A crash therefore redelivers at most the uncommitted tail
   (at-least-once).

Ownership changes come from the coordinator (the runtime is its ``OwnershipListener``): ``lost``
cancels the worker at once, so nothing more is written; ``revoking`` cancels it too, waits for it
to end, and then commits what the sink confirmed.  A ``Fenced`` commit stops the worker the same
way.  A sink write cancelled half way counts as not written: its batch comes again.

The runtime rescans its journal every ``discover_interval_s`` and offers the partitions of
matching categories to the coordinator, so new categories and partitions are picked up.  The
journal is a ``consumers.source.JournalSource``: the files of a journal on this host (the
default) or a log server's fetch service (``consumers.remote_reader``); the runtime reads both
through the same reader interface and cannot tell them apart.  A group reading every
registered journal (``consumers.cluster_source``) gets ``Unit``s, partitions that name their
journal; the runtime hands them on to the coordinator, the source and the sink unchanged.
Patterns are routing's: an exact category, ``prefix*``, or ``*`` / ``default`` for all.

Time (batch waits, commit cadence, backoff) is trio's clock, so tests can run it on a
``trio.testing.MockClock``.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from consumers.backoff import Backoff
from consumers.config import GroupConfig
from consumers.coordination import CoordinationError, Coordinator, Fenced, Lease
from consumers.damage import PartitionDamage
from consumers.sinks.base import Sink, SinkError
from consumers.source import JournalSource, LocalJournalSource, PartitionReader
from journal import (
    JournalConfig,
    JournalCorrupt,
    JournalError,
    JournalMessage,
    OffsetOutOfRange,
    PartitionId,
)

log = logging.getLogger(__name__)

ALL_PATTERNS = frozenset({"*", "default"})


class CategoryMatcher:
    """Routing's pattern language over raw category bytes."""

    def __init__(self, patterns: Iterable[str]) -> None:
        patterns = tuple(patterns)
        self.all = any(p in ALL_PATTERNS for p in patterns)
        encoded = [p.encode("utf-8", "surrogateescape") for p in patterns]
        self._exact = frozenset(p for p in encoded if not p.endswith(b"*"))
        self._prefixes = tuple(p[:-1] for p in encoded if p.endswith(b"*"))

    def __call__(self, category: bytes) -> bool:
        return (
            self.all
            or category in self._exact
            or any(category.startswith(prefix) for prefix in self._prefixes)
        )


@dataclass
class _Worker:
    lease: Lease
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)
    reader: PartitionReader | None = None
    position: int | None = None  # the next offset to deliver
    committed: int | None = None
    last_commit: float = -math.inf
    consumed: int = 0
    paused: bool = False
    lost: bool = False
    damage: PartitionDamage | None = None  # held at damage until a read gets past it
    delivered_us: int | None = None  # the time of the last message delivered (journal's, us)


@dataclass(frozen=True)
class PartitionProgress:
    """Where a member stands in one partition it owns (``ConsumerRuntime.progress``)."""

    pid: PartitionId
    position: int | None  # the next offset to deliver
    committed: int | None
    lag: int | None  # messages between position and the high-water mark; None: unknown
    delivered_us: int | None  # the journal time of the last message delivered
    paused: bool


class ConsumerRuntime:
    """One member of ``config.name`` reading ``journal_dir`` (or ``source``, when given) into
    ``sink``.

    Start with ``nursery.start(runtime.serve)``; ``stop()`` leaves gracefully (every partition
    committed and released), after which ``serve`` returns.  The sink belongs to the caller.
    """

    def __init__(
        self,
        journal_dir: Path,
        config: GroupConfig,
        coordinator: Coordinator,
        sink: Sink,
        *,
        journal_config: JournalConfig | None = None,
        rng: random.Random | None = None,
        source: JournalSource | None = None,
    ) -> None:
        if coordinator.group != config.name:
            raise ValueError(f"coordinator is for group {coordinator.group!r}, not {config.name!r}")
        self._dir = Path(journal_dir)
        self._config = config
        self._coordinator = coordinator
        self._sink = sink
        self._source = source or LocalJournalSource(self._dir, journal_config)
        self._rng = rng if rng is not None else random.Random()
        self._matches = CategoryMatcher(config.categories)
        self._workers: dict[PartitionId, _Worker] = {}
        self._nursery: trio.Nursery | None = None
        self._counters = {
            "messages consumed": 0,
            "bytes consumed": 0,
            "batches": 0,
            "commits": 0,
            "commit failures": 0,
            "fenced": 0,
            "sink retries": 0,
            "skipped messages": 0,
            # Reads that failed (damage, a vanished file): each pauses the partition.
            "read errors": 0,
            "assigned": 0,
            "revoked": 0,
            "lost": 0,
        }
        self._fields = {"group": config.name, "member": coordinator.member_id}

    # -- lifecycle ---------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self.discover()
            nursery.start_soon(self._discover_loop)
            await nursery.start(self._run_coordinator, nursery.cancel_scope)
            task_status.started()

    async def _run_coordinator(
        self,
        scope: trio.CancelScope,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            await self._coordinator.run(self, task_status=task_status)
        finally:
            scope.cancel()  # left the group: end discovery and any worker still winding down

    def stop(self) -> None:
        """Leave gracefully: the coordinator revokes every partition; each is committed."""
        self._coordinator.stop()

    # -- discovery ---------------------------------------------------------------------------

    async def discover(self) -> set[PartitionId]:
        """Scan the journal once and offer the matching partitions to the coordinator."""
        try:
            found = await self._source.partitions()
        except (JournalError, OSError, CoordinationError) as exc:
            # The registry unreachable too: keep the partitions offered last, not none.
            log.warning("journal scan failed", extra={**self._fields, "error": str(exc)})
            return set()
        pids = {pid for pid in found if self._matches(pid.category)}
        self._coordinator.set_partitions(pids)
        return pids

    async def _discover_loop(self) -> None:
        while True:
            await trio.sleep(self._config.discover_interval_s)
            await self.discover()

    # -- OwnershipListener -------------------------------------------------------------------

    async def assigned(self, lease: Lease) -> None:
        assert self._nursery is not None
        previous = self._workers.get(lease.pid)
        worker = _Worker(lease)
        self._workers[lease.pid] = worker
        self._counters["assigned"] += 1
        self._nursery.start_soon(self._consume, worker, previous)

    async def revoking(self, lease: Lease) -> None:
        worker = self._workers.get(lease.pid)
        if worker is None or worker.lease != lease:
            return
        worker.scope.cancel()
        await worker.done.wait()
        if not worker.lost:
            await self._commit(worker)
        if self._workers.get(lease.pid) is worker:
            del self._workers[lease.pid]
        self._counters["revoked"] += 1
        log.info(
            "partition revoked",
            extra={**self._fields, "partition": str(lease.pid), "committed": worker.committed},
        )

    def lost(self, lease: Lease) -> None:
        worker = self._workers.get(lease.pid)
        if worker is None or worker.lease != lease:
            return
        worker.lost = True
        worker.scope.cancel()  # stop writing at once
        self._counters["lost"] += 1

    # -- the worker --------------------------------------------------------------------------

    async def _consume(self, worker: _Worker, previous: _Worker | None) -> None:
        pid = worker.lease.pid
        try:
            with worker.scope:
                if previous is not None:
                    previous.scope.cancel()
                    await previous.done.wait()  # never two writers of one partition here
                await self._consume_retrying(worker)
        finally:
            if worker.reader is not None:
                worker.reader.close()
            worker.done.set()
            # A revoked worker's entry stays until ``revoking`` has committed it.
            if worker.lost and self._workers.get(pid) is worker:
                del self._workers[pid]

    async def _consume_retrying(self, worker: _Worker) -> None:
        config = self._config
        backoff = Backoff(config.backoff_initial_s, config.backoff_max_s, self._rng)
        failed_at: int | None = None
        while True:
            try:
                await self._consume_partition(worker)
            except (JournalError, CoordinationError, OSError) as exc:
                # Damage, a vanished partition, or the committed offset unreadable for now (the
                # coordinator unreachable): pause this partition, not the whole member.
                if worker.position != failed_at:
                    # It delivered since the last failure: a new incident starts from the
                    # shortest delay, not from where an old one left off.
                    backoff.reset()
                failed_at = worker.position
                delay = backoff.next_delay()
                if not isinstance(exc, CoordinationError):
                    self._counters["read errors"] += 1
                if isinstance(exc, JournalCorrupt):
                    self._note_damage(worker, exc, backoff.attempts, delay)
                else:
                    log.error(
                        "cannot read partition; paused",
                        extra={
                            **self._fields,
                            "partition": str(worker.lease.pid),
                            "error": str(exc),
                            "delay_s": round(delay, 3),
                        },
                    )
                if worker.reader is not None:
                    worker.reader.close()
                    worker.reader = None
                worker.paused = True
                await self._commit(worker)
                await trio.sleep(delay)

    async def _consume_partition(self, worker: _Worker) -> None:
        pid = worker.lease.pid
        committed = await self._coordinator.committed(pid)
        if worker.position is None:
            start = committed
            worker.committed = committed
        else:
            start = worker.position  # resuming after a read error: what was delivered stays so
        reader = await self._open_reader(pid, start)
        worker.reader = reader
        worker.position = reader.position
        log.info(
            "partition started",
            extra={
                **self._fields,
                "partition": str(pid),
                "epoch": worker.lease.epoch,
                "committed": committed,
                "position": reader.position,
            },
        )
        config = self._config
        while True:
            batch = await self._next_batch(worker, reader)
            await self._deliver(worker, batch)
            worker.position = batch[-1].offset + 1
            worker.delivered_us = batch[-1].timestamp_us
            nbytes = sum(len(m.message) for m in batch)
            worker.consumed += len(batch)
            self._counters["messages consumed"] += len(batch)
            self._counters["bytes consumed"] += nbytes
            self._counters["batches"] += 1
            if trio.current_time() - worker.last_commit >= config.commit_interval_s:
                await self._commit(worker)

    def _note_damage(
        self, worker: _Worker, error: JournalCorrupt, attempt: int, delay: float
    ) -> None:
        # The position is the offset of the damaged batch: everything before it was delivered.
        offset = worker.position if worker.position is not None else 0
        worker.damage = PartitionDamage.of(self._config.name, worker.lease.pid, offset, error)
        # One line per retry: the backoff bounds the rate (at most one per backoff_max_s once
        # it has grown), and the line names the way out.
        log.error(
            "journal damage; partition held at the damaged offset until repaired",
            extra={
                **self._fields,
                "partition": str(worker.lease.pid),
                "offset": offset,
                "file": str(error.file),
                "position": error.position,
                "reason": error.reason,
                "repair": worker.damage.repair_command,
                "attempt": attempt,
                "delay_s": round(delay, 3),
            },
        )

    def _note_read_on(self, worker: _Worker, reader: PartitionReader) -> None:
        """After a read that did not fail: note the skipped ranges, and whether the reader got
        past the damage it was held at."""
        self._note_skips(worker, reader)
        damage = worker.damage
        if damage is not None and reader.position > damage.offset:
            worker.damage = None
            log.warning(
                "journal damage passed; partition reads on",
                extra={
                    **self._fields,
                    "partition": str(worker.lease.pid),
                    "offset": damage.offset,
                    "position": reader.position,
                },
            )

    def damaged(self) -> list[PartitionDamage]:
        """The partitions this member is held at damage in, now."""
        return [w.damage for w in self._workers.values() if w.damage is not None]

    async def _open_reader(self, pid: PartitionId, committed: int | None) -> PartitionReader:
        start = 0 if committed is None else committed
        try:
            return await self._source.open_reader(pid, start)
        except OffsetOutOfRange as exc:
            if committed is not None and committed < exc.earliest:
                self._counters["skipped messages"] += exc.earliest - committed
                log.error(
                    "journal data gone before it was consumed",
                    extra={
                        **self._fields,
                        "partition": str(pid),
                        "start": committed,
                        "end": exc.earliest,
                    },
                )
            elif committed is not None:
                # Committed past the end: the journal was replaced.  Redeliver rather than skip.
                log.error(
                    "committed offset beyond the journal; starting at its earliest offset",
                    extra={
                        **self._fields,
                        "partition": str(pid),
                        "committed": committed,
                        "high_water_mark": exc.high_water_mark,
                    },
                )
            return await self._source.open_reader(pid, exc.earliest)

    async def _next_batch(self, worker: _Worker, reader: PartitionReader) -> list[JournalMessage]:
        config = self._config
        batch: list[JournalMessage] = []
        while not batch:
            # Read what is there first: damage raises here, at once, and a read that does not
            # fail tells whether the reader got past damage (or a gap) it was held at.
            batch = reader.read(config.batch_messages, config.batch_bytes)
            self._note_read_on(worker, reader)
            if batch:
                break
            pending = worker.position != worker.committed
            due = worker.last_commit + config.commit_interval_s if pending else math.inf
            with trio.move_on_at(due):
                batch = await reader.read_wait(config.batch_messages, config.batch_bytes)
            self._note_skips(worker, reader)
            if not batch:
                await self._commit(worker)  # idle with an uncommitted tail: commit it now
        size = sum(len(m.message) for m in batch)
        deadline = trio.current_time() + config.batch_wait_s
        while len(batch) < config.batch_messages and size < config.batch_bytes:
            try:
                more = reader.read(config.batch_messages - len(batch), config.batch_bytes - size)
            except JournalCorrupt:
                break  # deliver what came before the damage; the next read raises it again
            if not more:
                if trio.current_time() >= deadline:
                    break
                with trio.move_on_at(deadline):
                    more = await reader.read_wait(
                        config.batch_messages - len(batch), config.batch_bytes - size
                    )
                if not more:
                    break
            batch.extend(more)
            size += sum(len(m.message) for m in more)
        self._note_skips(worker, reader)
        return batch

    def _note_skips(self, worker: _Worker, reader: PartitionReader) -> None:
        while reader.skipped:
            start, end = reader.skipped.pop(0)
            self._counters["skipped messages"] += end - start
            if worker.position == start:
                worker.position = end  # nothing before the gap is left to deliver
            log.error(
                "journal data gone before it was consumed",
                extra={
                    **self._fields,
                    "partition": str(worker.lease.pid),
                    "start": start,
                    "end": end,
                    "reason": reader.skip_reasons.get((start, end), "missing"),
                },
            )

    async def _deliver(self, worker: _Worker, batch: list[JournalMessage]) -> None:
        config = self._config
        backoff = Backoff(config.backoff_initial_s, config.backoff_max_s, self._rng)
        while True:
            try:
                await self._sink.write(worker.lease.pid, batch)
            except SinkError as exc:
                worker.paused = True
                self._counters["sink retries"] += 1
                delay = backoff.next_delay()
                log.warning(
                    "sink failed; partition paused",
                    extra={
                        **self._fields,
                        "partition": str(worker.lease.pid),
                        "offset": batch[0].offset,
                        "attempt": backoff.attempts,
                        "delay_s": round(delay, 3),
                        "error": str(exc),
                    },
                )
                await trio.sleep(delay)
            else:
                worker.paused = False
                return

    async def _commit(self, worker: _Worker) -> None:
        position = worker.position
        if position is None or position == worker.committed:
            worker.last_commit = trio.current_time()
            return
        pid = worker.lease.pid
        try:
            await self._coordinator.commit(pid, position, worker.lease.epoch)
        except Fenced as exc:
            self._counters["fenced"] += 1
            worker.lost = True
            worker.scope.cancel()  # someone else owns it now: stop writing at once
            log.warning(
                "commit fenced; partition dropped",
                extra={
                    **self._fields,
                    "partition": str(pid),
                    "epoch": exc.epoch,
                    "current_epoch": exc.current_epoch,
                },
            )
            return
        except (CoordinationError, OSError) as exc:
            self._counters["commit failures"] += 1
            worker.last_commit = trio.current_time()  # try again after the interval
            log.warning(
                "commit failed", extra={**self._fields, "partition": str(pid), "error": str(exc)}
            )
            return
        worker.committed = position
        worker.last_commit = trio.current_time()
        self._counters["commits"] += 1

    # -- observability -----------------------------------------------------------------------

    @property
    def coordinator(self) -> Coordinator:
        return self._coordinator

    def progress(self) -> list[PartitionProgress]:
        """Every partition this member works on, with its lag (read-only)."""
        out = []
        for pid, worker in self._workers.items():
            out.append(
                PartitionProgress(
                    pid,
                    worker.position,
                    worker.committed,
                    self._lag(worker),
                    worker.delivered_us,
                    worker.paused,
                )
            )
        return out

    @staticmethod
    def _lag(worker: _Worker) -> int | None:
        if worker.reader is None or worker.position is None:
            return None
        try:
            return max(0, worker.reader.high_water_mark() - worker.position)
        except (JournalError, OSError):
            return None

    def metrics(self) -> dict[str, Any]:
        """The member's counters (named as fb303 shows them after ``consumer <group>:``), the
        partitions it owns with their positions, and the sink's own counters under ``sink``."""
        partitions: dict[str, dict[str, Any]] = {}
        for pid, worker in sorted(
            self._workers.items(), key=lambda item: (item[0].category, item[0].partition)
        ):
            lag = self._lag(worker)
            partitions[str(pid)] = {
                "epoch": worker.lease.epoch,
                "position": worker.position,
                "committed": worker.committed,
                "consumed": worker.consumed,
                "lag": lag,
                "paused": worker.paused,
                "damage": None if worker.damage is None else worker.damage.describe(),
            }
        return {
            **self._fields,
            **self._counters,
            "partitions owned": len(self._coordinator.owned()),
            "partitions": partitions,
            "sink": self._sink.metrics(),
        }
