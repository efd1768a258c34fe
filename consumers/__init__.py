"""Consumers, in three parts: the runtime that reads journal partitions (``runtime``), the
coordination of groups (``coordination/``) and the sinks that write them out (``sinks/``).

Imports ``journal`` and ``scribe_compat``, never ``pipeline``.
"""

from consumers.backoff import Backoff
from consumers.config import (
    CassandraSinkConfig,
    FileSinkConfig,
    ForwardSinkConfig,
    GroupConfig,
    LocalCoordinatorConfig,
    parse_address,
    parse_rotate_period,
)
from consumers.coordination import (
    CoordinationError,
    Coordinator,
    CoordinatorUnavailable,
    DeleteRefused,
    Fenced,
    Lease,
    LocalCoordinator,
    OwnershipListener,
    RefusedWhileActive,
    ResetRefused,
    list_groups,
)
from consumers.remote_reader import (
    RemoteJournalSource,
    RemoteReadConfig,
    RemoteReader,
    open_remote_source,
)
from consumers.runtime import CategoryMatcher, ConsumerRuntime
from consumers.sinks import (
    ORIGINAL_CATEGORY_KEY,
    FileSink,
    ForwardSink,
    Sink,
    SinkError,
    SinkUnusable,
    original_category,
)
from consumers.source import JournalSource, LocalJournalSource, PartitionReader

__all__ = [
    "ORIGINAL_CATEGORY_KEY",
    "Backoff",
    "CassandraSinkConfig",
    "CategoryMatcher",
    "ConsumerRuntime",
    "CoordinationError",
    "Coordinator",
    "CoordinatorUnavailable",
    "DeleteRefused",
    "Fenced",
    "FileSink",
    "FileSinkConfig",
    "ForwardSink",
    "ForwardSinkConfig",
    "GroupConfig",
    "JournalSource",
    "Lease",
    "LocalCoordinator",
    "LocalCoordinatorConfig",
    "LocalJournalSource",
    "OwnershipListener",
    "PartitionReader",
    "RefusedWhileActive",
    "RemoteJournalSource",
    "RemoteReadConfig",
    "RemoteReader",
    "ResetRefused",
    "Sink",
    "SinkError",
    "SinkUnusable",
    "list_groups",
    "open_remote_source",
    "original_category",
    "parse_address",
    "parse_rotate_period",
]
