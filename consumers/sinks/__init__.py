"""Sinks: where a consumer group's messages go (files, forwarding; Cassandra follows)."""

from consumers.sinks.base import (
    ORIGINAL_CATEGORY_KEY,
    Sink,
    SinkError,
    SinkUnusable,
    original_category,
)
from consumers.sinks.files import FileSink
from consumers.sinks.forward import ForwardSink

__all__ = [
    "ORIGINAL_CATEGORY_KEY",
    "FileSink",
    "ForwardSink",
    "Sink",
    "SinkError",
    "SinkUnusable",
    "original_category",
]
