"""Errors of the consumer runtime, its coordination and its sinks.

    ConsumersError
     ├── InvalidConnectionConfig  a connection setting is out of range (field, problem)
     ├── CoordinationError        a group's coordination failed or refused (coordination.protocol)
     │    ├── Fenced                  a commit with an epoch that is no longer current (pid, epoch)
     │    ├── RefusedWhileActive      an operator's change while members are active (group)
     │    │    ├── ResetRefused
     │    │    └── DeleteRefused
     │    ├── CoordinatorUnavailable  the coordination service cannot be reached now
     │    └── ZooKeeperError          ZooKeeper failed or refused (hosts)
     │         ├── ZooKeeperUnavailable   no session within the timeout (hosts, timeout_s)
     │         ├── ConnectionInterrupted  a call's connection dropped (the session may live on)
     │         ├── SessionLost            the session expired or was closed: ephemerals are gone
     │         ├── AuthFailed             the server refused the digest credentials
     │         └── NodeError              an operation on one node failed (path)
     │              ├── NoNode                it does not exist (or its parent does not)
     │              ├── NodeExists            it exists already
     │              ├── BadVersion            the compare-and-set version did not match
     │              ├── NotEmpty              it has children
     │              └── NotAuthorized         its ACL forbids the operation
     └── StorageError             Cassandra (contact points)
          ├── CassandraUnavailable    nothing answers within the timeout (contact points, port)
          ├── CassandraAuthFailed     the server refused the credentials
          ├── CassandraTimeout        a request got no answer in time (query)
          ├── CassandraQueryError     the server rejected a request (query, reason)
          │    └── CassandraInvalidRequest  invalid, whatever the cluster's state: never retry
          ├── CassandraBindError      a value does not fit its column's type (column, reason)
          └── SchemaMismatch          the tables do not fit what the pipeline writes (problems)

Only ``CassandraInvalidRequest`` and ``CassandraBindError`` say that the data itself is at fault
(a sink turns them into dead letters); every other ``StorageError`` may pass, and is retried.

kazoo's and cassandra-driver's exceptions are translated into these in the one module that
talks to each library (`consumers.coordination.zk_client`, `consumers.cassandra`); the original
is the `__cause__`.
Leaf names say what happened (``SessionLost``, ``NoNode``), like kazoo's and ZooKeeper's own.
"""

from __future__ import annotations

from collections.abc import Sequence

from journal import PartitionId


class ConsumersError(Exception):
    """Base of the consumers package's errors."""


class InvalidConnectionConfig(ConsumersError, ValueError):  # noqa: N818
    """A connection setting is out of range; names the field and the problem."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class CoordinationError(ConsumersError):
    """A group's coordination failed or refused (the contract of ``coordination.protocol``)."""


class Fenced(CoordinationError):  # noqa: N818 (the contract's name)
    """A commit (or write) with an epoch that is no longer the partition's current one."""

    def __init__(self, pid: PartitionId, epoch: int, current_epoch: int | None) -> None:
        super().__init__(f"{pid}: epoch {epoch} is fenced (current epoch {current_epoch})")
        self.pid = pid
        self.epoch = epoch
        self.current_epoch = current_epoch


class RefusedWhileActive(CoordinationError):  # noqa: N818 (reads as an outcome)
    """An operator's change (``action``) while the group has active members, without force."""

    def __init__(self, group: str, members: list[str], action: str) -> None:
        super().__init__(
            f"group {group!r} has active members {members}: stop them or force the {action}"
        )
        self.group = group
        self.members = members
        self.action = action


class ResetRefused(RefusedWhileActive):
    """An offset reset while the group has active members, without ``force``."""

    def __init__(self, group: str, members: list[str]) -> None:
        super().__init__(group, members, "reset")


class DeleteRefused(RefusedWhileActive):
    """Deleting a group's offsets while it has active members, without ``force``."""

    def __init__(self, group: str, members: list[str]) -> None:
        super().__init__(group, members, "delete")


class CoordinatorUnavailable(CoordinationError):  # noqa: N818 (reads as a state)
    """The coordination service cannot be reached now (retry later)."""


class ZooKeeperError(CoordinationError):
    """ZooKeeper failed or refused; ``hosts`` is the connection string it was talking to."""

    def __init__(self, message: str, *, hosts: str = "") -> None:
        super().__init__(message)
        self.hosts = hosts


class ZooKeeperUnavailable(ZooKeeperError):  # noqa: N818
    """No ZooKeeper session could be opened within ``timeout_s``."""

    def __init__(self, hosts: str, timeout_s: float, reason: str = "") -> None:
        detail = f": {reason}" if reason else ""
        super().__init__(
            f"cannot reach ZooKeeper at {hosts} within {timeout_s:g} s{detail}", hosts=hosts
        )
        self.timeout_s = timeout_s
        self.reason = reason


class ConnectionInterrupted(ZooKeeperError):  # noqa: N818
    """The connection dropped while a call was in flight; its outcome is unknown."""


class SessionLost(ZooKeeperError):  # noqa: N818
    """The session expired or was closed: its ephemeral nodes and watches are gone."""


class AuthFailed(ZooKeeperError):  # noqa: N818
    """The server refused the digest credentials."""


class NodeError(ZooKeeperError):
    """An operation on the node ``path`` failed."""

    def __init__(self, message: str, *, path: str, hosts: str = "") -> None:
        super().__init__(f"{message}: {path}", hosts=hosts)
        self.path = path


class NoNode(NodeError):  # noqa: N818
    """The node (or its parent) does not exist."""


class NodeExists(NodeError):  # noqa: N818
    """The node exists already."""


class BadVersion(NodeError):  # noqa: N818
    """The node's version differs from the one the compare-and-set expected."""


class NotEmpty(NodeError):  # noqa: N818
    """The node has children."""


class NotAuthorized(NodeError):  # noqa: N818
    """The node's ACL forbids this operation for this session's identity."""


class StorageError(ConsumersError):
    """Cassandra failed or refused; ``contact_points`` names the cluster."""

    def __init__(self, message: str, *, contact_points: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.contact_points = tuple(contact_points)


class CassandraUnavailable(StorageError):  # noqa: N818
    """No connection to any contact point within ``timeout_s``."""

    def __init__(
        self, contact_points: Sequence[str], port: int, timeout_s: float, reason: str = ""
    ) -> None:
        where = ", ".join(f"{host}:{port}" for host in contact_points)
        detail = f": {reason}" if reason else ""
        super().__init__(
            f"cannot reach Cassandra at {where} within {timeout_s:g} s{detail}",
            contact_points=contact_points,
        )
        self.port = port
        self.timeout_s = timeout_s
        self.reason = reason


class CassandraAuthFailed(StorageError):  # noqa: N818
    """The server refused the username and password."""


class CassandraTimeout(StorageError):  # noqa: N818
    """A request got no answer within the request timeout."""

    def __init__(self, query: str, reason: str = "") -> None:
        super().__init__(f"Cassandra request timed out: {reason or query}")
        self.query = query


class CassandraQueryError(StorageError):
    """The server rejected a request (syntax, schema, unavailable replicas, ...)."""

    def __init__(self, query: str, reason: str) -> None:
        super().__init__(f"Cassandra rejected {_shorten(query)!r}: {reason}")
        self.query = query
        self.reason = reason


class CassandraInvalidRequest(CassandraQueryError):  # noqa: N818
    """The request is invalid whatever the cluster's state (bad value, too large, no such
    table): sending it again cannot succeed."""


class CassandraBindError(StorageError):
    """A value cannot be serialized for its column; ``column`` names it."""

    def __init__(self, query: str, column: str, reason: str) -> None:
        super().__init__(f"column {column!r}: {reason}")
        self.query = query
        self.column = column
        self.reason = reason


def _shorten(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class SchemaMismatch(StorageError):  # noqa: N818
    """The tables in Cassandra do not fit what the pipeline writes; ``problems`` lists why."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = tuple(problems)
