"""The journal: partitions of categories, each with its writer task, in one directory.

Bounds against a client that invents categories: at most ``max_categories`` categories
(``claim_category``; appends beyond it raise ``CategoryLimitReached``), and at most
``max_open_partitions`` writers holding their files open (``journal.open_files``).

A partition whose recovery fails for a passing reason (a full disk, no descriptors left) is
"unavailable", not refused: ``failures()`` lists it as transient, its appends raise the passing
error (``JournalFull``, ``TooManyOpenFiles``), and it is recovered again every
``transient_retry_interval_s`` until that succeeds or finds a lasting problem.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from journal.config import JournalConfig
from journal.errors import (
    BatchRejected,
    CategoryLimitReached,
    JournalClosed,
    JournalCorrupt,
    JournalError,
    JournalLocked,
    UnknownPartition,
    WriterFailed,
)
from journal.fileio import FileIO, is_transient
from journal.format import LOCK_FILE, encode_payload
from journal.identity import ensure_journal_id
from journal.layout import parse_partition_name, partition_dir, read_category
from journal.open_files import FILES_PER_WRITER, FileBudget
from journal.reader import JournalReader
from journal.recovery import PartitionState, create_partition, recover_partition
from journal.retention import retain_partition
from journal.types import (
    AppendResult,
    DeletedSegment,
    PartitionId,
    RetentionHold,
    RetentionPolicy,
    WriterFailure,
)
from journal.writer import PartitionWriter, PendingBytes, transient_error

log = logging.getLogger(__name__)

_BYTES_ONLY = frozenset({bytes})


class _WriterHighWaterMark:
    """An in-process reader's view of its partition's writer."""

    def __init__(self, writer: PartitionWriter) -> None:
        self._writer = writer

    def high_water_mark(self) -> int:
        return self._writer.hwm

    async def wait_beyond(self, offset: int) -> None:
        await self._writer.wait_beyond(offset)

    def close(self) -> None:
        pass


class Journal:
    """An open journal directory.  Use ``open_journal``; every method runs in its trio thread."""

    def __init__(
        self,
        directory: Path,
        config: JournalConfig,
        clock: Callable[[], float],
        io: FileIO,
        nursery: trio.Nursery,
        limiter: trio.CapacityLimiter,
        journal_id: uuid.UUID,
    ) -> None:
        self.directory = directory
        self.config = config
        self._journal_id = journal_id
        self._clock = clock
        self._io = io
        self._nursery = nursery
        self._limiter = limiter
        # Packing is bound by the GIL: a second thread would only take turns with the first.
        self._encode_limiter = trio.CapacityLimiter(1)
        self._pending = PendingBytes()
        self._budget = FileBudget(config.max_open_partitions)
        self._writers: dict[PartitionId, PartitionWriter] = {}
        # Refused for good (damage: an operator repairs it), or for now (retried).
        self._refused: dict[PartitionId, BaseException] = {}
        self._unavailable: dict[PartitionId, OSError] = {}
        # Categories on disk, and those claimed for appends about to create them.
        self._categories: set[bytes] = set()
        self._create_lock = trio.Lock()
        self._retry_scope = trio.CancelScope()
        self._closed = False

    @property
    def journal_id(self) -> uuid.UUID:
        """The journal's identity (``.journal-id``): created with it, never changed."""
        return self._journal_id

    # ---------------------------------------------------------------- writing

    async def append(
        self,
        category: bytes,
        partition: int,
        messages: list[bytes],
        metadata: list[dict[bytes, bytes] | None] | None = None,
    ) -> AppendResult:
        """Append one batch; returns once it is durable under the configured mode.

        Messages get dense consecutive offsets in order.  Raises ``JournalFull`` (nothing
        written; try later), ``WriterFailed``, ``JournalClosed``, ``BatchRejected``.
        """
        if self._closed:
            raise JournalClosed("the journal is closed")
        pid = PartitionId(category, partition)
        count = len(messages)
        if count == 0:
            writer = self._writers.get(pid)
            return AppendResult(writer.hwm if writer is not None else 0, 0)
        if count > self.config.max_batch_messages:
            raise BatchRejected(
                f"{count} messages in one append; the limit is {self.config.max_batch_messages}"
            )
        if count >= self.config.thread_encode_messages:
            # Checking and packing 100,000 entries holds the event loop 100-250 ms, and every
            # other client's call with it; a worker thread gives the loop the GIL meanwhile.
            payload, flags = await trio.to_thread.run_sync(
                _payload, messages, metadata, limiter=self._encode_limiter
            )
        else:
            payload, flags = _payload(messages, metadata)
        if len(payload) > self.config.max_record_bytes:
            raise BatchRejected(
                f"batch of {len(payload)} bytes; the limit is {self.config.max_record_bytes}"
            )
        writer = self._writers.get(pid)
        if writer is None:
            writer = await self._create(pid)
        item = writer.enqueue(payload, count, flags)
        return await writer.wait(item)

    def claim_category(self, category: bytes, *, beyond_limit: bool = False) -> bool:
        """Whether appends may create partitions of ``category``: it exists or was claimed, or
        the journal holds fewer than ``max_categories`` (then it is claimed now, so callers that
        decide before appending never overshoot the limit together).  ``beyond_limit`` claims it
        in any case (a configured catch-all category must stay writable)."""
        if category in self._categories:
            return True
        if not beyond_limit and len(self._categories) >= self.config.max_categories:
            return False
        self._categories.add(category)
        return True

    @property
    def category_count(self) -> int:
        """Categories on disk or claimed (``claim_category``)."""
        return len(self._categories)

    async def _create(self, pid: PartitionId) -> PartitionWriter:
        async with self._create_lock:
            if pid in self._refused:
                raise WriterFailed(pid, self._refused[pid])
            if self._closed:
                raise JournalClosed("the journal is closed")
            writer = self._writers.get(pid)
            if writer is not None:
                return writer
            if (unavailable := self._unavailable.get(pid)) is not None:
                raise transient_error(pid, unavailable.errno or 0) from unavailable
            if not self.claim_category(pid.category):
                raise CategoryLimitReached(pid.category, self.config.max_categories)
            try:
                state = await trio.to_thread.run_sync(
                    _open_partition, self.directory, pid, self.config, self._io,
                    limiter=self._limiter,
                )  # fmt: skip
            except OSError as exc:
                if is_transient(exc):
                    raise transient_error(pid, exc.errno or 0) from exc
                raise WriterFailed(pid, exc) from exc
            except JournalError as exc:
                raise WriterFailed(pid, exc) from exc
            log.info("journal partition created", extra={"partition": str(pid)})
            return self._start_writer(state)

    def _start_writer(self, state: PartitionState) -> PartitionWriter:
        writer = PartitionWriter(
            state, self.config, self._io, self._clock, self._limiter, self._pending, self._budget
        )
        self._writers[state.pid] = writer
        self._categories.add(state.pid.category)
        self._nursery.start_soon(writer.run)
        return writer

    async def _retry_unavailable(self) -> None:
        """Recover unavailable partitions again, every ``transient_retry_interval_s``."""
        with self._retry_scope:
            while True:
                await trio.sleep(self.config.transient_retry_interval_s)
                for pid in list(self._unavailable):
                    await self._retry(pid)

    async def _retry(self, pid: PartitionId) -> None:
        async with self._create_lock:
            previous = self._unavailable.get(pid)
            if previous is None or self._closed:
                return
            try:
                state = await trio.to_thread.run_sync(
                    recover_partition, self.directory, pid, self.config, self._io,
                    limiter=self._limiter,
                )  # fmt: skip
            except (JournalError, OSError) as exc:
                del self._unavailable[pid]
                # Said once per change, not once per attempt: a disk may stay full for hours.
                changed = not _same_failure(exc, previous)
                _file_refusal(self._refused, self._unavailable, pid, exc, log_it=changed)
                return
            del self._unavailable[pid]
            self._start_writer(state)
            log.info(
                "journal partition available again",
                extra={"partition": str(pid), "next_offset": state.next_offset},
            )

    @property
    def pending_bytes(self) -> int:
        """Bytes accepted by ``append`` and not yet durable (or failed)."""
        return self._pending.value

    # ---------------------------------------------------------------- state

    def failures(self) -> list[WriterFailure]:
        """Partitions that cannot acknowledge appends: failed writers, refused recoveries, and
        partitions unavailable for now (``transient``)."""
        out = [WriterFailure(pid, exc) for pid, exc in self._refused.items()]
        out += [WriterFailure(pid, exc, transient=True) for pid, exc in self._unavailable.items()]
        out += [
            WriterFailure(pid, w.cause) for pid, w in self._writers.items() if w.cause is not None
        ]
        return sorted(out, key=lambda f: (f.pid.category, f.pid.partition))

    def partitions(self) -> list[PartitionId]:
        return sorted(
            [*self._writers, *self._refused, *self._unavailable],
            key=lambda p: (p.category, p.partition),
        )

    @property
    def open_partition_files(self) -> int:
        """Descriptors the partition writers hold now (see ``max_open_partitions``)."""
        return self._budget.open_writers * FILES_PER_WRITER

    @property
    def reopened_partitions(self) -> int:
        """How often a writer had to open its files again after the bound closed them."""
        return self._budget.reopened

    def _writer(self, pid: PartitionId) -> PartitionWriter:
        writer = self._writers.get(pid)
        if writer is not None:
            return writer
        if pid in self._refused:
            raise WriterFailed(pid, self._refused[pid])
        if pid in self._unavailable:
            raise WriterFailed(pid, self._unavailable[pid])
        raise UnknownPartition(pid)

    def high_water_mark(self, pid: PartitionId) -> int:
        """The next offset after the data readers may see (durable under the mode)."""
        return self._writer(pid).hwm

    def open_reader(
        self, pid: PartitionId, offset: int | None, *, skip_gaps: bool = False
    ) -> JournalReader:
        """A reader woken by the writer (no polling), from ``offset`` or, when None, the
        earliest offset kept; see ``journal.reader``."""
        writer = self._writer(pid)
        return JournalReader(
            writer.path,
            pid,
            offset,
            self.config,
            _WriterHighWaterMark(writer),
            skip_gaps=skip_gaps,
            io=self._io,
        )

    # ---------------------------------------------------------------- retention

    def apply_retention(
        self,
        policy_for: Callable[[bytes], RetentionPolicy],
        floor: Callable[[PartitionId], int | None],
        held: Callable[[RetentionHold], None] | None = None,
    ) -> list[DeletedSegment]:
        """Delete old sealed segments of every partition by its category's policy, never at or
        above ``floor(pid)`` (None: no floor); ``held`` hears of each partition whose floor kept
        a segment the policy would delete.  Blocking file I/O: call it in a worker thread
        (``trio.to_thread.run_sync``) on a large journal."""
        now = self._clock()
        deleted: list[DeletedSegment] = []
        for pid, writer in list(self._writers.items()):
            deleted += retain_partition(
                writer.path,
                pid,
                policy_for(pid.category),
                floor(pid),
                writer.active_segment,
                now,
                self.config,
                self._io,
                held,
            )
        return deleted

    # ---------------------------------------------------------------- lifecycle

    async def _close(self) -> None:
        self._closed = True
        self._retry_scope.cancel()
        writers = list(self._writers.values())
        for writer in writers:
            writer.close()
        for writer in writers:
            await writer.finished.wait()


def _payload(
    messages: list[bytes], metadata: list[dict[bytes, bytes] | None] | None
) -> tuple[bytes, int]:
    """The checked batch's payload and flags (see `encode_payload`); raises BatchRejected."""
    if not set(map(type, messages)) <= _BYTES_ONLY:
        raise BatchRejected("messages must be bytes")
    if metadata is not None:
        metadata = _check_metadata(metadata, len(messages))
    return encode_payload(messages, metadata)


def _check_metadata(
    metadata: list[dict[bytes, bytes] | None], count: int
) -> list[dict[bytes, bytes] | None] | None:
    if len(metadata) != count:
        raise BatchRejected(f"{len(metadata)} metadata entries for {count} messages")
    present = False
    for meta in metadata:
        if meta is None:
            continue
        if not isinstance(meta, dict) or not all(
            type(k) is bytes and type(v) is bytes for k, v in meta.items()
        ):
            raise BatchRejected("metadata must map bytes to bytes")
        present = True
    return metadata if present else None


def _open_partition(
    directory: Path, pid: PartitionId, config: JournalConfig, io: FileIO
) -> PartitionState:
    """A partition the journal does not know yet: recovered if it is on disk (a category the
    start-up could not list), created otherwise."""
    if partition_dir(directory, pid).is_dir():
        return recover_partition(directory, pid, config, io)
    return create_partition(directory, pid, io)


def _file_of(exc: BaseException) -> str | None:
    if isinstance(exc, JournalCorrupt):
        return str(exc.file)
    if isinstance(exc, OSError) and exc.filename is not None:
        return str(exc.filename)
    return None


def _same_failure(exc: BaseException, previous: OSError) -> bool:
    if not isinstance(exc, OSError):
        return False
    return (exc.errno, exc.filename) == (previous.errno, previous.filename)


def _file_refusal(
    refused: dict[PartitionId, BaseException],
    unavailable: dict[PartitionId, OSError],
    pid: PartitionId,
    exc: BaseException,
    *,
    log_it: bool = True,
) -> None:
    """Record why ``pid`` did not open: for now (retried) or for good."""
    extra = {"partition": str(pid), "file": _file_of(exc), "error": str(exc)}
    if isinstance(exc, OSError) and is_transient(exc):
        unavailable[pid] = exc
        if log_it:
            log.error("journal partition unavailable for now; retrying", extra=extra)
        return
    refused[pid] = exc
    log.error("journal partition refused to open", extra=extra)


def _recover_all(
    directory: Path, config: JournalConfig, io: FileIO
) -> tuple[list[PartitionState], dict[PartitionId, BaseException], dict[PartitionId, OSError]]:
    states: list[PartitionState] = []
    refused: dict[PartitionId, BaseException] = {}
    unavailable: dict[PartitionId, OSError] = {}
    for category_dir in sorted(directory.iterdir()):
        if category_dir.name.startswith(".") or not category_dir.is_dir():
            continue
        try:
            category = read_category(category_dir)
        except (ValueError, OSError) as exc:
            if is_transient(exc):
                raise  # a category that cannot be read now is no reason to forget it
            log.warning(
                "journal directory entry ignored: not a category",
                extra={"path": str(category_dir), "error": repr(exc)},
            )
            continue
        for part in sorted(category_dir.iterdir()):
            number = parse_partition_name(part.name)
            if number is None or not part.is_dir():
                continue
            pid = PartitionId(category, number)
            try:
                states.append(recover_partition(directory, pid, config, io))
            except (JournalError, OSError) as exc:
                _file_refusal(refused, unavailable, pid, exc)
    return states, refused, unavailable


def _lock(directory: Path) -> int:
    path = directory / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JournalLocked(directory) from None
    return fd


def _unlock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


@asynccontextmanager
async def open_journal(
    directory: Path,
    config: JournalConfig,
    *,
    clock: Callable[[], float] = time.time,
    file_io: FileIO | None = None,
) -> AsyncIterator[Journal]:
    """Open (creating if needed) a journal directory and recover its partitions.

    A directory without an identity gets one (``Journal.journal_id``); a damaged identity file
    refuses to open it (``JournalCorrupt``).  Partitions whose recovery refuses to open (damage
    before the tail) are reported by ``failures()`` and their appends raise ``WriterFailed``; the
    others work.  On exit every writer drains its queue, fdatasyncs, and writes a clean
    checkpoint.
    ``clock`` gives wall-clock seconds (timestamps, segment age); ``file_io`` is the write path's
    system calls (tests replace it).
    """
    io = file_io or FileIO()
    directory = Path(directory)
    if not directory.is_dir():
        directory.mkdir(parents=True)
        io.fsync_dir(directory.parent)
    lock = _lock(directory)
    try:
        limiter = trio.CapacityLimiter(config.io_threads)
        journal_id = await trio.to_thread.run_sync(
            ensure_journal_id, directory, io, limiter=limiter
        )
        states, refused, unavailable = await trio.to_thread.run_sync(
            _recover_all, directory, config, io, limiter=limiter
        )
        try:
            async with trio.open_nursery() as nursery:
                journal = Journal(directory, config, clock, io, nursery, limiter, journal_id)
                journal._refused.update(refused)
                journal._unavailable.update(unavailable)
                journal._categories.update(p.category for p in [*refused, *unavailable])
                try:
                    for state in states:
                        journal._start_writer(state)
                    nursery.start_soon(journal._retry_unavailable)
                    log.info(
                        "journal opened",
                        extra={
                            "dir": str(directory),
                            "partitions": len(states),
                            "refused": len(refused),
                            "unavailable": len(unavailable),
                            "categories": journal.category_count,
                        },
                    )
                    yield journal
                finally:
                    with trio.CancelScope(shield=True):
                        await journal._close()
        except BaseExceptionGroup as group:
            # Writer tasks do not raise, so a lone exception is the caller's own: give it back
            # unwrapped, as if the journal were not a nursery.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
    finally:
        _unlock(lock)
