"""Retention floors: per partition, the offsets consumer groups have not committed yet.

Retention never deletes at or above a partition's floor (``Journal.apply_retention``), and tells
which segments it kept for that reason.  ``log_holds`` turns those into one warning per group
that held something back, naming the group: a group nobody runs any more (taken out of the
configuration, its offsets still stored) must not fill the disk silently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

from journal import PartitionId, RetentionHold

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConsumerFloor:
    """One partition's floor and whose it is: the next offset each group has to consume
    (0 for a configured group that has committed nothing yet)."""

    by_group: Mapping[str, int]

    @property
    def offset(self) -> int:
        return min(self.by_group.values())


def floor_lookup(
    floors: Mapping[PartitionId, ConsumerFloor],
) -> Callable[[PartitionId], int | None]:
    """What the journal asks: the floor offset of a partition, None when no group holds it."""

    def floor(pid: PartitionId) -> int | None:
        found = floors.get(pid)
        return None if found is None else found.offset

    return floor


def holders(hold: RetentionHold, floor: ConsumerFloor) -> list[str]:
    """The groups that have not consumed all of the segment ``hold`` kept."""
    return sorted(group for group, offset in floor.by_group.items() if offset < hold.end_offset)


def log_holds(
    holds: Iterable[RetentionHold],
    floors: Mapping[PartitionId, ConsumerFloor],
    configured: Collection[str],
) -> None:
    """One warning per group that kept retention from deleting, with its first partition."""
    by_group: dict[str, list[RetentionHold]] = {}
    for hold in holds:
        floor = floors.get(hold.pid)
        if floor is not None:
            for group in holders(hold, floor):
                by_group.setdefault(group, []).append(hold)
    for group, held in sorted(by_group.items()):
        first = held[0]
        fields = {
            "group": group,
            "partitions": len(held),
            "partition": str(first.pid),
            "committed": floors[first.pid].by_group[group],
            "segment": first.base_offset,
            "reason": first.reason,
        }
        if group in configured:
            log.warning("retention held back by consumer group", extra=fields)
        else:
            log.warning(
                "retention held back by a consumer group not in the configuration; "
                "`pipeline offsets delete --group NAME` forgets its offsets",
                extra=fields,
            )
