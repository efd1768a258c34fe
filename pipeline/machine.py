"""The machine's own limits, measured beside every ingest benchmark.

A durable ``Log`` can be no faster than the disk's fdatasync rate allows (one fsync per group
commit) and its sequential write bandwidth; reporting both next to the server's figures shows
how close the server gets to the hardware.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class MachineLimits:
    fdatasync_per_s: float
    sequential_write_mb_s: float
    cores: int


def fdatasync_rate(directory: Path, seconds: float = 2.0, block: int = 4096) -> float:
    """Appends of ``block`` bytes, each followed by fdatasync, per second."""
    path = directory / "fdatasync.probe"
    data = b"\0" * block
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        count = 0
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            os.write(fd, data)
            os.fdatasync(fd)
            count += 1
        return count / (time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink()


def sequential_write_rate(directory: Path, total_mb: int = 512, chunk_mb: int = 1) -> float:
    """MB/s for writing ``total_mb`` in ``chunk_mb`` pieces, fdatasync included at the end."""
    path = directory / "sequential.probe"
    chunk = os.urandom(chunk_mb << 20)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        start = time.perf_counter()
        for _ in range(total_mb // chunk_mb):
            os.write(fd, chunk)
        os.fdatasync(fd)
        return total_mb / (time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink()


def measure(directory: Path, *, seconds: float = 2.0, total_mb: int = 512) -> MachineLimits:
    directory.mkdir(parents=True, exist_ok=True)
    return MachineLimits(
        fdatasync_per_s=fdatasync_rate(directory, seconds),
        sequential_write_mb_s=sequential_write_rate(directory, total_mb),
        cores=os.cpu_count() or 1,
    )
