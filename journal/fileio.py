"""The system calls of the write path, in one small class a test can replace.

Tests subclass ``FileIO`` to make ``fdatasync`` fail or count, or ``pwritev`` raise ENOSPC; the
journal calls nothing else to write or sync its files.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

Buffer = bytes | memoryview

# Linux's IOV_MAX: writev takes at most this many buffers per call.
IOV_MAX = 1024

# Errors that pass without anyone repairing anything: space is freed, descriptors are closed.
# The journal answers them with "try later" and tries again; every other OSError is fatal.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
NO_DESCRIPTOR_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE})
TRANSIENT_ERRNOS = DISK_FULL_ERRNOS | NO_DESCRIPTOR_ERRNOS

# ``write_file_atomic``'s temporary files: ``<name>.tmp-<pid>``.
TMP_INFIX = ".tmp-"


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a full disk or a lack of descriptors (see ``TRANSIENT_ERRNOS``)."""
    return isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS


@contextlib.contextmanager
def naming(path: Path) -> Iterator[None]:
    """Make an OSError raised inside name ``path``: pwritev and fdatasync errors name no file,
    and a log line that names no file cannot be acted on."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc


class FileIO:
    """Writes and syncs.  Every method is called from a worker thread and may block."""

    def pwritev(self, fd: int, buffers: Sequence[Buffer], offset: int) -> int:
        return os.pwritev(fd, buffers, offset)

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    def fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_all(io: FileIO, fd: int, buffers: Sequence[Buffer], offset: int) -> None:
    """Write every buffer, in order, at ``offset`` through ``io.pwritev`` (short writes go on)."""
    views = [memoryview(b) for b in buffers if len(b)]
    i = 0
    while i < len(views):
        written = io.pwritev(fd, views[i : i + IOV_MAX], offset)
        if written <= 0:
            raise OSError(errno.EIO, "write made no progress")
        offset += written
        while written > 0 and i < len(views):
            if written >= len(views[i]):
                written -= len(views[i])
                i += 1
            else:
                views[i] = views[i][written:]
                written = 0
        while i < len(views) and len(views[i]) == 0:
            i += 1


def pread_exact(fd: int, size: int, position: int) -> bytes:
    """Up to ``size`` bytes at ``position``: fewer only at the end of the file."""
    data = os.pread(fd, size, position)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, position + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def write_file_atomic(io: FileIO, path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: temporary file, fdatasync, rename, fsync of the directory.

    On failure ``path`` is unchanged, the temporary file is gone, and the OSError names ``path``.
    """
    tmp = path.with_name(f"{path.name}{TMP_INFIX}{os.getpid()}")
    with naming(path):
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                write_all(io, fd, [data], 0)
                io.fdatasync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            # A full disk must not leave a temporary file behind on every attempt.
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise
        io.fsync_dir(path.parent)


def stale_tmp_owner(name: str) -> int | None:
    """The pid in a ``write_file_atomic`` temporary file's name when that process is gone;
    None when ``name`` is no such name or its process may still be writing the file."""
    _, infix, pid = name.rpartition(TMP_INFIX)
    if not infix or not pid.isascii() or not pid.isdigit() or int(pid) <= 0:
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return int(pid)
    except (PermissionError, OverflowError):
        return None  # another user's live process; or a number no process can have
    return None
