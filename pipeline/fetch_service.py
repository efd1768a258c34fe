"""The fetch service: consumers on any host read this server's journal over Thrift.

``FetchService`` is the handler ``scribe_compat.serve_fetch`` calls.  A fetch sends whole
journal batches as they are on disk (``journal.records``; the consumer verifies their crc), up
to ``max_response_bytes``, never past the durable high-water mark.  At the tail it long-polls:
it waits on the partition's writer (woken by the append, no polling) for up to the smaller of
the consumer's wait and ``max_wait_ms``.  At most ``max_concurrent_fetches`` read the disk at
once (waiting at the tail does not count: a thousand idle consumers cost no read slot); a
connection holds at most one response, so a slow consumer costs the server one response's
memory and no more.

Refusals carry a code (``scribe_compat.FetchErrorCode``): an offset below the earliest kept
(retention deleted it) or beyond the high-water mark, an unknown partition, a damaged one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Annotated

import trio
from annotated_types import Interval

from journal import (
    Journal,
    JournalClosed,
    JournalCorrupt,
    JournalError,
    OffsetOutOfRange,
    PartitionId,
    UnknownPartition,
    WriterFailed,
)
from journal.layout import partition_dir
from journal.records import earliest_offset, read_records
from scribe_compat import (
    FetchErrorCode,
    FetchRefused,
    FetchRequest,
    FetchResult,
    FetchServerConfig,
    JournalDescription,
    PartitionState,
    TimeLookup,
)
from scribe_compat.access import check_allow
from scribe_compat.tls import TlsConfig

log = logging.getLogger(__name__)

MiB = 1 << 20


@dataclass(frozen=True)
class FetchConfig:
    """The ``[fetch]`` table: where the fetch service listens, and what one fetch may cost."""

    # Loopback unless told otherwise: the service has no authentication of its own.
    host: str = "127.0.0.1"
    # Off unless set: serving the journal to other hosts is a choice.  0 picks a free port.
    port: Annotated[int, Interval(ge=0, le=65535)] | None = None
    # Record bytes per response (at least one whole batch is always sent).  4 MiB is ~20,000
    # messages of 200 bytes: a few ms on a LAN, enough to keep a consumer busy between trips,
    # while a thousand connections in flight cost at most 4 GiB.  At most 16 MiB, what a
    # client accepts in one reply.
    max_response_bytes: Annotated[int, Interval(ge=4096, le=16 * MiB)] = 4 * MiB
    # Fetches reading the disk at once.  Reading is a pread per response in a worker thread:
    # a handful keeps a disk and the loop busy; the rest wait their turn in order.
    max_concurrent_fetches: Annotated[int, Interval(ge=1, le=1024)] = 8
    # The longest a fetch at the tail waits for data before it answers empty: consumers come
    # back at once, so this bounds only how often an idle consumer makes a trip (and how long
    # a stop waits for nothing).  10 s is well under any TCP or proxy idle timeout.
    max_wait_ms: Annotated[int, Interval(ge=0, le=300_000)] = 10_000
    # Connections at once (one per partition a remote member reads).
    max_connections: Annotated[int, Interval(ge=1, le=65536)] = 256
    # A request is a few dozen bytes: one that has not arrived in this time is not coming.
    read_timeout_s: Annotated[float, Interval(gt=0, le=3600)] = 30.0
    # A response the consumer does not take within this time is dropped with its connection.
    send_timeout_s: Annotated[float, Interval(gt=0, le=3600)] = 60.0
    # CIDR networks consumers may connect from, as [server] allow (and with its default when
    # unset: every peer on a loopback host, else loopback and private networks only).
    allow: tuple[str, ...] | None = None
    # TLS on the fetch port, independent of the Scribe port's: consumers can speak it where
    # old Scribe clients cannot.  Off unless tls.cert is set.
    tls: TlsConfig = field(default_factory=TlsConfig)

    def __post_init__(self) -> None:
        check_allow(self.allow)

    @property
    def enabled(self) -> bool:
        return self.port is not None

    def server_config(self) -> FetchServerConfig:
        return FetchServerConfig(
            host=self.host,
            port=self.port or 0,
            max_connections=self.max_connections,
            read_timeout_s=self.read_timeout_s,
            send_timeout_s=self.send_timeout_s,
        )


class FetchService:
    """The fetch handler over one open journal (see the module docstring)."""

    def __init__(self, journal: Journal, config: FetchConfig) -> None:
        self._journal = journal
        self._config = config
        self._limiter = trio.CapacityLimiter(config.max_concurrent_fetches)
        self._counters = {
            "fetch:requests": 0,
            "fetch:bytes sent": 0,
            "fetch:long polls": 0,
            "fetch:refused": 0,
            "fetch:describes": 0,
            "fetch:time lookups": 0,
        }

    def counters(self) -> dict[str, int]:
        return {**self._counters, "fetch:reading now": int(self._limiter.borrowed_tokens)}

    def _high_water_mark(self, pid: PartitionId) -> int:
        try:
            return self._journal.high_water_mark(pid)
        except UnknownPartition:
            raise self._refuse(FetchErrorCode.UNKNOWN_PARTITION, f"no partition {pid}") from None
        except WriterFailed as exc:
            raise self._refuse(
                FetchErrorCode.PARTITION_DAMAGED, f"partition {pid} is unavailable: {exc}"
            ) from None
        except JournalClosed:
            raise self._refuse(FetchErrorCode.UNAVAILABLE, "the server is stopping") from None

    def _refuse(
        self,
        code: FetchErrorCode,
        reason: str,
        *,
        earliest: int = 0,
        high_water_mark: int = 0,
        file: str = "",
        position: int = 0,
    ) -> FetchRefused:
        self._counters["fetch:refused"] += 1
        return FetchRefused(
            int(code),
            reason,
            earliest=earliest,
            high_water_mark=high_water_mark,
            file=file,
            position=position,
        )

    def _damaged(
        self, pid: PartitionId, exc: JournalCorrupt, *, high_water_mark: int = 0
    ) -> FetchRefused:
        """The refusal of a read that met damage, naming the file and the byte."""
        return self._refuse(
            FetchErrorCode.PARTITION_DAMAGED,
            f"partition {pid} is damaged: {exc.reason}",
            file=str(exc.file),
            position=exc.position,
            high_water_mark=high_water_mark,
        )

    async def describe(self) -> JournalDescription:
        self._counters["fetch:describes"] += 1
        journal = self._journal
        marks: list[tuple[PartitionId, int | None]] = []
        for pid in journal.partitions():
            try:
                marks.append((pid, journal.high_water_mark(pid)))
            except JournalError:
                marks.append((pid, None))

        def states() -> list[PartitionState]:
            out = []
            for pid, hwm in marks:
                if hwm is None:
                    out.append(PartitionState(pid.category, pid.partition, 0, 0, damaged=True))
                    continue
                part = partition_dir(journal.directory, pid)
                out.append(
                    PartitionState(pid.category, pid.partition, earliest_offset(part, hwm), hwm)
                )
            return out

        partitions = await trio.to_thread.run_sync(states)
        return JournalDescription(str(journal.journal_id), tuple(partitions))

    async def fetch(self, request: FetchRequest) -> FetchResult:
        self._counters["fetch:requests"] += 1
        config = self._config
        pid = PartitionId(request.category, request.partition)
        hwm = self._high_water_mark(pid)
        wait_ms = min(request.wait_ms, config.max_wait_ms)
        if request.offset == hwm and wait_ms > 0:
            self._counters["fetch:long polls"] += 1
            await self._wait_beyond(pid, hwm, wait_ms / 1000)
            hwm = self._high_water_mark(pid)
        max_bytes = min(request.max_bytes or config.max_response_bytes, config.max_response_bytes)
        part = partition_dir(self._journal.directory, pid)
        max_record = self._journal.config.max_record_bytes
        try:
            async with self._limiter:
                records = await trio.to_thread.run_sync(
                    read_records,
                    part,
                    pid,
                    request.offset,
                    hwm,
                    max_bytes,
                    max(request.max_messages, 1),
                    max_record,
                )
                earliest = earliest_offset(part, hwm)
        except OffsetOutOfRange as exc:
            code = (
                FetchErrorCode.OFFSET_BELOW_EARLIEST
                if request.offset < exc.earliest
                else FetchErrorCode.OFFSET_BEYOND_HIGH_WATER_MARK
            )
            raise self._refuse(
                code,
                f"offset {request.offset} of {pid} is outside"
                f" {exc.earliest}..{exc.high_water_mark}",
                earliest=exc.earliest,
                high_water_mark=exc.high_water_mark,
            ) from None
        except JournalCorrupt as exc:
            raise self._damaged(pid, exc, high_water_mark=hwm) from None
        self._counters["fetch:bytes sent"] += len(records.data)
        return FetchResult(
            records.data,
            records.next_offset,
            earliest,
            hwm,
            gap=records.gap,
            gap_documented=records.gap_documented,
        )

    async def _wait_beyond(self, pid: PartitionId, offset: int, timeout_s: float) -> None:
        """Until the partition's writer has made ``offset`` visible, or ``timeout_s``."""
        try:
            reader = self._journal.open_reader(pid, offset)
        except JournalError:
            return  # the fetch itself says what is wrong
        with reader, trio.move_on_after(timeout_s):
            # The writer wakes it (no polling); what it reads is dropped: the fetch sends the
            # records as they are on disk.
            await reader.read_wait(1, 1)

    async def offset_for_time(self, lookup: TimeLookup) -> int:
        self._counters["fetch:time lookups"] += 1
        pid = PartitionId(lookup.category, lookup.partition)
        self._high_water_mark(pid)
        try:
            reader = self._journal.open_reader(pid, None, skip_gaps=True)
        except JournalError as exc:
            raise self._refuse(FetchErrorCode.PARTITION_DAMAGED, str(exc)) from None
        with reader:
            try:
                async with self._limiter:
                    await trio.to_thread.run_sync(reader.seek_time, lookup.timestamp_ms)
            except JournalCorrupt as exc:
                raise self._damaged(pid, exc) from None
            return reader.position
