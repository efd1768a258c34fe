"""fdatasync timing for the histogram ``scribe_pipeline_journal_fsync_seconds``.

The journal's write path makes every system call through ``journal.FileIO``, the one small
class it lets its user replace (STYLE 8); timing wraps it, so the journal imports nothing of
metrics and its writer is unchanged.  The calls run in the journal's worker threads;
``prometheus_client`` histograms take a lock per observation, so that is safe.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from journal import FileIO
from journal.fileio import Buffer


class TimedFileIO(FileIO):
    """``inner``'s calls, with each fdatasync's duration handed to ``observe`` (seconds)."""

    def __init__(self, inner: FileIO, observe: Callable[[float], None]) -> None:
        self._inner = inner
        self._observe = observe

    def pwritev(self, fd: int, buffers: Sequence[Buffer], offset: int) -> int:
        return self._inner.pwritev(fd, buffers, offset)

    def fdatasync(self, fd: int) -> None:
        started = time.perf_counter()
        try:
            self._inner.fdatasync(fd)
        finally:
            self._observe(time.perf_counter() - started)

    def fsync_dir(self, path: Path) -> None:
        self._inner.fsync_dir(path)
