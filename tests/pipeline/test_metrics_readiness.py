"""``/readyz``'s query (``pipeline.health.readiness``) over fakes of what it reads: the log
server's admission and journal, the members' ZooKeeper sessions, the Cassandra session.  The
same checks against real processes and services are in tests/integration/test_readiness.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

from consumers import ConsumerRuntime
from consumers.coordination.zk_client import ConnectionState
from consumers.runtime import PartitionProgress
from journal import PartitionId, WriterFailure
from pipeline.config import PipelineConfig, from_mapping
from pipeline.daemon import Daemon
from pipeline.health import readiness
from pipeline.process_view import Member, ProcessView
from pipeline.storage import Storage


@dataclass
class FakeService:
    failures_now: list[WriterFailure] = field(default_factory=list)
    disk: str | None = None
    stopping: bool = False

    @property
    def journal(self) -> Any:
        return SimpleNamespace(failures=lambda: self.failures_now)

    @property
    def admission(self) -> Any:
        return SimpleNamespace(stopping=self.stopping, disk_problem=lambda: self.disk)


@dataclass
class FakeSession:
    connection_state: ConnectionState = ConnectionState.CONNECTED


@dataclass
class FakeRuntime:
    coordinator: object = field(default_factory=object)
    progresses: list[PartitionProgress] = field(default_factory=list)

    def progress(self) -> list[PartitionProgress]:
        return self.progresses


def groups_config() -> PipelineConfig:
    return from_mapping(
        {
            "consumers": [
                {"name": "zk", "categories": ["*"], "sink": "files", "files": {"file_path": "f"}},
                {"name": "rows", "categories": ["*"], "sink": "cassandra", "cassandra": {}},
            ]
        }
    )


def server_view(service: FakeService) -> ProcessView:
    daemon = cast(Daemon, SimpleNamespace(service=service))
    return ProcessView(PipelineConfig(), runs_server=True, daemon=daemon)


def test_a_running_server_is_ready_until_it_stops() -> None:
    service = FakeService()
    view = server_view(service)
    assert readiness(view).ready
    assert readiness(view).checks == {"stopping": None, "journal": None}
    service.stopping = True  # fb303 shutdown, seen through admission
    assert readiness(view).problems == {"stopping": "stopping"}
    service.stopping = False
    view.stopping = True  # the first signal
    assert readiness(view).problems == {"stopping": "stopping"}


def test_a_server_not_started_yet_is_not_ready() -> None:
    view = ProcessView(PipelineConfig(), runs_server=True)
    assert readiness(view).problems == {"journal": "the log server has not started"}


def test_the_journal_check_names_the_disk_and_every_failed_partition() -> None:
    failures = [
        WriterFailure(PartitionId(b"a", 0), OSError(5, "Input/output error")),
        WriterFailure(PartitionId(b"b", 1), OSError(24, "Too many open files"), transient=True),
    ]
    service = FakeService(failures, disk="the journal's disk is full")
    problem = readiness(server_view(service)).problems["journal"]
    parts = problem.split("; ")
    assert parts[0] == "the journal's disk is full"
    assert parts[1].endswith(": failed: [Errno 5] Input/output error")
    assert parts[2].endswith(": unavailable: [Errno 24] Too many open files")
    assert len(parts) == 3


def test_members_zookeeper_sessions_and_cassandra() -> None:
    config = groups_config()
    zk_section, rows_section = config.consumers
    storage = SimpleNamespace(connected=False)
    view = ProcessView(
        config, runs_server=False, groups=config.consumers, storage=cast(Storage, storage)
    )
    assert readiness(view).problems == {
        "consumer zk": "not started",
        "consumer rows": "not started",
        "cassandra": "no session, or a Cassandra group is paused",
    }
    session = FakeSession(ConnectionState.SUSPENDED)
    rows = FakeRuntime()
    view.members += [
        Member(zk_section, cast(ConsumerRuntime, FakeRuntime(session))),
        Member(rows_section, cast(ConsumerRuntime, rows)),
    ]
    storage.connected = True
    assert readiness(view).problems == {"zookeeper zk": "session suspended"}
    session.connection_state = ConnectionState.LOST
    assert readiness(view).problems == {"zookeeper zk": "session lost"}
    session.connection_state = ConnectionState.CONNECTED
    assert readiness(view).ready
    rows.progresses = [PartitionProgress(PartitionId(b"a", 0), 0, 0, 4, None, paused=True)]
    assert set(readiness(view).problems) == {"cassandra"}
