"""Coordination of consumer groups: membership, partition ownership and committed offsets.

- ``protocol``: the contract every coordinator keeps (read its docstring first), and its errors.
- ``local``: one host without ZooKeeper (offsets in files, ownership by file locks).
- ``zookeeper``: members on any number of hosts; fencing by epochs (read its docstring).
- ``registry``: log servers registering their journals in ZooKeeper, for groups that read
  every server (units keyed by journal id).
- ``zk_client``: ZooKeeper through kazoo, the only module that imports kazoo.

The ZooKeeper coordinator is imported from its module, so that a process that never uses
ZooKeeper never loads kazoo.
"""

from consumers.coordination.local import LocalCoordinator, list_groups
from consumers.coordination.protocol import (
    Coordinator,
    Lease,
    MemberState,
    OwnershipListener,
    Unit,
    journal_of,
    normal_journal_id,
    unit_key,
)
from consumers.errors import (
    CoordinationError,
    CoordinatorUnavailable,
    DeleteRefused,
    Fenced,
    RefusedWhileActive,
    ResetRefused,
)

__all__ = [
    "CoordinationError",
    "Coordinator",
    "CoordinatorUnavailable",
    "DeleteRefused",
    "Fenced",
    "Lease",
    "LocalCoordinator",
    "MemberState",
    "OwnershipListener",
    "RefusedWhileActive",
    "ResetRefused",
    "Unit",
    "journal_of",
    "list_groups",
    "normal_journal_id",
    "unit_key",
]
