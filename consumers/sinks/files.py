"""The file sink: Scribe's file store layout, safe for several writer processes.

Layout (as Scribe writes it)::

    <file_path>/<category>/<category>[-YYYY-MM-DD]_NNNNN   the data files (5-digit suffix, or more)
    <file_path>/<category>/<category>_current              symlink to the newest data file
    <file_path>/<category>/.<category>.lock                 flock held around each batch
    <file_path>/<category>/.<category>.state                JSON: {"file": name, "bucket": n}

``<category>`` is the journal's filesystem-safe category encoding (plain names stay unchanged).
The date appears only when rotating by period; the suffix restarts at 00000 for each new date
(Scribe's ``findNewestFile`` per base name).  With no state, a writer appends to the newest file
of the current base name, as Scribe does after a restart.

Each message is written as is, followed by a newline when ``add_newlines`` is set.  A file is
rotated before a message that would take it over ``max_size`` (a single larger message gets a
file of its own), and before the first write in a new period bucket.  Buckets count whole periods
since the epoch in local time (or UTC), so ``hourly`` and ``daily`` rotate on the hour and at
midnight.

Every process consuming the group may write the same category (the local coordinator spreads a
category's partitions over processes), so the current file and bucket live on disk in the state
file, and a batch is written under the category's flock: one batch is contiguous in one file
(or a run of files), and rotation is decided by one writer at a time.  ``write`` returns after
fdatasync of every file it touched and an fsync of the directory when it created a file.  On an
error the current file is truncated back to where the batch began (best effort) and ``SinkError``
is raised: the batch comes again.

Files are named by the partition's (journal) category; the original category a catch-all route
keeps in the metadata is not used here (the forwarder uses it).  At most ``max_open_files`` data
files stay open; the least recently written category not being written is closed first.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from consumers.config import FileSinkConfig
from consumers.sinks.base import SinkError, SinkUnusable
from journal import JournalMessage, PartitionId, category_dir_name

SUFFIX_DIGITS = 5


@dataclass
class _OpenFile:
    name: str
    fd: int
    inode: int


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _flocked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class FileSink:
    """Writes each partition's messages into its category's Scribe-style files."""

    def __init__(self, config: FileSinkConfig, *, clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._clock = clock
        self._period = config.rotate_period_s
        self._limiter = trio.CapacityLimiter(config.io_threads)
        self._locks: dict[bytes, trio.Lock] = {}
        self._open: dict[bytes, _OpenFile] = {}
        self._counters = {"messages": 0, "bytes": 0, "batches": 0, "files created": 0, "errors": 0}
        self._closed = False

    def check_file_path(self) -> None:
        """Create ``file_path`` if needed and a file in it, or raise ``SinkUnusable``.

        Blocking; run once at start.  A directory that can never be written is a configuration
        error to report at once, not a failure to retry per partition for ever.
        """
        path = Path(self._config.file_path)
        try:
            path.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=path)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            reason = f"{path.absolute()} is not a writable directory: {exc.strerror or exc}"
            raise SinkUnusable("files", "file_path", reason) from exc

    # The data fsync (a test may replace it with a failing one).
    def _fsync(self, fd: int) -> None:
        os.fdatasync(fd)

    def metrics(self) -> dict[str, int]:
        return dict(self._counters)

    async def write(self, pid: PartitionId, messages: Sequence[JournalMessage]) -> None:
        if self._closed:
            raise SinkError("files", pid, "sink is closed")
        if not messages:
            return
        newline = b"\n" if self._config.add_newlines else b""
        chunks = (
            [m.message + newline for m in messages] if newline else [m.message for m in messages]
        )
        lock = self._locks.setdefault(pid.category, trio.Lock())
        async with lock:
            self._evict(keep=pid.category)
            now = self._clock()
            try:
                # Never abandoned on cancellation: the thread finishes the batch (STYLE 6).
                await trio.to_thread.run_sync(
                    self._write_blocking, pid.category, chunks, now, limiter=self._limiter
                )
            except OSError as exc:
                self._counters["errors"] += 1
                raise SinkError("files", pid, f"{exc.strerror or exc} ({exc.filename})") from exc
        self._counters["messages"] += len(chunks)
        self._counters["bytes"] += sum(map(len, chunks))
        self._counters["batches"] += 1

    def _evict(self, keep: bytes) -> None:
        """Close the least recently used files over the limit (runs in the trio thread)."""
        if keep in self._open:
            self._open[keep] = self._open.pop(keep)  # most recently used last
        excess = len(self._open) - self._config.max_open_files + 1
        for category in list(self._open):
            if excess <= 0:
                break
            if category == keep or self._locks[category].locked():
                continue  # a thread may be writing it
            os.close(self._open.pop(category).fd)
            excess -= 1

    async def aclose(self) -> None:
        self._closed = True
        for category in list(self._locks):
            async with self._locks[category]:
                opened = self._open.pop(category, None)
                if opened is not None:
                    os.close(opened.fd)

    # -- names and periods -------------------------------------------------------------------

    def category_dir(self, category: bytes) -> Path:
        return Path(self._config.file_path) / category_dir_name(category)

    def _localtime(self, now: float) -> time.struct_time:
        return time.gmtime(now) if self._config.timezone == "utc" else time.localtime(now)

    def _bucket(self, now: float) -> int | None:
        if self._period is None:
            return None
        offset = 0 if self._config.timezone == "utc" else self._localtime(now).tm_gmtoff
        return int((now + offset) // self._period)

    def _base_name(self, name: str, now: float) -> str:
        if self._period is None:
            return name
        return f"{name}-{time.strftime('%Y-%m-%d', self._localtime(now))}"

    @staticmethod
    def _newest_suffix(directory: Path, base: str) -> int | None:
        pattern = re.compile(re.escape(base) + rf"_(\d{{{SUFFIX_DIGITS},}})")
        newest: int | None = None
        for entry in os.listdir(directory):
            match = pattern.fullmatch(entry)
            if match is not None:
                suffix = int(match.group(1))
                newest = suffix if newest is None else max(newest, suffix)
        return newest

    # -- the blocking write ------------------------------------------------------------------

    def _open_file(self, category: bytes, directory: Path, name: str) -> _OpenFile:
        opened = self._open.get(category)
        path = directory / name
        if opened is not None:
            if opened.name == name:
                try:
                    if os.stat(path).st_ino == opened.inode:
                        return opened
                except FileNotFoundError:
                    pass
            del self._open[category]
            os.close(opened.fd)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        opened = _OpenFile(name, fd, os.fstat(fd).st_ino)
        self._open[category] = opened
        return opened

    def _new_file(self, category: bytes, directory: Path, now: float, increment: bool) -> _OpenFile:
        name = category_dir_name(category)
        base = self._base_name(name, now)
        newest = self._newest_suffix(directory, base)
        suffix = 0 if newest is None else newest + (1 if increment else 0)
        file_name = f"{base}_{suffix:0{SUFFIX_DIGITS}d}"
        existed = (directory / file_name).exists()
        opened = self._open_file(category, directory, file_name)
        if self._config.create_symlink:
            link = directory / f"{name}_current"
            tmp = directory / f".{name}_current.tmp"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.symlink(file_name, tmp)
            os.replace(tmp, link)
        state = directory / f".{name}.state"
        tmp_state = directory / f".{name}.state.tmp"
        tmp_state.write_text(json.dumps({"file": file_name, "bucket": self._bucket(now)}))
        os.replace(tmp_state, state)
        _fsync_dir(directory)
        if not existed:
            self._counters["files created"] += 1
        return opened

    def _current(self, category: bytes, directory: Path, now: float) -> _OpenFile:
        name = category_dir_name(category)
        try:
            state = json.loads((directory / f".{name}.state").read_bytes())
            file_name = str(state["file"])
            bucket = state.get("bucket")
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return self._new_file(category, directory, now, increment=False)
        if bucket != self._bucket(now) or not (directory / file_name).exists():
            return self._new_file(category, directory, now, increment=True)
        return self._open_file(category, directory, file_name)

    def _flush(self, opened: _OpenFile, buffer: list[bytes]) -> None:
        data = memoryview(b"".join(buffer))
        while data:
            data = data[os.write(opened.fd, data) :]
        self._fsync(opened.fd)
        buffer.clear()

    def _write_blocking(self, category: bytes, chunks: list[bytes], now: float) -> None:
        directory = self.category_dir(category)
        directory.mkdir(parents=True, exist_ok=True)
        name = category_dir_name(category)
        with _flocked(directory / f".{name}.lock"):
            opened = self._current(category, directory, now)
            start = size = os.fstat(opened.fd).st_size
            buffer: list[bytes] = []
            try:
                for chunk in chunks:
                    if size > 0 and size + len(chunk) > self._config.max_size:
                        self._flush(opened, buffer)
                        opened = self._new_file(category, directory, now, increment=True)
                        start = size = os.fstat(opened.fd).st_size
                    buffer.append(chunk)
                    size += len(chunk)
                self._flush(opened, buffer)
            except OSError:
                # Leave no half batch behind in the current file; earlier files of this batch
                # are complete and fsynced (the batch comes again: duplicates, never gaps).
                with contextlib.suppress(OSError):
                    os.ftruncate(opened.fd, start)
                raise
