"""The journal's configuration: one frozen, validated dataclass.

Every number declares its range in its annotation (``annotated_types``), so the application's
settings loader reports a value out of range under its key, and ``__post_init__`` holds the same
ranges for anyone who builds the dataclass directly.
"""

from __future__ import annotations

import dataclasses
import enum
import operator
import typing
from dataclasses import dataclass
from typing import Annotated

from annotated_types import Interval

MiB = 1 << 20

# Three descriptors a writer: 262,144 writers stay under Linux's ceiling for one process
# (nr_open, 1,048,576), so any value allowed can also be granted.
MAX_OPEN_PARTITIONS = 1 << 18
# A million directories (and writer tasks) is beyond what one journal directory should hold.
MAX_CATEGORIES = 1_000_000
# The format's u32 fields: a batch's count, and its length (with the header's 64 bytes).
MAX_BATCH_COUNT = 0xFFFF_FFFF
MAX_RECORD_BYTES = 0xFFFF_FFFF - 64
HOUR_S = 3600.0


class Durability(enum.Enum):
    """When an append is acknowledged.

    ``FSYNC``: after an fdatasync covering the batch (group commit: one fdatasync covers every
    batch queued meanwhile).  ``INTERVAL``: after the write; the data is fdatasynced every
    ``fsync_interval_ms``.  A process crash loses nothing (the page cache survives it), but a power
    loss or kernel crash can lose up to that interval of acknowledged messages.  ``NONE``: after the
    write; fdatasync only when a segment is sealed and on close.
    """

    FSYNC = "fsync"
    INTERVAL = "interval"
    NONE = "none"


@dataclass(frozen=True)
class JournalConfig:
    """Settings of one journal directory (all partitions share them)."""

    # Segments are the unit of retention: 128 MiB is a few seconds of full-rate ingest, small
    # enough that retention frees space in fine steps, large enough that a partition has few files.
    # At most 2 GiB, as Kafka's segment.bytes: a segment is read and recovered as one file.
    segment_bytes: Annotated[int, Interval(gt=0, le=2048 * MiB)] = 128 * MiB
    # Checked at each append: a partition written to now and then still rolls hourly, so
    # age-based retention (which never deletes the active segment) can delete its old data.
    # At most a week: a quiet partition still rolls within a retention period that matters.
    segment_age_s: Annotated[float, Interval(gt=0, le=7 * 24 * HOUR_S)] = HOUR_S
    # One index entry per 4 KiB of log (Kafka's default): a seek reads at most that much extra.
    # At most 1 MiB, the most a seek should read past the entry it found.
    index_interval_bytes: Annotated[int, Interval(gt=0, le=MiB)] = 4096
    durability: Durability = Durability.FSYNC
    # With ``INTERVAL``: at most a minute of acknowledged messages at risk on a power loss.
    fsync_interval_ms: Annotated[int, Interval(gt=0, le=60_000)] = 50
    # Scribe clients send at most a few thousand entries per Log call; 100,000 bounds the per-
    # batch work and leaves room for large replays.  The format allows up to 2**32 - 1.
    max_batch_messages: Annotated[int, Interval(gt=0, le=MAX_BATCH_COUNT)] = 100_000
    # Bounds the memory a reader or recovery allocates from one length field read from disk
    # (a garbage length is rejected instead of allocated).  64 MiB is four times Scribe's usual
    # 16 MiB frame limit, and under the format's 4 GiB.
    max_record_bytes: Annotated[int, Interval(gt=0, le=MAX_RECORD_BYTES)] = 64 * MiB
    # Readers in other processes poll the high-water-mark file (in-process readers are woken by
    # the writer).  50 ms keeps tail latency low at ~20 tiny reads per second per reader.
    # At most a minute, past which a reader in another process looks stuck.
    tail_poll_interval_s: Annotated[float, Interval(gt=0, le=60.0)] = 0.05
    # The checkpoint (high-water-mark file) is rewritten after every commit but fdatasynced at
    # most this often: recovery after a power loss scans at most about this much of the tail.
    checkpoint_fsync_interval_s: Annotated[float, Interval(gt=0, le=HOUR_S)] = 1.0
    # Worker threads doing the blocking writes and fsyncs, shared by all partitions.  Each
    # partition has one write in flight at a time, so this bounds disk concurrency.
    # At most 256: beyond that, threads only queue at the disk.
    io_threads: Annotated[int, Interval(gt=0, le=256)] = 8
    # Partition writers whose files (segment, index, hwm: three descriptors) stay open; the
    # least recently used idle ones close them and reopen on their next write (three opens,
    # microseconds beside an fdatasync).  128 writers hold 384 descriptors: the hot partitions
    # of a usual deployment, and room for connections under a 1,024 descriptor limit.  At most
    # ``MAX_OPEN_PARTITIONS``.
    max_open_partitions: Annotated[int, Interval(gt=0, le=MAX_OPEN_PARTITIONS)] = 128
    # Categories the journal creates (each is a directory, and a writer task per partition);
    # appends that would create one more raise ``CategoryLimitReached``.  Scribe deployments use
    # tens to hundreds; 10,000 leaves room for per-host or per-service names while keeping a
    # client that invents categories from filling the disk with directories and the start-up
    # with recoveries (about 1.4 ms a partition measured here: 14 s for 10,000).  At most
    # ``MAX_CATEGORIES``.
    max_categories: Annotated[int, Interval(gt=0, le=MAX_CATEGORIES)] = 10_000
    # A partition refused for a passing reason (disk full, out of descriptors) is recovered again
    # this often: once a second brings it back soon after space returns, for one tail recovery
    # a second while it stays full.  At most an hour, so a partition returns while it matters.
    transient_retry_interval_s: Annotated[float, Interval(gt=0, le=HOUR_S)] = 1.0
    # Batches of at least this many messages are checked and packed in a worker thread, so a
    # large call does not hold the event loop (and the small calls of other clients): 4096
    # entries take about 4 ms inline, more than a thread's hand-over costs.
    thread_encode_messages: Annotated[int, Interval(gt=0, le=MAX_BATCH_COUNT)] = 4096

    def __post_init__(self) -> None:
        if not isinstance(self.durability, Durability):
            raise ValueError(f"durability must be one of {[d.value for d in Durability]}")
        hints = typing.get_type_hints(JournalConfig, include_extras=True)
        for field in dataclasses.fields(self):
            hint = hints[field.name]
            if typing.get_origin(hint) is Annotated:
                base, *markers = typing.get_args(hint)
                _check_range(field.name, getattr(self, field.name), base, markers)


_COMPARISONS = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}


def _check_range(name: str, value: object, base: type, markers: list[object]) -> None:
    """``value`` is a ``base`` (an int is a float too, a bool is neither) within every declared
    bound; NaN is within none.  (``scribe_compat.ranges`` has its twin: neither package may
    import the other.)"""
    wanted = "a number" if base is float else "an integer"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be {wanted}, not {value!r}")
    if base is int and not isinstance(value, int):
        raise ValueError(f"{name} must be {wanted}, not {value!r}")
    for marker in markers:
        for bound, compare in _COMPARISONS.items():
            limit = getattr(marker, bound, None)
            if limit is not None and not compare(value, limit):
                raise ValueError(f"{name} must be {bound} {limit}, not {value!r}")
