"""Admission: whether a ``Log`` call may be written, decided before anything is written.

TRY_LATER is Scribe's backpressure, so every reason to refuse answers it at once instead of
queueing in memory: the server is stopping, the bytes waiting for the journal are over a limit,
a configured rate is exceeded, or the disk is (nearly) full.  The empty ``Log([])`` probe runs
exactly these checks.  Writer failures are per partition and checked by the handler, which knows
which partitions a call touches.
"""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from annotated_types import Ge, Gt, Interval

MiB = 1 << 20


@dataclass(frozen=True)
class AdmissionConfig:
    """The ``[admission]`` table."""

    # Bytes accepted but not yet durable.  With group commit the queue drains every fsync, so
    # this only fills when the disk falls behind; 256 MiB is ~1 s of a fast disk and bounds
    # the server's memory.  (A call larger than this is admitted alone, when nothing else is
    # pending, so no limit refuses a call for ever.)
    max_pending_bytes: Annotated[int, Ge(1)] = 256 * MiB
    # Scribe's max_msg_per_second; 0 turns the limit off (the default, as in Scribe).
    rate_messages_per_s: Annotated[float, Ge(0)] = 0.0
    rate_bytes_per_s: Annotated[float, Ge(0)] = 0.0
    # How much unused rate may be saved up, in seconds of the rate.
    rate_burst_s: Annotated[float, Gt(0)] = 1.0
    # Refuse before the file system is full, so a full disk never reaches the journal's write.
    # 0 leaves only the journal's own ENOSPC to refuse.
    min_free_disk_bytes: Annotated[int, Ge(0)] = 256 * MiB
    # statvfs is cheap but not free; checking once a second is enough to stop in time.  At
    # most a minute: a fast disk fills tens of GiB in longer, and the check would come late.
    disk_check_interval_s: Annotated[float, Interval(gt=0, le=60)] = 1.0


class Refusal(enum.Enum):
    """Why a call was answered TRY_LATER; the value is the Scribe counter it feeds."""

    STOPPING = "denied for stopping"
    QUEUE = "denied for queue size"
    RATE = "denied for rate"
    DISK = "denied for disk space"
    DESCRIPTORS = "denied for file descriptors"
    WRITER = "denied for failed writer"


class TokenBucket:
    """A rate limit that may go into debt by one call, so batches larger than the burst pass."""

    def __init__(self, rate: float, burst_s: float, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.capacity = rate * burst_s
        self.tokens = self.capacity
        self._clock = clock
        self._last = clock()

    def ready(self) -> bool:
        """Whether a call may pass now (the bucket is not in debt)."""
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.rate)
        self._last = now
        return self.tokens >= 0

    def spend(self, amount: float) -> None:
        self.tokens -= amount


def free_disk_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


class Admission:
    """The global admission checks, shared by every connection."""

    def __init__(
        self,
        config: AdmissionConfig,
        *,
        pending_bytes: Callable[[], int],
        free_disk: Callable[[], int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stopping = False
        self._pending_bytes = pending_bytes
        self._free_disk = free_disk
        self._clock = clock
        self._disk_checked_at = -float("inf")
        self._disk_ok = True
        self._disk_full = False
        self.reconfigure(config)

    def reconfigure(self, config: AdmissionConfig) -> None:
        """Apply new limits (``reinitialize``); rate buckets start full."""
        self.config = config
        self._messages = self._bucket(config.rate_messages_per_s)
        self._bytes = self._bucket(config.rate_bytes_per_s)
        self._disk_checked_at = -float("inf")

    def _bucket(self, rate: float) -> TokenBucket | None:
        return TokenBucket(rate, self.config.rate_burst_s, self._clock) if rate else None

    def check(self, count: int, nbytes: int) -> Refusal | None:
        """None to admit a call of ``count`` messages and ``nbytes`` bytes, else the refusal."""
        if self.stopping:
            return Refusal.STOPPING
        pending = self._pending_bytes()
        limit = self.config.max_pending_bytes
        # ">=" for the queue itself: a full queue refuses even the empty probe.  With nothing
        # pending any call passes, however large: otherwise a call over the limit could never.
        if pending >= limit or (pending and pending + nbytes > limit):
            return Refusal.QUEUE
        if not self.disk_ok():
            return Refusal.DISK
        # Both rates are checked before either is spent: a refused call costs nothing.
        buckets = [(b, n) for b, n in ((self._messages, count), (self._bytes, nbytes)) if b]
        if not all(bucket.ready() for bucket, _ in buckets):
            return Refusal.RATE
        for bucket, amount in buckets:
            bucket.spend(amount)
        return None

    def disk_ok(self) -> bool:
        now = self._clock()
        if now - self._disk_checked_at >= self.config.disk_check_interval_s:
            self._disk_checked_at = now
            try:
                free = self._free_disk()
            except OSError:
                free = 0
            self._disk_ok = free >= self.config.min_free_disk_bytes and free > 0
            self._disk_full = False
        return self._disk_ok and not self._disk_full

    def disk_problem(self) -> str | None:
        """Why the disk check refuses calls, for fb303 status details; None when it does not."""
        if self.disk_ok():
            return None
        if self._disk_full:
            return "the journal's disk is full"
        return "free disk space is below admission.min_free_disk_bytes"

    def note_disk_full(self) -> None:
        """The journal hit ENOSPC: refuse until the next check finds space again."""
        self._disk_full = True
        self._disk_checked_at = self._clock()
