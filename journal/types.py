"""Plain values the journal hands out and takes in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MAX_PARTITION = (1 << 31) - 1


@dataclass(frozen=True)
class PartitionId:
    """A partition of a category: the journal's unit of ordering and of files."""

    category: bytes
    partition: int

    def __post_init__(self) -> None:
        if not isinstance(self.category, bytes):
            raise TypeError(f"category must be bytes, not {type(self.category).__name__}")
        if (
            isinstance(self.partition, bool)
            or not isinstance(self.partition, int)
            or not 0 <= self.partition <= MAX_PARTITION
        ):
            raise ValueError(f"partition must be an integer in [0, {MAX_PARTITION}]")

    def __str__(self) -> str:
        """``category/partition`` for logs and messages (undecodable bytes as ``\\xNN``)."""
        return f"{self.category.decode('utf-8', 'backslashreplace')}/{self.partition}"


@dataclass(frozen=True)
class AppendResult:
    """Where an acknowledged batch landed: offsets ``base_offset .. base_offset + count - 1``."""

    base_offset: int
    count: int


@dataclass(frozen=True, init=False)
class JournalMessage:
    """One message as read back, with its offset and its times.

    ``timestamp_ms`` is the time of the batch's first message, in ms (the same for every message
    of a batch); ``timestamp_us`` is the message's own time in microseconds, strictly increasing
    along a partition (see ``journal.format``).  Built without one, ``timestamp_us`` is
    ``timestamp_ms * 1000``.
    """

    offset: int
    timestamp_ms: int
    message: bytes
    metadata: dict[bytes, bytes] | None
    timestamp_us: int

    def __init__(
        self,
        offset: int,
        timestamp_ms: int,
        message: bytes,
        metadata: dict[bytes, bytes] | None,
        timestamp_us: int | None = None,
    ) -> None:
        # Readers build one per message: filling ``__dict__`` directly takes half the time of
        # the generated frozen ``__init__`` (one ``object.__setattr__`` call per field).
        fields = self.__dict__
        fields["offset"] = offset
        fields["timestamp_ms"] = timestamp_ms
        fields["message"] = message
        fields["metadata"] = metadata
        fields["timestamp_us"] = timestamp_ms * 1000 if timestamp_us is None else timestamp_us


@dataclass(frozen=True)
class WriterFailure:
    """A partition whose writer has failed (or whose recovery refused to open it).

    ``transient``: refused for a passing reason (a full disk, no descriptors left); the journal
    recovers it again by itself once that has passed.
    """

    pid: PartitionId
    error: BaseException
    transient: bool = False


@dataclass(frozen=True)
class RetentionPolicy:
    """How long a category's segments are kept: by age of their newest message and by total size.

    ``None`` turns that limit off.  The active segment is never deleted.
    """

    max_age_s: float | None = None
    max_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.max_age_s is not None and not self.max_age_s >= 0:
            raise ValueError("max_age_s must not be negative")
        if self.max_bytes is not None and not self.max_bytes >= 0:
            raise ValueError("max_bytes must not be negative")


@dataclass(frozen=True)
class DeletedSegment:
    """A segment retention deleted: offsets ``base_offset .. end_offset - 1``."""

    pid: PartitionId
    path: Path
    base_offset: int
    end_offset: int
    size_bytes: int
    reason: str


@dataclass(frozen=True)
class RetentionHold:
    """A segment retention would delete (``reason``: age or size) but keeps, because offsets
    ``base_offset .. end_offset - 1`` reach the partition's floor (some consumer has not
    committed past them)."""

    pid: PartitionId
    base_offset: int
    end_offset: int
    size_bytes: int
    reason: str
    floor: int


@dataclass(frozen=True)
class PartitionInfo:
    """What ``list_partitions`` reports about one partition, read from its files."""

    category: bytes
    partition: int
    path: Path
    segments: int
    earliest_offset: int
    high_water_mark: int | None
    size_bytes: int
    last_timestamp_ms: int | None
    clean_shutdown: bool

    @property
    def pid(self) -> PartitionId:
        return PartitionId(self.category, self.partition)

    @property
    def bytes(self) -> int:
        """Alias of ``size_bytes``."""
        return self.size_bytes


@dataclass(frozen=True)
class VerifyProblem:
    """One problem ``verify`` found; ``fatal`` problems make recovery refuse the partition."""

    pid: PartitionId
    file: Path
    position: int
    reason: str
    fatal: bool


@dataclass(frozen=True)
class RepairResult:
    """What ``repair`` did: where it cut, what it moved aside, where the partition resumes."""

    pid: PartitionId
    cut_file: Path | None
    cut_position: int | None
    side_files: list[Path]
    bytes_removed: int
    next_offset: int
    indexes_rebuilt: int
    # Messages (and batches) found intact after the damage and kept at new offsets: from
    # ``gap[1]`` on.
    salvaged_messages: int = 0
    salvaged_batches: int = 0
    # The offsets repair left out, ``(start, end)``, documented in the partition's gap file;
    # None when it left none out.
    gap: tuple[int, int] | None = None
