"""``LogBatch``: the entries of one ``Log`` call, column by column.

The server's hot path never builds an object per entry: the codec slices categories and
messages straight out of the request (common shape), and the application routes the columns.
``entries()`` gives thriftpy2 ``LogEntry`` objects for code that wants them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from scribe_compat.idl import LogEntry


@dataclass(frozen=True, slots=True)
class LogBatch:
    categories: list[bytes]
    messages: list[bytes]
    # One entry per message, or None when no entry carries metadata (field 3).
    metadata: list[dict[bytes, bytes] | None] | None = None
    # The messages' total length when the decoder counted it (``counted``), so that a large
    # call's count is made in the thread that decoded it, not on the event loop.
    counted_bytes: int | None = field(default=None, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.messages)

    @classmethod
    def counted(
        cls,
        categories: list[bytes],
        messages: list[bytes],
        metadata: list[dict[bytes, bytes] | None] | None,
    ) -> LogBatch:
        """A batch with its ``message_bytes`` counted now."""
        return cls(categories, messages, metadata, sum(map(len, messages)))

    @property
    def message_bytes(self) -> int:
        """The total length of the messages."""
        if self.counted_bytes is not None:
            return self.counted_bytes
        return sum(map(len, self.messages))

    @classmethod
    def from_entries(cls, entries: Sequence[LogEntry]) -> LogBatch:
        metadata = [e.metadata for e in entries]
        return cls.counted(
            [e.category for e in entries],
            [e.message for e in entries],
            metadata if any(m is not None for m in metadata) else None,
        )

    def entries(self) -> list[LogEntry]:
        metadata = self.metadata or [None] * len(self.messages)
        return [
            LogEntry(category=c, message=m, metadata=d)
            for c, m, d in zip(self.categories, self.messages, metadata, strict=True)
        ]
