"""Consumers: the runtime that reads journal partitions into sinks, and group coordination.

Imports ``journal`` and ``scribe_compat``, never ``pipeline``.
"""

from consumers.backoff import Backoff
from consumers.config import (
    CassandraSinkConfig,
    FileSinkConfig,
    ForwardSinkConfig,
    GroupConfig,
    LocalCoordinatorConfig,
    parse_rotate_period,
)
from consumers.coordination import (
    CoordinationError,
    Coordinator,
    CoordinatorUnavailable,
    DeleteRefused,
    Fenced,
    Lease,
    OwnershipListener,
    RefusedWhileActive,
    ResetRefused,
)
from consumers.local import LocalCoordinator, list_groups
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
    "Lease",
    "LocalCoordinator",
    "LocalCoordinatorConfig",
    "OwnershipListener",
    "RefusedWhileActive",
    "ResetRefused",
    "Sink",
    "SinkError",
    "SinkUnusable",
    "list_groups",
    "original_category",
    "parse_rotate_period",
]
