"""The journal: partitions of categories, each with its writer task, in one directory."""

from __future__ import annotations

import errno
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
    JournalClosed,
    JournalError,
    JournalFull,
    JournalLocked,
    UnknownPartition,
    WriterFailed,
)
from journal.fileio import FileIO
from journal.format import LOCK_FILE, encode_payload
from journal.identity import ensure_journal_id
from journal.layout import parse_partition_name, read_category
from journal.reader import JournalReader
from journal.recovery import PartitionState, create_partition, recover_partition
from journal.retention import retain_partition
from journal.types import (
    AppendResult,
    DeletedSegment,
    PartitionId,
    RetentionPolicy,
    WriterFailure,
)
from journal.writer import PartitionWriter, PendingBytes

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
        self._pending = PendingBytes()
        self._writers: dict[PartitionId, PartitionWriter] = {}
        self._refused: dict[PartitionId, BaseException] = {}
        self._create_lock = trio.Lock()
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
        if not set(map(type, messages)) <= _BYTES_ONLY:
            raise BatchRejected("messages must be bytes")
        if metadata is not None:
            metadata = _check_metadata(metadata, count)
        payload, flags = encode_payload(messages, metadata)
        if len(payload) > self.config.max_record_bytes:
            raise BatchRejected(
                f"batch of {len(payload)} bytes; the limit is {self.config.max_record_bytes}"
            )
        writer = self._writers.get(pid)
        if writer is None:
            writer = await self._create(pid)
        item = writer.enqueue(payload, count, flags)
        return await writer.wait(item)

    async def _create(self, pid: PartitionId) -> PartitionWriter:
        async with self._create_lock:
            if pid in self._refused:
                raise WriterFailed(pid, self._refused[pid])
            if self._closed:
                raise JournalClosed("the journal is closed")
            writer = self._writers.get(pid)
            if writer is not None:
                return writer
            try:
                state = await trio.to_thread.run_sync(
                    create_partition, self.directory, pid, self._io, limiter=self._limiter
                )
                writer = self._start_writer(state)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise JournalFull(pid, exc.errno) from exc
                raise WriterFailed(pid, exc) from exc
            log.info("journal partition created", extra={"partition": str(pid)})
            return writer

    def _start_writer(self, state: PartitionState) -> PartitionWriter:
        writer = PartitionWriter(
            state, self.config, self._io, self._clock, self._limiter, self._pending
        )
        self._writers[state.pid] = writer
        self._nursery.start_soon(writer.run)
        return writer

    @property
    def pending_bytes(self) -> int:
        """Bytes accepted by ``append`` and not yet durable (or failed)."""
        return self._pending.value

    # ---------------------------------------------------------------- state

    def failures(self) -> list[WriterFailure]:
        """Partitions that cannot acknowledge appends: failed writers and refused recoveries."""
        out = [WriterFailure(pid, exc) for pid, exc in self._refused.items()]
        out += [
            WriterFailure(pid, w.cause) for pid, w in self._writers.items() if w.cause is not None
        ]
        return sorted(out, key=lambda f: (f.pid.category, f.pid.partition))

    def partitions(self) -> list[PartitionId]:
        return sorted([*self._writers, *self._refused], key=lambda p: (p.category, p.partition))

    def _writer(self, pid: PartitionId) -> PartitionWriter:
        writer = self._writers.get(pid)
        if writer is not None:
            return writer
        if pid in self._refused:
            raise WriterFailed(pid, self._refused[pid])
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
    ) -> list[DeletedSegment]:
        """Delete old sealed segments of every partition by its category's policy, never at or
        above ``floor(pid)`` (None: no floor).  Blocking file I/O: call it in a worker thread
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
            )
        return deleted

    # ---------------------------------------------------------------- lifecycle

    async def _close(self) -> None:
        self._closed = True
        writers = list(self._writers.values())
        for writer in writers:
            writer.close()
        for writer in writers:
            await writer.finished.wait()


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


def _recover_all(
    directory: Path, config: JournalConfig, io: FileIO
) -> tuple[list[PartitionState], dict[PartitionId, BaseException]]:
    states: list[PartitionState] = []
    refused: dict[PartitionId, BaseException] = {}
    for category_dir in sorted(directory.iterdir()):
        if category_dir.name.startswith(".") or not category_dir.is_dir():
            continue
        try:
            category = read_category(category_dir)
        except (ValueError, OSError) as exc:
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
                refused[pid] = exc
                log.error(
                    "journal partition refused to open",
                    extra={"partition": str(pid), "error": str(exc)},
                )
    return states, refused


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
        states, refused = await trio.to_thread.run_sync(
            _recover_all, directory, config, io, limiter=limiter
        )
        try:
            async with trio.open_nursery() as nursery:
                journal = Journal(directory, config, clock, io, nursery, limiter, journal_id)
                journal._refused.update(refused)
                try:
                    for state in states:
                        journal._start_writer(state)
                    log.info(
                        "journal opened",
                        extra={
                            "dir": str(directory),
                            "partitions": len(states),
                            "refused": len(refused),
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
