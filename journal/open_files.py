"""A bound on the descriptors partition writers hold: the least recently used idle ones close.

Every writer keeps three files open while it writes (``PartitionFiles``), so a journal with many
partitions would hold three descriptors per partition for its lifetime, and a client inventing
categories could exhaust the process's descriptors.  ``FileBudget`` keeps at most ``limit``
writers' files open.  A writer brackets each of its worker-thread calls with ``budget.use``: that
opens its files if they were closed, first closing those of the least recently used writers that
are not inside a call of their own.

Why closing and reopening is safe:

* only a writer's own calls touch its descriptors, one call at a time, and only inside ``use``;
  ``use`` takes a victim's descriptors away under the budget's lock and only while the victim
  is outside ``use``, so no call of the victim can hold a descriptor that is being closed;
* nothing about a file lives in its descriptor: the writer keeps the positions, and reopens the
  same paths without truncating them.  Closing does not discard written data (it stays in the
  page cache until fdatasync, whichever descriptor that runs on; Linux reports a writeback error
  to the next fdatasync of the file even on a descriptor opened after it), so group commit and
  the INTERVAL and NONE modes keep their guarantees;
* readers never share a writer's descriptors: in-process readers learn the high-water mark from
  the writer object, other processes from their own descriptor of the ``hwm`` file, which the
  writer rewrites in place, so its inode never changes.

The bound can be exceeded by the writers inside a call at the same moment (at most the journal's
``io_threads``); the surplus is closed when those calls end.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator

# A segment, its index and the partition's hwm file.
FILES_PER_WRITER = 3


class PartitionFiles:
    """A writer's descriptors (-1: closed).  Touched only inside ``FileBudget.use``."""

    __slots__ = ("evicted", "hwm", "index", "segment")

    def __init__(self) -> None:
        self.segment = -1
        self.index = -1
        self.hwm = -1
        self.evicted = False  # closed by the budget, not by the writer

    @property
    def is_open(self) -> bool:
        return self.segment >= 0

    def take(self) -> list[int]:
        """The open descriptors, which the caller now closes; these files are closed after."""
        fds = [fd for fd in (self.segment, self.index, self.hwm) if fd >= 0]
        self.segment = self.index = self.hwm = -1
        return fds

    def close(self) -> None:
        close_all(self.take())


def close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


class FileBudget:
    """At most ``limit`` writers with open files (see the module docstring).  Thread-safe."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        # Writers whose files are open, least recently used first.
        self._open: OrderedDict[PartitionFiles, None] = OrderedDict()
        self._in_use: set[PartitionFiles] = set()
        self.reopened = 0  # how often a writer had to open its files again

    @property
    def open_writers(self) -> int:
        """Writers holding their files open now."""
        return len(self._open)

    @contextlib.contextmanager
    def use(self, files: PartitionFiles, open_files: Callable[[], None]) -> Iterator[None]:
        """Run the body with ``files`` open, opening them with ``open_files`` when closed.

        ``open_files`` fills ``files`` (and on failure closes what it opened and raises).
        """
        closing: list[int] = []
        with self._lock:
            self._in_use.add(files)
            if not files.is_open:
                closing = self._evict(self.limit - 1)
                if files.evicted:
                    files.evicted = False
                    self.reopened += 1
        try:
            close_all(closing)
            if not files.is_open:
                open_files()
                with self._lock:
                    self._open[files] = None  # counted from now on, though not evictable yet
            yield
        finally:
            with self._lock:
                self._in_use.discard(files)
                if files.is_open:
                    self._open[files] = None
                    self._open.move_to_end(files)
                else:
                    self._open.pop(files, None)
                closing = self._evict(self.limit)
            close_all(closing)

    def forget(self, files: PartitionFiles) -> None:
        """``files`` were closed by their writer for good."""
        with self._lock:
            self._open.pop(files, None)

    def _evict(self, keep: int) -> list[int]:
        """Take the descriptors of the least recently used idle writers until at most ``keep``
        writers are open (fewer when too many are inside a call); the caller closes them."""
        fds: list[int] = []
        excess = len(self._open) - keep
        if excess <= 0:
            return fds
        for victim in list(self._open):
            if excess <= 0:
                break
            if victim in self._in_use:
                continue
            fds += victim.take()
            victim.evicted = True
            del self._open[victim]
            excess -= 1
        return fds
