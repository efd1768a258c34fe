"""The process's file descriptors: raise the soft limit at start, refuse a limit too low to run,
and say when descriptors run short (fb303 status WARNING).

Every connection, and every partition writer with open files (three each, at most
``journal.max_open_partitions`` of them), takes descriptors.  A server at its limit cannot
accept, open a partition, or even restart cleanly, so the limit is checked before anything runs.
"""

from __future__ import annotations

import logging
import os
import resource
from dataclasses import dataclass

from journal import FILES_PER_WRITER

log = logging.getLogger(__name__)

_FD_DIR = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"


@dataclass(frozen=True)
class DescriptorLimit:
    soft: int
    hard: int
    raised_from: int | None  # the soft limit before ``raise_soft_limit``; None: unchanged


def raise_soft_limit() -> DescriptorLimit:
    """Raise the soft RLIMIT_NOFILE to the hard limit: a soft limit below it only makes the
    server fail sooner, and the hard limit is what the operator granted."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard in (resource.RLIM_INFINITY, soft):
        # An unlimited hard limit cannot be a soft one (Linux caps it at nr_open): keep soft.
        return DescriptorLimit(soft, hard, None)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.warning(
            "file descriptor limit not raised",
            extra={"soft": soft, "hard": hard, "error": str(exc)},
        )
        return DescriptorLimit(soft, hard, None)
    log.info("file descriptor limit raised", extra={"from": soft, "to": hard})
    return DescriptorLimit(hard, hard, soft)


def needed_descriptors(max_open_partitions: int, min_free: int) -> int:
    """What the server needs at least: its writers' files, and the reserve kept free."""
    return max_open_partitions * FILES_PER_WRITER + min_free


def check_limit(limit: DescriptorLimit, max_open_partitions: int, min_free: int) -> str | None:
    """Why the limit is too low to start (one line naming the settings), or None."""
    needed = needed_descriptors(max_open_partitions, min_free)
    if limit.soft >= needed:
        return None
    return (
        f"the file descriptor limit is {limit.soft} (hard limit {limit.hard}), below the "
        f"{needed} this configuration needs (journal.max_open_partitions = "
        f"{max_open_partitions} writers x {FILES_PER_WRITER} files + "
        f"journal.min_free_descriptors = {min_free}): raise the limit (ulimit -n, systemd "
        f"LimitNOFILE=) or lower journal.max_open_partitions"
    )


def open_descriptors() -> int:
    """Descriptors this process has open now (listing the directory costs one more)."""
    return len(os.listdir(_FD_DIR)) - 1


class DescriptorWatch:
    """Whether descriptors run short: fewer than ``min_free`` left under the soft limit."""

    def __init__(self, min_free: int) -> None:
        self.min_free = min_free

    def in_use(self) -> int:
        return open_descriptors()

    def problem(self) -> str | None:
        """Why descriptors are short, for fb303 status details; None when they are not."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return None
        try:
            used = self.in_use()
        except OSError:
            # Listing needs a descriptor itself: none left is the shortest possible.
            return f"out of file descriptors (limit {soft})"
        if soft - used >= self.min_free:
            return None
        return (
            f"file descriptors running short: {used} of {soft} in use, fewer than "
            f"journal.min_free_descriptors = {self.min_free} free"
        )
