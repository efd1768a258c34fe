"""Fixtures for the journal tests: the injectable system calls and clock, crash images.

Fakes stay at the I/O boundary: they wrap the real ``FileIO`` (real files in ``tmp_path``) and
only count, delay or fail.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import pytest

from journal import FileIO
from journal.format import HEADER_SIZE, encode_payload


class CountingIO(FileIO):
    """Counts fdatasync calls; ``delay_s`` makes each one slow (as a real disk can be)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.fdatasyncs = 0
        self.delay_s = delay_s
        self._lock = threading.Lock()

    def fdatasync(self, fd: int) -> None:
        with self._lock:
            self.fdatasyncs += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        super().fdatasync(fd)


class FailingFsyncIO(FileIO):
    """fdatasync raises EIO while ``failing`` is set (after the data reached the page cache)."""

    def __init__(self) -> None:
        self.failing = False

    def fdatasync(self, fd: int) -> None:
        if self.failing:
            raise OSError(errno.EIO, "injected fdatasync failure")
        super().fdatasync(fd)


class FullDiskIO(FileIO):
    """While ``full``, a write stores part of its first buffer, then fails with ENOSPC, like a
    file system that runs out of blocks mid-write."""

    def __init__(self) -> None:
        self.full = False
        self.failures = 0

    def pwritev(self, fd: int, buffers: Sequence[bytes | memoryview], offset: int) -> int:
        if self.full:
            self.failures += 1
            first = bytes(buffers[0])
            if self.failures % 2 and len(first) > 1:
                os.pwrite(fd, first[: len(first) // 2], offset)
                return len(first) // 2  # a short write; the next call fails
            raise OSError(errno.ENOSPC, "injected: no space left on device")
        return super().pwritev(fd, buffers, offset)


class BlockingFsyncIO(FileIO):
    """fdatasync waits for ``release`` while ``block`` is set; ``entered`` is set meanwhile."""

    def __init__(self) -> None:
        self.block = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def fdatasync(self, fd: int) -> None:
        if self.block:
            self.entered.set()
            self.release.wait(10)
        super().fdatasync(fd)


class FakeClock:
    """Wall-clock seconds that only move when a test says so."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def record_size(messages: list[bytes]) -> int:
    """Bytes one batch of ``messages`` takes on disk."""
    payload, _ = encode_payload(messages, None)
    return HEADER_SIZE + len(payload)


def crash_image(journal_dir: Path, dest: Path) -> Path:
    """Copy a journal as a ``kill -9`` would leave it: taken while it is open and idle."""
    shutil.copytree(journal_dir, dest)
    return dest


@pytest.fixture
def kit() -> SimpleNamespace:
    return SimpleNamespace(
        CountingIO=CountingIO,
        FailingFsyncIO=FailingFsyncIO,
        FullDiskIO=FullDiskIO,
        BlockingFsyncIO=BlockingFsyncIO,
        FakeClock=FakeClock,
        record_size=record_size,
        crash_image=crash_image,
    )
