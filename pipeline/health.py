"""Liveness and readiness, as queries the HTTP handlers render (``/healthz``, ``/readyz``).

Ready means: not stopping; the log server (when this process runs one) has started, its
journal takes writes (no failed or unavailable partition writer, the disk is not full or under
``admission.min_free_disk_bytes``); every member's ZooKeeper session is connected (with
``coordination.kind = "zookeeper"``); and the Cassandra session is up when a group writes to
Cassandra.  Each check that fails says why, so the body of a 503 tells the operator where to
look.  The gauges ``zookeeper_connected`` and ``cassandra_connected`` (``pipeline.metrics``)
read the same predicates, so ``/metrics`` and ``/readyz`` never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from consumers.coordination.zk_client import ConnectionState
from pipeline.process_view import Member, ProcessView


@dataclass(frozen=True)
class Readiness:
    # Each check by name: None when it passes, else the problem.
    checks: dict[str, str | None] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return all(problem is None for problem in self.checks.values())

    @property
    def problems(self) -> dict[str, str]:
        return {name: problem for name, problem in self.checks.items() if problem is not None}


def readiness(view: ProcessView) -> Readiness:
    checks: dict[str, str | None] = {"stopping": "stopping" if view.is_stopping else None}
    if view.runs_server:
        checks["journal"] = _journal_problem(view)
    for section in view.groups:
        name = section.name
        member = next((m for m in view.members if m.section.name == name), None)
        if member is None:
            checks[f"consumer {name}"] = "not started"
            continue
        state = zookeeper_state(member)
        if state is not None:
            checks[f"zookeeper {name}"] = (
                None if state is ConnectionState.CONNECTED else f"session {state.value}"
            )
    if cassandra_needed(view):
        checks["cassandra"] = (
            None if cassandra_connected(view) else "no session, or a Cassandra group is paused"
        )
    return Readiness(checks)


def _journal_problem(view: ProcessView) -> str | None:
    daemon = view.daemon
    if daemon is None:
        return "the log server has not started"
    service = daemon.service
    problems = [
        f"{failure.pid}: {'unavailable' if failure.transient else 'failed'}: {failure.error}"
        for failure in service.journal.failures()
    ]
    if disk := service.admission.disk_problem():
        problems.insert(0, disk)
    return "; ".join(problems) or None


@runtime_checkable
class SessionCoordinated(Protocol):
    """A coordinator that holds a ZooKeeper session (``ZooKeeperCoordinator``)."""

    @property
    def connection_state(self) -> ConnectionState: ...


def zookeeper_state(member: Member) -> ConnectionState | None:
    """The member's ZooKeeper session state; None when it is not coordinated by ZooKeeper."""
    coordinator = member.runtime.coordinator
    if not isinstance(coordinator, SessionCoordinated):
        return None
    return coordinator.connection_state


def cassandra_needed(view: ProcessView) -> bool:
    return any(section.group.sink == "cassandra" for section in view.groups)


def cassandra_connected(view: ProcessView) -> bool:
    """Whether the shared session is open and no Cassandra group is paused on sink failures."""
    if view.storage is None or not view.storage.connected:
        return False
    for member in view.members:
        if member.section.group.sink == "cassandra" and any(
            p.paused for p in member.runtime.progress()
        ):
            return False
    return True
