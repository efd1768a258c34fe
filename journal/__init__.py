"""The write-ahead journal: per-(category, partition) segmented logs on local disk.

Appends are acknowledged once durable (group commit), readers in this process or another never
see past the durable high-water mark, recovery reads only the unsynced tail, retention respects
consumer floors.  The on-disk format is in ``journal.format``; recovery rules in
``journal.recovery``; the write path in ``journal.writer``.  Knows nothing of Thrift, ZooKeeper
or Cassandra.
"""

from journal.config import Durability, JournalConfig
from journal.errors import (
    BatchRejected,
    CategoryLimitReached,
    JournalClosed,
    JournalCorrupt,
    JournalError,
    JournalFull,
    JournalLocked,
    OffsetOutOfRange,
    TooManyOpenFiles,
    UnknownJournal,
    UnknownPartition,
    UnsupportedFormat,
    WriterFailed,
)
from journal.fileio import FileIO
from journal.identity import read_journal_id
from journal.layout import category_dir_name, category_from_dir_name, read_category
from journal.open_files import FILES_PER_WRITER
from journal.reader import JournalReader, open_reader
from journal.store import Journal, open_journal
from journal.tools import list_partition_ids, list_partitions, repair, verify
from journal.types import (
    AppendResult,
    DeletedSegment,
    JournalMessage,
    PartitionId,
    PartitionInfo,
    RepairResult,
    RetentionHold,
    RetentionPolicy,
    VerifyProblem,
    WriterFailure,
)

__all__ = [
    "FILES_PER_WRITER",
    "AppendResult",
    "BatchRejected",
    "CategoryLimitReached",
    "DeletedSegment",
    "Durability",
    "FileIO",
    "Journal",
    "JournalClosed",
    "JournalConfig",
    "JournalCorrupt",
    "JournalError",
    "JournalFull",
    "JournalLocked",
    "JournalMessage",
    "JournalReader",
    "OffsetOutOfRange",
    "PartitionId",
    "PartitionInfo",
    "RepairResult",
    "RetentionHold",
    "RetentionPolicy",
    "TooManyOpenFiles",
    "UnknownJournal",
    "UnknownPartition",
    "UnsupportedFormat",
    "VerifyProblem",
    "WriterFailed",
    "WriterFailure",
    "category_dir_name",
    "category_from_dir_name",
    "list_partition_ids",
    "list_partitions",
    "open_journal",
    "open_reader",
    "read_category",
    "read_journal_id",
    "repair",
    "verify",
]
