"""The journal's configuration: one frozen, validated dataclass."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

MiB = 1 << 20

# Three descriptors a writer: 262,144 writers stay under Linux's ceiling for one process
# (nr_open, 1,048,576), so any value allowed can also be granted.
MAX_OPEN_PARTITIONS = 1 << 18
# A million directories (and writer tasks) is beyond what one journal directory should hold.
MAX_CATEGORIES = 1_000_000


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
    segment_bytes: int = 128 * MiB
    # Checked at each append: a partition written to now and then still rolls hourly, so
    # age-based retention (which never deletes the active segment) can delete its old data.
    segment_age_s: float = 3600.0
    # One index entry per 4 KiB of log (Kafka's default): a seek reads at most that much extra.
    index_interval_bytes: int = 4096
    durability: Durability = Durability.FSYNC
    fsync_interval_ms: int = 50
    # Scribe clients send at most a few thousand entries per Log call; 100,000 bounds the per-
    # batch work and leaves room for large replays.  The format allows up to 2**32 - 1.
    max_batch_messages: int = 100_000
    # Bounds the memory a reader or recovery allocates from one length field read from disk
    # (a garbage length is rejected instead of allocated).  64 MiB is four times Scribe's usual
    # 16 MiB frame limit, and under the format's 4 GiB.
    max_record_bytes: int = 64 * MiB
    # Readers in other processes poll the high-water-mark file (in-process readers are woken by
    # the writer).  50 ms keeps tail latency low at ~20 tiny reads per second per reader.
    tail_poll_interval_s: float = 0.05
    # The checkpoint (high-water-mark file) is rewritten after every commit but fdatasynced at
    # most this often: recovery after a power loss scans at most about this much of the tail.
    checkpoint_fsync_interval_s: float = 1.0
    # Worker threads doing the blocking writes and fsyncs, shared by all partitions.  Each
    # partition has one write in flight at a time, so this bounds disk concurrency.
    io_threads: int = 8
    # Partition writers whose files (segment, index, hwm: three descriptors) stay open; the
    # least recently used idle ones close them and reopen on their next write (three opens,
    # microseconds beside an fdatasync).  128 writers hold 384 descriptors: the hot partitions
    # of a usual deployment, and room for connections under a 1,024 descriptor limit.  At most
    # ``MAX_OPEN_PARTITIONS``.
    max_open_partitions: int = 128
    # Categories the journal creates (each is a directory, and a writer task per partition);
    # appends that would create one more raise ``CategoryLimitReached``.  Scribe deployments use
    # tens to hundreds; 10,000 leaves room for per-host or per-service names while keeping a
    # client that invents categories from filling the disk with directories and the start-up
    # with recoveries (about 1.4 ms a partition measured here: 14 s for 10,000).  At most
    # ``MAX_CATEGORIES``.
    max_categories: int = 10_000
    # A partition refused for a passing reason (disk full, out of descriptors) is recovered again
    # this often: once a second brings it back soon after space returns, for one tail recovery
    # a second while it stays full.  At most an hour, so a partition returns while it matters.
    transient_retry_interval_s: float = 1.0
    # Batches of at least this many messages are checked and packed in a worker thread, so a
    # large call does not hold the event loop (and the small calls of other clients): 4096
    # entries take about 4 ms inline, more than a thread's hand-over costs.
    thread_encode_messages: int = 4096

    def __post_init__(self) -> None:
        if not isinstance(self.durability, Durability):
            raise ValueError(f"durability must be one of {[d.value for d in Durability]}")
        positive = (
            "segment_bytes",
            "segment_age_s",
            "index_interval_bytes",
            "fsync_interval_ms",
            "max_batch_messages",
            "max_record_bytes",
            "tail_poll_interval_s",
            "checkpoint_fsync_interval_s",
            "io_threads",
            "max_open_partitions",
            "max_categories",
            "transient_retry_interval_s",
            "thread_encode_messages",
        )
        for name in positive:
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 < value < math.inf  # NaN fails too: an interval of NaN never comes
            ):
                raise ValueError(f"{name} must be a positive, finite number, not {value!r}")
        for name in ("segment_bytes", "index_interval_bytes", "fsync_interval_ms",
                     "max_batch_messages", "max_record_bytes", "io_threads",
                     "max_open_partitions", "max_categories",
                     "thread_encode_messages"):  # fmt: skip
            if not isinstance(getattr(self, name), int):
                raise ValueError(f"{name} must be an integer")
        if self.max_batch_messages > 0xFFFF_FFFF:
            raise ValueError("max_batch_messages must fit the format's u32 count (< 2**32)")
        if self.max_record_bytes > 0xFFFF_FFFF - 64:
            raise ValueError("max_record_bytes must fit the format's u32 length (< 4 GiB)")
        if self.max_open_partitions > MAX_OPEN_PARTITIONS:
            raise ValueError(f"max_open_partitions must be at most {MAX_OPEN_PARTITIONS}")
        if self.max_categories > MAX_CATEGORIES:
            raise ValueError(f"max_categories must be at most {MAX_CATEGORIES}")
        if self.transient_retry_interval_s > 3600:
            raise ValueError("transient_retry_interval_s must be at most 3600")
