"""One partition's writer: group commit in a trio task, blocking I/O in a worker thread.

``append`` enqueues a packed batch and waits.  The writer task takes *everything* queued, assigns
offsets, and hands the group to one worker-thread call (``trio.to_thread.run_sync`` with the
journal's ``CapacityLimiter``; never abandoned on cancellation, so a write is never half-done
behind our back) that writes it with as few ``pwritev`` calls as segments it spans, and under
FSYNC fdatasyncs once.  Then the high-water mark advances, in memory and in the ``hwm`` file, and
the waiters and in-process readers wake.  Batches that arrive during that fdatasync form the
next group: one fdatasync covers them all.

Invariants (the worker thread owns the files and the ``_state``; the trio side owns the queue,
``hwm`` and the events; they meet only at the thread call's arguments and result):

* offsets are assigned in the worker thread at write time, from ``_state.next_offset``, which
  advances only after a successful write; ENOSPC/EDQUOT truncates the file back to where the
  failed write began, so nothing of those batches remains and their offsets are reused by the
  next batches (no reader could have seen them: they were never below the high-water mark);
* a failed fdatasync (or any other I/O error) fails the writer for good: it never acknowledges
  again, because after a failed fsync the kernel may have dropped the dirty pages and a retry can
  "succeed" without the data (the PostgreSQL fsync lesson);
* the checkpoint in the ``hwm`` file only ever names fdatasynced data;
* message times (``journal.format``'s time rule) are assigned with the offsets, from ``_last_us``,
  the time of the last message written, which also advances only after a successful write.  It
  starts at the end of the millisecond of the last batch recovery kept, so times strictly
  increase along the partition across groups, segments and restarts;
* the files are opened by the thread calls, inside the journal's ``FileBudget`` (which may close
  them while the writer is idle: ``journal.open_files`` says why that is safe).  Failing to open
  them for want of descriptors (or space for a missing index) fails only that group, like ENOSPC.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import trio

from journal.config import Durability, JournalConfig
from journal.errors import JournalClosed, JournalFull, TooManyOpenFiles, WriterFailed
from journal.fileio import DISK_FULL_ERRNOS, FileIO, is_transient, naming, write_all
from journal.format import (
    HEADER_SIZE,
    HWM_FILE,
    INDEX_ENTRY_SIZE,
    NO_BATCH,
    US_PER_MS,
    IndexEntry,
    batch_times,
)
from journal.format import encode_header as _encode_header
from journal.format import encode_index_entry as _encode_index_entry
from journal.open_files import FileBudget, PartitionFiles
from journal.recovery import PartitionState, checkpoint_of
from journal.segments import index_path, segment_path
from journal.types import AppendResult, PartitionId

log = logging.getLogger(__name__)


def transient_error(pid: PartitionId, code: int) -> JournalFull | TooManyOpenFiles:
    """The error a batch gets when nothing of it was written for a passing reason."""
    if code in DISK_FULL_ERRNOS:
        return JournalFull(pid, code)
    return TooManyOpenFiles(pid, code)


class PendingBytes:
    """Bytes accepted by ``append`` and not yet resolved, across all partitions."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


class _Pending:
    """One queued append (one per batch, never per message)."""

    __slots__ = ("base_offset", "count", "done", "error", "flags", "payload")

    def __init__(self, payload: bytes, count: int, flags: int) -> None:
        self.payload = payload
        self.count = count
        self.flags = flags
        self.done = trio.Event()
        self.base_offset = -1
        self.error: BaseException | None = None


class _Transient(Exception):  # noqa: N818 (internal signal, never escapes)
    """Disk full or out of descriptors: what is not written yet of the group is refused."""

    def __init__(self, code: int) -> None:
        super().__init__(os.strerror(code))
        self.code = code


def _transient_or_same(exc: OSError) -> Exception:
    return _Transient(exc.errno or errno.EIO) if is_transient(exc) else exc


@dataclass
class _Outcome:
    done: int  # the first ``done`` items of the group are written (durable under the mode)
    hwm: int
    transient_errno: int | None = None
    fatal: BaseException | None = None


class PartitionWriter:
    """Owns a partition's files while the journal is open."""

    def __init__(
        self,
        state: PartitionState,
        config: JournalConfig,
        io: FileIO,
        clock: Callable[[], float],
        limiter: trio.CapacityLimiter,
        pending: PendingBytes,
        budget: FileBudget,
    ) -> None:
        self.pid: PartitionId = state.pid
        self.path = state.path
        self._config = config
        self._io = io
        self._clock = clock
        self._limiter = limiter
        self._pending = pending
        # trio side
        self.hwm = state.next_offset
        self.cause: BaseException | None = None
        self._queue: list[_Pending] = []
        self._inflight: list[_Pending] = []
        self._wake = trio.Event()
        self._advanced = trio.Event()
        self._closing = False
        self.finished = trio.Event()
        self._sync_due: float | None = None
        # worker-thread side
        self._state = state
        # ``last_timestamp_ms`` is the last batch's ``max_ts_ms``, the millisecond of its last
        # message (-1: none), so the next message's time is above that batch's every message.
        self._last_us = (state.last_timestamp_ms + 1) * US_PER_MS - 1
        self._checkpoint = checkpoint_of(state)
        self._hwm_ts = state.last_timestamp_ms
        self._hwm_synced_at = time.monotonic()
        self._last_index_position = state.index_entries[-1].position if state.index_entries else 0
        self._budget = budget
        self._files = PartitionFiles()
        self._index_size = len(state.index_entries) * INDEX_ENTRY_SIZE

    # ---------------------------------------------------------------- trio side

    @property
    def active_segment(self) -> int:
        """First offset of the segment being written (retention never deletes it)."""
        return self._state.segment_base

    @property
    def failed(self) -> bool:
        return self.cause is not None

    def enqueue(self, payload: bytes, count: int, flags: int) -> _Pending:
        if self.cause is not None:
            raise WriterFailed(self.pid, self.cause)
        if self._closing:
            raise JournalClosed("the journal is closing")
        item = _Pending(payload, count, flags)
        self._queue.append(item)
        self._pending.value += len(payload)
        self._wake.set()
        return item

    async def wait(self, item: _Pending) -> AppendResult:
        await item.done.wait()
        if item.error is not None:
            raise item.error
        return AppendResult(item.base_offset, item.count)

    async def wait_beyond(self, offset: int) -> None:
        """Return once the high-water mark is above ``offset``."""
        while self.hwm <= offset:
            if self.cause is not None:
                raise WriterFailed(self.pid, self.cause)
            if self._closing:
                raise JournalClosed("the journal is closing")
            await self._advanced.wait()

    def close(self) -> None:
        """Drain the queue, sync, write the clean checkpoint, close the files (in ``run``)."""
        self._closing = True
        self._wake.set()
        self._advanced.set()

    async def run(self) -> None:
        try:
            await self._loop()
        except Exception as exc:
            # A bug here must not take the other partitions down: this one stops acknowledging.
            log.exception("journal writer crashed", extra={"partition": str(self.pid)})
            self._fail(exc)
        finally:
            leftovers = self._inflight + self._queue
            self._inflight, self._queue = [], []
            for item in leftovers:
                if not item.done.is_set():
                    self._resolve(item, JournalClosed("the journal closed before the write"))
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._close_sync, limiter=self._limiter)
            self._advanced.set()
            self.finished.set()

    async def _loop(self) -> None:
        interval = self._config.durability is Durability.INTERVAL
        while True:
            if self._sync_due is not None and trio.current_time() >= self._sync_due:
                self._sync_due = None
                await self._run_in_thread(self._sync_sync)
                continue
            if self._queue:
                group, self._queue = self._queue, []
                if self.cause is not None:
                    for item in group:
                        self._resolve(item, WriterFailed(self.pid, self.cause))
                    continue
                await self._commit(group)
                if interval and self._sync_due is None and self.cause is None:
                    self._sync_due = trio.current_time() + self._config.fsync_interval_ms / 1000
                continue
            if self._closing:
                return
            self._wake = trio.Event()
            if self._sync_due is not None:
                with trio.move_on_at(self._sync_due):
                    await self._wake.wait()
            else:
                await self._wake.wait()

    async def _run_in_thread(self, fn: Callable[[], _Outcome]) -> None:
        if self.cause is not None:
            return
        outcome = await trio.to_thread.run_sync(fn, limiter=self._limiter)
        self._advance(outcome.hwm)
        if outcome.fatal is not None:
            self._fail(outcome.fatal)
        elif outcome.transient_errno is not None and self._sync_due is None:
            # The files could not be opened for the periodic sync: the data waits, try again.
            self._sync_due = trio.current_time() + self._config.fsync_interval_ms / 1000

    async def _commit(self, group: list[_Pending]) -> None:
        # The worker thread keeps times increasing, whatever the wall clock does.
        now_ms = int(self._clock() * 1000)
        self._inflight = group
        outcome = await trio.to_thread.run_sync(
            self._write_group, group, now_ms, limiter=self._limiter
        )
        self._inflight = []
        for i, item in enumerate(group):
            if i < outcome.done:
                self._resolve(item, None)
            elif outcome.fatal is not None:
                self._resolve(item, WriterFailed(self.pid, outcome.fatal))
            else:
                assert outcome.transient_errno is not None
                self._resolve(item, transient_error(self.pid, outcome.transient_errno))
        self._advance(outcome.hwm)
        if outcome.fatal is not None:
            self._fail(outcome.fatal)

    def _resolve(self, item: _Pending, error: BaseException | None) -> None:
        item.error = error
        self._pending.value -= len(item.payload)
        item.done.set()

    def _advance(self, hwm: int) -> None:
        if hwm > self.hwm:
            self.hwm = hwm
            self._advanced.set()
            self._advanced = trio.Event()

    def _fail(self, cause: BaseException) -> None:
        if self.cause is not None:
            return
        self.cause = cause
        log.error(
            "journal writer failed; the partition no longer acknowledges appends",
            extra={"partition": str(self.pid), "error": repr(cause)},
        )
        for item in self._queue:
            self._resolve(item, WriterFailed(self.pid, cause))
        self._queue = []
        self._advanced.set()

    # ---------------------------------------------------------------- worker thread

    def _open_files(self) -> None:
        """Open the active segment, its index and the hwm file (worker thread, inside ``use``)."""
        files = self._files
        segment = segment_path(self.path, self._state.segment_base)
        index = index_path(self.path, self._state.segment_base)
        hwm = self.path / HWM_FILE
        try:
            with naming(segment):
                files.segment = os.open(segment, os.O_WRONLY)
            with naming(index):
                files.index = os.open(index, os.O_WRONLY | os.O_CREAT, 0o644)
            with naming(hwm):
                files.hwm = os.open(hwm, os.O_WRONLY)
        except BaseException:
            files.close()
            raise

    def _with_files(self, body: Callable[[], _Outcome]) -> _Outcome:
        """``body`` with the files open; a passing failure to open them refuses the work."""
        try:
            with self._budget.use(self._files, self._open_files):
                return body()
        except OSError as exc:  # only opening raises: ``body`` returns its errors
            if is_transient(exc):
                return _Outcome(0, self.hwm, transient_errno=exc.errno)
            return _Outcome(0, self.hwm, fatal=exc)

    def _write_group(self, group: list[_Pending], now_ms: int) -> _Outcome:
        return self._with_files(lambda: self._write_group_open(group, now_ms))

    def _write_group_open(self, group: list[_Pending], now_ms: int) -> _Outcome:
        st = self._state
        cfg = self._config
        age_ms = cfg.segment_age_s * 1000
        done = 0
        chunk: list[bytes] = []
        marks: list[IndexEntry] = []
        position, offset, last_batch = st.segment_size, st.next_offset, st.last_batch
        segment_first_ms = st.segment_first_timestamp_ms
        last_index = self._last_index_position
        last_us = self._last_us
        now_us = now_ms * US_PER_MS
        in_chunk = 0
        try:
            for item in group:
                size = HEADER_SIZE + len(item.payload)
                # The time rule (journal.format): the batch's messages get the microseconds
                # after the last message's, or from now on.
                first = max(now_us, last_us + 1)
                first_ms, first_us, max_ms = batch_times(first, item.count)
                if position > 0 and (
                    position + size > cfg.segment_bytes
                    or (segment_first_ms is not None and first_ms - segment_first_ms >= age_ms)
                ):
                    self._commit_chunk(
                        chunk, marks, position, offset, last_batch, segment_first_ms, last_us
                    )
                    done += in_chunk
                    chunk, marks, in_chunk = [], [], 0
                    self._roll(offset)
                    position, last_batch, segment_first_ms, last_index = 0, NO_BATCH, None, 0
                item.base_offset = offset
                if position - last_index >= cfg.index_interval_bytes:
                    marks.append(IndexEntry(offset, position, max_ms))
                    last_index = position
                chunk.append(
                    _encode_header(
                        item.payload, item.flags, offset, item.count, first_ms, first_us, max_ms
                    )
                )
                chunk.append(item.payload)
                in_chunk += 1
                last_batch = position
                position += size
                offset += item.count
                last_us = first + item.count - 1
                if segment_first_ms is None:
                    segment_first_ms = first_ms
            self._commit_chunk(
                chunk, marks, position, offset, last_batch, segment_first_ms, last_us
            )
            done += in_chunk
            if cfg.durability is Durability.FSYNC:
                self._io.fdatasync(self._files.segment)
                self._checkpoint = checkpoint_of(st)
        except _Transient as exc:
            # Batches of earlier chunks were sealed (fdatasynced) by a roll: they stand.
            transient: int | None = exc.code
        except OSError as exc:
            # Acknowledge nothing of the group: what was written may not be durable.
            return _Outcome(0, self.hwm, fatal=exc)
        else:
            transient = None
        try:
            return _Outcome(done, self._publish(), transient_errno=transient)
        except OSError as exc:
            return _Outcome(0, self.hwm, fatal=exc)

    def _visible(self) -> int:
        if self._config.durability is Durability.FSYNC:
            return self._checkpoint.cp_offset
        return self._state.next_offset

    def _publish(self, *, sync: bool = False) -> int:
        """Rewrite the ``hwm`` file; fdatasync it when asked or when it is time to."""
        hwm = self._visible()
        self._hwm_ts = self._state.last_timestamp_ms
        record = self._checkpoint
        data = type(record)(
            hwm,
            self._hwm_ts,
            record.cp_segment,
            record.cp_position,
            record.cp_offset,
            record.cp_last_batch,
            record.cp_timestamp_ms,
            clean=record.clean,
        ).encode()
        os.pwrite(self._files.hwm, data, 0)
        now = time.monotonic()
        if sync or now - self._hwm_synced_at >= self._config.checkpoint_fsync_interval_s:
            self._io.fdatasync(self._files.hwm)
            self._hwm_synced_at = now
        return hwm

    def _commit_chunk(
        self,
        chunk: list[bytes],
        marks: list[IndexEntry],
        position: int,
        offset: int,
        last_batch: int,
        segment_first_ms: int | None,
        last_us: int,
    ) -> None:
        if not chunk:
            return
        st = self._state
        start = st.segment_size
        try:
            write_all(self._io, self._files.segment, chunk, start)
        except OSError as exc:
            # Take back whatever part of the chunk reached the file; if that fails too the
            # file's end is unknown and the writer must stop.
            os.ftruncate(self._files.segment, start)
            if exc.errno in DISK_FULL_ERRNOS:
                raise _Transient(exc.errno) from exc
            raise
        st.segment_size = position
        st.next_offset = offset
        st.last_batch = last_batch
        # The last batch's max_ts_ms: the millisecond of its last message.
        st.last_timestamp_ms = last_us // US_PER_MS
        st.segment_first_timestamp_ms = segment_first_ms
        self._last_us = last_us
        if marks:
            self._append_index(marks)

    def _append_index(self, marks: list[IndexEntry]) -> None:
        data = b"".join(
            _encode_index_entry(m.offset, m.position, m.max_timestamp_ms) for m in marks
        )
        try:
            os.pwrite(self._files.index, data, self._index_size)
        except OSError as exc:
            # The index is a hint: a reader scans further, and verify/repair rebuild it.
            log.warning(
                "journal index write failed",
                extra={"partition": str(self.pid), "error": repr(exc)},
            )
            with contextlib.suppress(OSError):
                os.ftruncate(self._files.index, self._index_size)
            return
        self._index_size += len(data)
        self._state.index_entries.extend(marks)
        self._last_index_position = marks[-1].position

    def _roll(self, new_base: int) -> None:
        """Seal the active segment (fdatasync) and start one at ``new_base``."""
        st = self._state
        files = self._files
        self._io.fdatasync(files.segment)
        self._checkpoint = checkpoint_of(st)
        path = segment_path(self.path, new_base)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            raise _transient_or_same(exc) from exc
        try:
            index_fd = os.open(
                index_path(self.path, new_base), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644
            )
        except OSError as exc:
            os.close(fd)
            # The roll is retried with the next group, and O_EXCL must find no file then.
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise _transient_or_same(exc) from exc
        os.close(files.segment)
        os.close(files.index)
        files.segment, files.index, self._index_size = fd, index_fd, 0
        self._io.fsync_dir(self.path)
        st.segment_base, st.segment_size, st.last_batch = new_base, 0, NO_BATCH
        st.segment_first_timestamp_ms = None
        st.index_entries = []
        self._last_index_position = 0
        self._checkpoint = checkpoint_of(st)
        self._publish(sync=True)
        log.info(
            "journal segment rolled", extra={"partition": str(self.pid), "base_offset": new_base}
        )

    def _sync_sync(self) -> _Outcome:
        """INTERVAL mode's periodic fdatasync."""
        return self._with_files(self._sync_open)

    def _sync_open(self) -> _Outcome:
        try:
            self._io.fdatasync(self._files.segment)
            self._checkpoint = checkpoint_of(self._state)
            return _Outcome(0, self._publish())
        except OSError as exc:
            return _Outcome(0, self.hwm, fatal=exc)

    def _close_sync(self) -> None:
        try:
            if self.cause is None:
                with self._budget.use(self._files, self._open_files):
                    self._io.fdatasync(self._files.segment)
                    self._checkpoint = checkpoint_of(self._state, clean=True)
                    self._publish(sync=True)
        except OSError as exc:
            # The next start recovers from the last checkpoint instead: slower, not wrong.
            log.error(
                "journal close failed to sync",
                extra={"partition": str(self.pid), "error": str(exc)},
            )
        finally:
            self._files.close()
            self._budget.forget(self._files)
