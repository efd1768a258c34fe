"""What a consumer reports about a partition it cannot read on: damage in the journal.

A reader that meets an invalid batch raises ``JournalCorrupt``.  The runtime delivers every
message before it, then holds the partition at the damaged offset (nothing after it is skipped
by itself: only an operator knows whether the bytes can be got back) and retries with backoff,
so that it goes on by itself once ``pipeline journal repair`` has cut the damage.  Meanwhile it
says so: ``PartitionDamage`` is what its log line, its status and the server's fb303 status
details show.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from journal import JournalCorrupt, PartitionId


@dataclass(frozen=True)
class PartitionDamage:
    """Group ``group`` is held at ``offset`` of ``pid``: ``file`` is invalid at byte
    ``position``."""

    group: str
    pid: PartitionId
    offset: int
    file: Path
    position: int
    reason: str

    @classmethod
    def of(
        cls, group: str, pid: PartitionId, offset: int, error: JournalCorrupt
    ) -> PartitionDamage:
        return cls(group, pid, offset, error.file, error.position, error.reason)

    @property
    def repair_command(self) -> str:
        """The operator's way out, ready to paste (the server must be stopped for it)."""
        category = self.pid.category.decode("utf-8", "surrogateescape")
        return f"pipeline journal repair -c {shlex.quote(category)} -p {self.pid.partition}"

    def describe(self) -> str:
        text = (
            f"journal partition {self.pid} damaged at offset {self.offset} ({self.file} byte "
            f"{self.position}: {self.reason}); consumer group {self.group} delivered everything "
            f"before it and is held there; stop the server and run `{self.repair_command}`, "
            "after which the group goes on by itself"
        )
        # A category that is not UTF-8 leaves surrogates in the command: shown escaped, as
        # fb303 strings and log lines must be valid UTF-8.
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
