"""What the journal registry and the groups' offsets say about a cluster, for operators.

``cluster_state`` reads ZooKeeper once: every registered server (asked over its fetch service
for its partitions' earliest offsets and high-water marks; a server that does not answer is
shown as not alive), and every group's units with owner, committed offset and lag.  Units a
group has offsets for but whose server is not registered now are listed too: a server that
went away keeps its offsets.  ``pipeline cluster status`` prints it; ``pipeline offsets``
uses it for groups that read the registry.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import trio

from consumers import CategoryMatcher
from consumers.coordination import Unit, unit_key
from consumers.coordination.registry import Registration, registered_journals
from consumers.coordination.zk_client import open_zookeeper
from journal import PartitionId
from pipeline.config import PipelineConfig
from pipeline.consumer_app import build_zookeeper_coordinator, known_groups
from scribe_compat import AsyncFetchClient, ClientError, PartitionState


@dataclass
class ServerView:
    """A registered journal, and what its fetch service said (``alive``: it answered)."""

    registration: Registration
    alive: bool = False
    error: str | None = None
    partitions: dict[PartitionId, PartitionState] = field(default_factory=dict)


@dataclass
class UnitView:
    group: str
    unit: Unit
    owner: str | None
    committed: int | None
    earliest: int | None  # None: its server is not registered or did not answer
    high_water_mark: int | None

    @property
    def lag(self) -> int | None:
        if self.high_water_mark is None:
            return None
        start = max(self.committed or 0, self.earliest or 0)
        return max(0, self.high_water_mark - start)


@dataclass
class GroupView:
    name: str
    configured: bool
    members: list[str]
    units: list[UnitView]


@dataclass
class ClusterState:
    servers: list[ServerView]
    groups: list[GroupView]

    def server(self, journal_id: str) -> ServerView | None:
        return next((s for s in self.servers if s.registration.journal_id == journal_id), None)


async def describe_server(registration: Registration, timeout_s: float) -> ServerView:
    view = ServerView(registration)
    try:
        client = await AsyncFetchClient.connect(
            registration.fetch_host, registration.fetch_port, timeout_s
        )
        try:
            description = await client.describe()
        finally:
            await client.aclose()
    except (ClientError, OSError) as exc:
        view.error = str(exc)
        return view
    view.alive = True
    view.partitions = {PartitionId(p.category, p.partition): p for p in description.partitions}
    return view


async def registered_servers(config: PipelineConfig, timeout_s: float) -> list[ServerView]:
    """Every registered journal, each described by its server (concurrently)."""
    async with open_zookeeper(config.coordination.zookeeper) as client:
        registrations = await registered_journals(client)
    views: dict[str, ServerView] = {}

    async def describe(registration: Registration) -> None:
        views[registration.journal_id] = await describe_server(registration, timeout_s)

    async with trio.open_nursery() as nursery:
        for registration in registrations.values():
            nursery.start_soon(describe, registration)
    return [views[journal_id] for journal_id in sorted(views)]


async def cluster_state(
    config: PipelineConfig, groups: Iterable[str] | None, timeout_s: float
) -> ClusterState:
    """The servers and, for ``groups`` (None: every configured or known group), their
    units."""
    servers = await registered_servers(config, timeout_s)
    configured = {s.name: s for s in config.consumers}
    names = list(groups) if groups is not None else await group_names(config)
    by_id = {s.registration.journal_id: s for s in servers}
    views = []
    for name in names:
        section = configured.get(name)
        coordinator = build_zookeeper_coordinator(config, name)
        committed = {
            pid: offset
            for pid, offset in (await coordinator.all_committed()).items()
            if isinstance(pid, Unit)
        }
        units = set(committed)
        if section is not None and section.group.journals == "registry":
            matches = CategoryMatcher(section.group.categories)
            for server in servers:
                for pid in server.registration.partitions:
                    if matches(pid.category):
                        units.add(Unit(pid.category, pid.partition, server.registration.journal_id))
        coordinator.set_partitions(units)
        owners = await coordinator.owners()
        rows = []
        for unit in sorted(units, key=unit_key):
            found = by_id.get(unit.journal_id)
            state = None if found is None else found.partitions.get(unit.partition_id)
            rows.append(
                UnitView(
                    group=name,
                    unit=unit,
                    owner=owners.get(unit),
                    committed=committed.get(unit),
                    earliest=None if state is None else state.earliest,
                    high_water_mark=None if state is None else state.high_water_mark,
                )
            )
        views.append(GroupView(name, section is not None, await coordinator.members(), rows))
    return ClusterState(servers, views)


async def group_names(config: PipelineConfig) -> list[str]:
    """Every configured group, then every other group with stored offsets."""
    configured = [s.name for s in config.consumers]
    return configured + [g for g in await known_groups(config) if g not in configured]
