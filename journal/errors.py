"""The journal's errors: one tree, each error carrying the fields a caller acts on.

    JournalError
     ├── JournalCorrupt(file, position, reason)      damage found on disk; names where
     │    └── UnsupportedFormat(file, position, version)
     │                                               written by a newer format version (never cut)
     ├── JournalFull(pid, errno)                     ENOSPC/EDQUOT: nothing of the batch is on disk,
     │                                               the writer keeps working (answer TRY_LATER)
     ├── TooManyOpenFiles(pid, errno)                EMFILE/ENFILE: the same, for a process (or
     │                                               system) out of file descriptors
     ├── WriterFailed(pid, cause)                    the partition's writer is permanently failed
     │                                               (fsync or I/O error, or recovery refused the
     │                                               partition); it never acknowledges again
     ├── JournalClosed                               the journal is closing or closed
     ├── JournalLocked(path)                         another process has the journal open
     ├── UnknownJournal(path)                        also a LookupError: no journal identity file
     │                                               (no writer has opened the directory yet)
     ├── UnknownPartition(pid)                       also a LookupError
     ├── OffsetOutOfRange(pid, offset, earliest, high_water_mark)
     │                                               also an IndexError; deleted by retention, or
     │                                               beyond what is durable
     └── BatchRejected(reason)                       also a ValueError: an append over the limits
          └── CategoryLimitReached(category, limit)  the append would create a category beyond
                                                     ``max_categories``

OS errors of the write path are translated in ``journal.writer``; damage found while reading is
raised as ``JournalCorrupt`` by whoever knows the file (the format module itself raises only the
internal ``journal.format.FormatError``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from journal.types import PartitionId


class JournalError(Exception):
    """Base of every error the journal raises."""


class JournalCorrupt(JournalError):  # noqa: N818 (names fixed by the interface)
    """Invalid data where valid data must be: ``file`` at byte ``position``."""

    def __init__(self, file: Path, position: int, reason: str) -> None:
        super().__init__(f"{file}: corrupt at byte {position}: {reason}")
        self.file = file
        self.position = position
        self.reason = reason


class UnsupportedFormat(JournalCorrupt):
    """A checksummed record of a format version this code does not read."""

    def __init__(self, file: Path, position: int, version: int) -> None:
        super().__init__(
            file, position, f"format version {version} is not supported by this version"
        )
        self.version = version


class JournalFull(JournalError):  # noqa: N818 (names fixed by the interface)
    """The file system is full (or over quota); the batch was rolled back."""

    def __init__(self, pid: PartitionId, errno: int) -> None:
        super().__init__(f"{pid}: no space left for the batch (errno {errno}); nothing was written")
        self.pid = pid
        self.errno = errno


class TooManyOpenFiles(JournalError):  # noqa: N818 (names fixed by the interface)
    """The process (or system) is out of file descriptors; nothing of the batch was written."""

    def __init__(self, pid: PartitionId, errno: int) -> None:
        super().__init__(
            f"{pid}: out of file descriptors for the batch (errno {errno}); nothing was written"
        )
        self.pid = pid
        self.errno = errno


class WriterFailed(JournalError):  # noqa: N818 (names fixed by the interface)
    """The partition cannot acknowledge appends any more; ``cause`` says why."""

    def __init__(self, pid: PartitionId, cause: BaseException) -> None:
        super().__init__(f"{pid}: writer failed: {cause}")
        self.pid = pid
        self.cause = cause


class JournalClosed(JournalError):  # noqa: N818 (names fixed by the interface)
    """The journal was closed (or is closing) before the operation could run."""


class JournalLocked(JournalError):  # noqa: N818 (names fixed by the interface)
    """Another process holds the journal directory's lock."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path}: the journal is in use by another process")
        self.path = path


class UnknownJournal(JournalError, LookupError):  # noqa: N818 (names fixed by the interface)
    """No journal identity at ``path``: no writer has opened that journal directory yet."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"{path}: no journal identity (no writer has opened this journal directory yet)"
        )
        self.path = path


class UnknownPartition(JournalError, LookupError):  # noqa: N818 (names fixed by the interface)
    """No such partition in this journal."""

    def __init__(self, pid: PartitionId) -> None:
        super().__init__(f"{pid}: no such partition")
        self.pid = pid


class OffsetOutOfRange(JournalError, IndexError):  # noqa: N818 (names fixed by the interface)
    """``offset`` is below the earliest retained offset or above the high-water mark."""

    def __init__(self, pid: PartitionId, offset: int, earliest: int, high_water_mark: int) -> None:
        super().__init__(
            f"{pid}: offset {offset} out of range "
            f"(earliest {earliest}, high-water mark {high_water_mark})"
        )
        self.pid = pid
        self.offset = offset
        self.earliest = earliest
        self.high_water_mark = high_water_mark


class BatchRejected(JournalError, ValueError):  # noqa: N818 (names fixed by the interface)
    """An append the journal refuses before writing anything (over a limit, malformed)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CategoryLimitReached(BatchRejected):
    """The append would create a new category, and the journal holds ``limit`` already."""

    def __init__(self, category: bytes, limit: int) -> None:
        super().__init__(
            f"category {category.decode('utf-8', 'backslashreplace')!r} would be new, and the "
            f"journal holds its limit of {limit} categories (max_categories)"
        )
        self.category = category
        self.limit = limit
