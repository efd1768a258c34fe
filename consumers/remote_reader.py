"""Reading a log server's journal through its fetch service, as if it were local.

``RemoteJournalSource`` is a ``JournalSource`` for the server at ``host:port``; its readers
(``RemoteReader``) are ``PartitionReader``s, so the consumer runtime treats them exactly as
``journal.JournalReader``s.  Each reader has its own connection and one task, in the source's
nursery, that fetches ahead: as soon as fewer messages are left to hand out than half the last
response held, the next fetch is on its way (at the tail, a long poll the server answers as
soon as data is durable), so the server's read and the transfer overlap the delivery of what
is here.  So a reader holds at most two responses (the one it hands out and the next, on
its way or arrived: a response's bytes are freed with its last batch) and one batch decoded.
``read_wait`` is a trio checkpoint even when messages are there, so a consumer that never
waits for anything else still lets the fetch task run.

A response is split into its batches on arrival (headers only); each batch is verified and
decoded when ``read`` reaches it, and its messages built as they are handed out, as
``JournalReader`` does with the batches it reads from disk.  The records stay views of the
reply they came in.  So a remote read does the local read's work, plus receiving the bytes
and no copy of them, in the same order (decoding a whole response ahead would leave megabytes
of message objects to go cold in the cache before they are used).

Whole batches arrive in the journal's own format and are verified here (``journal.records``):
a crc that does not match is damage (``JournalCorrupt``), as it would be on local disk.  The
server's refusals become the journal's own errors: below the earliest offset kept (retention
deleted it under the reader) and gaps are skipped and reported in ``skipped``, as a local
reader with ``skip_gaps`` does; beyond the high-water mark is ``OffsetOutOfRange``; an unknown
partition ``UnknownPartition``; damage on the server ``JournalCorrupt`` naming the server's
file and byte.  A transport failure (the server restarting, a network cut) is retried with
capped, jittered backoff on a new connection, for as long as it takes: the reader's position
never moves on a failure, so nothing is lost or repeated.

``close`` ends a reader wherever it is: its fetch task, a first fetch still retrying (the
open raises ``JournalClosed``) and a pending ``read_wait`` (woken, it raises ``JournalClosed``).
So whoever decides that an address is stale (``RemoteJournalSource.close_readers``: the
server's journal is registered at another one now) ends the readers still retrying it, and
their users reopen from the position they had, through a source that knows the new address.
"""

from __future__ import annotations

import logging
import random
import ssl
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from consumers.backoff import Backoff
from journal import (
    JournalClosed,
    JournalCorrupt,
    JournalError,
    JournalMessage,
    OffsetOutOfRange,
    PartitionId,
    UnknownPartition,
)
from journal.reader import SKIP_MISSING, SKIP_REPAIRED
from journal.records import DecodedBatch, FetchedBatch, split_batches
from scribe_compat import (
    AsyncFetchClient,
    ClientError,
    FetchErrorCode,
    FetchRefused,
    FetchRequest,
    FetchResult,
    JournalDescription,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteReadConfig:
    """How a remote reader talks to the fetch service."""

    # Connect and per-call timeout beyond the long poll's own wait.
    timeout_s: float = 30.0
    # How long one fetch at the tail may wait on the server (which caps it at its max_wait_ms).
    wait_ms: int = 10_000
    # Record bytes asked per fetch; 0 takes the server's max_response_bytes.
    max_bytes: int = 0
    # Transport failures: first retry after backoff_initial_s, doubling up to backoff_max_s.
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 5.0
    # TLS to a fetch port that has it (``scribe_compat.tls.client_context``); None: plaintext.
    tls: ssl.SSLContext | None = None
    # The name the server's certificate must carry; empty: the host connected to.
    tls_server_name: str = ""


@dataclass(frozen=True)
class _Skip:
    start: int
    end: int
    reason: str


def _error_of(refused: FetchRefused, pid: PartitionId, offset: int, peer: str) -> JournalError:
    code = refused.code
    if code == FetchErrorCode.UNKNOWN_PARTITION:
        return UnknownPartition(pid)
    if code == FetchErrorCode.PARTITION_DAMAGED:
        return JournalCorrupt(
            Path(f"{peer}:{refused.file or pid}"), refused.position, refused.reason
        )
    return OffsetOutOfRange(pid, offset, refused.earliest, refused.high_water_mark)


class RemoteJournalSource:
    """The journal behind the fetch service at ``host:port``; readers run in ``nursery``."""

    def __init__(
        self,
        host: str,
        port: int,
        nursery: trio.Nursery,
        config: RemoteReadConfig | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.peer = f"{host}:{port}"
        self.config = config or RemoteReadConfig()
        self._nursery = nursery
        self._rng = rng if rng is not None else random.Random()
        self._control: AsyncFetchClient | None = None
        self._control_lock = trio.Lock()
        self.journal_id: str | None = None
        self.reconnects = 0
        # Readers not closed yet, for ``close_readers``; each leaves the set when it closes.
        self._readers: set[RemoteReader] = set()

    async def connect(self) -> AsyncFetchClient:
        """A new connection to the server; ``ConnectionError`` when it cannot be made."""
        try:
            config = self.config
            return await AsyncFetchClient.connect(
                self.host,
                self.port,
                config.timeout_s,
                tls=config.tls,
                server_name=config.tls_server_name,
            )
        except ClientError as exc:
            raise ConnectionError(str(exc)) from exc

    async def describe(self) -> JournalDescription:
        """The server's journal identity and partitions; ``ConnectionError`` when the server
        cannot be reached (the next call tries again)."""
        async with self._control_lock:
            try:
                if self._control is None:
                    self._control = await self.connect()
                description = await self._control.describe()
            except ClientError as exc:
                await self._drop_control()
                raise ConnectionError(f"{self.peer}: {exc}") from exc
            except BaseException:
                await self._drop_control()
                raise
        self.journal_id = description.journal_id
        return description

    async def _drop_control(self) -> None:
        if self._control is not None:
            await self._control.aclose()
            self._control = None

    async def partitions(self) -> list[PartitionId]:
        description = await self.describe()
        return [PartitionId(p.category, p.partition) for p in description.partitions]

    async def open_reader(self, pid: PartitionId, offset: int) -> RemoteReader:
        reader = RemoteReader(self, pid, offset)
        self._readers.add(reader)
        try:
            # The first fetch here, without waiting: an offset out of range raises now, as a
            # local reader's does when it opens.
            await reader.first_fetch()
        except BaseException:
            reader.close()
            with trio.CancelScope(shield=True):
                await reader.discard_connection()
            raise
        self._nursery.start_soon(reader.fetch_ahead)
        return reader

    def close_readers(self, reason: str) -> int:
        """End every open reader of this server, also those opening or waiting in
        ``read_wait`` (which raise ``JournalClosed`` with ``reason``); returns how many."""
        readers = list(self._readers)
        for reader in readers:
            reader.close(reason)
        return len(readers)

    def forget(self, reader: RemoteReader) -> None:
        self._readers.discard(reader)

    def backoff(self) -> Backoff:
        return Backoff(self.config.backoff_initial_s, self.config.backoff_max_s, self._rng)

    async def aclose(self) -> None:
        async with self._control_lock:
            await self._drop_control()


class RemoteReader:
    """A ``PartitionReader`` over the fetch service (see the module docstring)."""

    def __init__(self, source: RemoteJournalSource, pid: PartitionId, offset: int) -> None:
        self.pid = pid
        self.skipped: list[tuple[int, int]] = []
        self.skip_reasons: dict[tuple[int, int], str] = {}
        self._source = source
        self._where = Path(f"{source.peer}:{pid}")
        self._next = offset  # what ``read`` hands out next
        self._fetch_at = offset  # where the next fetch starts
        self._hwm = offset
        # Batches (the first may begin before ``_next``; decoded when ``read`` reaches them),
        # skips and the error that ends the reader, in offset order.
        self._queue: deque[FetchedBatch | DecodedBatch | _Skip | JournalError] = deque()
        # Messages in the queue not handed out yet; the next fetch starts below _refill_at.
        self._queued = 0
        self._refill_at = 1
        # Each wakes the other side only when it can go on (a task switch per read would
        # cost more than the read): ``_arrived`` when the fetch task queued something (then
        # replaced), ``_room`` when fewer messages are left than ``_refill_at``.
        self._arrived = trio.Event()
        self._room = trio.Event()
        self._client: AsyncFetchClient | None = None
        # The first fetch (in ``open_reader``) and the fetch task each run in their own scope,
        # so that ``close`` ends either while it retries an address that is gone.
        self._opening = trio.CancelScope()
        self._scope = trio.CancelScope()
        self._closed: str | None = None  # why, once closed

    # -- PartitionReader ------------------------------------------------------------------------

    @property
    def position(self) -> int:
        return self._next

    def high_water_mark(self) -> int:
        """As of the last response."""
        return self._hwm

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def read(self, max_messages: int = 1000, max_bytes: int = 1 << 20) -> list[JournalMessage]:
        if self._closed is not None:
            raise JournalClosed(self._closed)
        out: list[JournalMessage] = []
        size = 0
        queue = self._queue
        while queue and len(out) < max_messages:
            item = queue[0]
            if isinstance(item, JournalError):
                if out:
                    break  # what came before it is good; the next call raises
                raise item
            if isinstance(item, _Skip):
                queue.popleft()
                self.skipped.append((item.start, item.end))
                self.skip_reasons[item.start, item.end] = item.reason
                self._next = item.end
                continue
            if isinstance(item, FetchedBatch):
                try:
                    item = queue[0] = item.decode(self._where)
                except JournalCorrupt as exc:
                    self._fail(exc)
                    if out:
                        break
                    raise
            # As ``JournalReader.read`` does: one message object per message handed out.
            base = item.base
            i = self._next - base
            stop = item.end - base
            messages, metadata, ts, ts_us = (
                item.messages,
                item.metadata,
                item.timestamp_ms,
                item.timestamp_us,
            )
            full = False
            while i < stop and len(out) < max_messages:
                message = messages[i]
                if out and size + len(message) > max_bytes:
                    full = True
                    break
                meta = metadata[i] if metadata is not None else None
                out.append(JournalMessage(base + i, ts, message, meta, ts_us + i))
                size += len(message)
                i += 1
            self._next = base + i
            if i == stop:
                queue.popleft()
            if full:
                break
        self._queued -= len(out)
        if self._queued < self._refill_at:
            self._room.set()
        return out

    async def read_wait(
        self, max_messages: int = 1000, max_bytes: int = 1 << 20
    ) -> list[JournalMessage]:
        # Before reading, not after: a cancellation here must not lose what was read.
        await trio.lowlevel.checkpoint()
        while True:
            arrived = self._arrived
            messages = self.read(max_messages, max_bytes)
            if messages:
                return messages
            await arrived.wait()

    def close(self, reason: str = "the reader is closed") -> None:
        """End the reader: its fetches stop, and a pending ``read_wait`` (or a first fetch
        still retrying) raises ``JournalClosed`` with ``reason``; the position stays."""
        if self._closed is not None:
            return
        self._closed = f"{self._source.peer}: {reason}"
        self._opening.cancel()
        self._scope.cancel()
        self._source.forget(self)
        self._arrive()  # a read_wait asleep on it wakes, reads, and raises JournalClosed

    # -- fetching ---------------------------------------------------------------------------------

    def _arrive(self) -> None:
        self._arrived.set()
        self._arrived = trio.Event()

    async def first_fetch(self) -> None:
        with self._opening:
            result = await self._fetch(wait_ms=0)
        if self._closed is not None:
            raise JournalClosed(self._closed)
        if isinstance(result, FetchRefused):
            if result.code == FetchErrorCode.OFFSET_BELOW_EARLIEST:
                raise OffsetOutOfRange(
                    self.pid, self._fetch_at, result.earliest, result.high_water_mark
                )
            raise _error_of(result, self.pid, self._fetch_at, self._source.peer)
        self._take(result)

    async def fetch_ahead(self) -> None:
        """The reader's task: fetch the next response once fewer messages are left than half
        the last one held."""
        try:
            with self._scope:
                while True:
                    while not self._may_fetch():
                        if self._failed():
                            return  # the reader is done: the runtime reopens after it
                        self._room = trio.Event()
                        await self._room.wait()
                    result = await self._fetch(wait_ms=self._source.config.wait_ms)
                    if self._failed():
                        return  # damage was found meanwhile in what was here
                    if isinstance(result, FetchRefused):
                        self._refused(result)
                    else:
                        self._take(result)
                    self._arrive()
        finally:
            with trio.CancelScope(shield=True):
                await self.discard_connection()

    def _may_fetch(self) -> bool:
        # After a skip, the runtime takes it before anything further comes.
        last = self._queue[-1] if self._queue else None
        return self._queued < self._refill_at and not isinstance(last, _Skip | JournalError)

    def _failed(self) -> bool:
        return bool(self._queue) and isinstance(self._queue[-1], JournalError)

    def _fail(self, error: JournalError) -> None:
        """Damage where ``read`` is: nothing after it is handed out, nothing more fetched."""
        self._queue.clear()
        self._queue.append(error)
        self._queued = 0
        self._room.set()

    async def discard_connection(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _fetch(self, *, wait_ms: int) -> FetchResult | FetchRefused:
        """One fetch from ``_fetch_at``, retrying transport failures on a new connection."""
        source = self._source
        backoff = source.backoff()
        request = FetchRequest(
            self.pid.category,
            self.pid.partition,
            self._fetch_at,
            source.config.max_bytes,
            1 << 30,
            wait_ms,
        )
        while True:
            try:
                if self._client is None:
                    self._client = await source.connect()
                return await self._client.fetch(request)
            except FetchRefused as refused:
                if refused.code != FetchErrorCode.UNAVAILABLE:
                    return refused
                reason = refused.reason
            except (ClientError, ConnectionError) as exc:
                reason = str(exc)
            await self.discard_connection()
            delay = backoff.next_delay()
            source.reconnects += 1
            log.warning(
                "fetch failed; reconnecting",
                extra={
                    "server": source.peer,
                    "partition": str(self.pid),
                    "offset": self._fetch_at,
                    "attempt": backoff.attempts,
                    "delay_s": round(delay, 3),
                    "error": reason,
                },
            )
            await trio.sleep(delay)

    def _take(self, result: FetchResult) -> None:
        self._hwm = result.high_water_mark
        at = self._fetch_at
        if result.gap:
            reason = SKIP_REPAIRED if result.gap_documented else SKIP_MISSING
            self._queue.append(_Skip(at, result.next_offset, reason))
            self._fetch_at = result.next_offset
            return
        if not result.records:
            return  # at the tail: nothing came within the wait
        batches, damage = split_batches(result.records, self._where)
        if batches and not batches[0].base <= at < batches[0].end:
            # Whole batches begin at or before the offset asked for, and hold it.
            self._queue.append(JournalCorrupt(self._where, 0, f"records do not hold offset {at}"))
            return
        if batches:
            self._queue.extend(batches)
            end = batches[-1].end
            self._queued += end - at
            self._refill_at = max((end - at) // 2, 1)
            self._fetch_at = end
        if damage is not None:
            self._queue.append(damage)  # read hands out what came before it, then raises it

    def _refused(self, refused: FetchRefused) -> None:
        if refused.code == FetchErrorCode.OFFSET_BELOW_EARLIEST:
            # Retention deleted what this reader was about to read: go on where data does.
            self._queue.append(_Skip(self._fetch_at, refused.earliest, SKIP_MISSING))
            self._fetch_at = refused.earliest
            return
        self._queue.append(_error_of(refused, self.pid, self._fetch_at, self._source.peer))


@asynccontextmanager
async def open_remote_source(
    host: str, port: int, config: RemoteReadConfig | None = None
) -> AsyncIterator[RemoteJournalSource]:
    """A ``RemoteJournalSource`` whose readers' tasks end with the block."""
    async with trio.open_nursery() as nursery:
        source = RemoteJournalSource(host, port, nursery, config)
        try:
            yield source
        finally:
            nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                await source.aclose()
