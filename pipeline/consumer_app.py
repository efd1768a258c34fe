"""Consumer daemons: a group's sink, its coordinator and the runtime, wired from configuration.

``pipeline consume --group NAME`` runs one member; ``pipeline run`` runs the server and every
embedded group in one process.  Retention asks ``retention_floors`` which offsets a registered
group has not committed yet, so it never deletes them.
"""

from __future__ import annotations

import logging
import ssl
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import trio

from consumers import (
    CategoryMatcher,
    ConsumerRuntime,
    Coordinator,
    FileSink,
    ForwardSink,
    JournalSource,
    LocalCoordinator,
    LocalCoordinatorConfig,
    RemoteReadConfig,
    Sink,
    SinkUnusable,
    list_groups,
    open_remote_source,
    parse_address,
)
from consumers.cluster_source import ClusterJournalSource
from consumers.config import CassandraSinkConfig, GroupConfig
from consumers.coordination import CoordinationError, Unit, journal_of
from consumers.coordination.zookeeper import ZooKeeperCoordinator
from consumers.coordination.zookeeper import list_groups as list_zookeeper_groups
from consumers.errors import SchemaMismatch, StorageError
from consumers.origin import JournalIdentity
from consumers.sinks.cassandra import BUILTINS, CassandraSink, Materializer, build_plugin, is_plugin
from consumers.source import LocalJournalSource
from journal import JournalError, PartitionId, list_partitions, read_journal_id
from pipeline.config import PipelineConfig
from pipeline.consumer_config import ConsumerSection, CoordinationKind
from pipeline.errors import ConfigError, StartupError, find_error
from pipeline.floors import ConsumerFloor
from pipeline.journal_sinks import SinkPerJournal
from pipeline.storage import Storage
from scribe_compat.errors import TlsSetupError
from scribe_compat.tls import client_context

log = logging.getLogger(__name__)

# The sink figures a status line shows when the sink has them (the Cassandra sink does).
STATUS_SINK_METRICS = (
    "rows written",
    "dead letters",
    "cassandra latency p50 us",
    "cassandra latency p99 us",
)
# A forwarder's figures that Scribe's network store reports as scribe_overall:sent / :retries.
SCRIBE_OVERALL = {"sent": "sent", "failed calls": "retries"}


JournalIdSource = Callable[[], uuid.UUID]


def build_sink(
    config: PipelineConfig,
    section: ConsumerSection,
    storage: Storage,
    journal_id: JournalIdSource | None = None,
) -> Sink:
    """The group's sink, for events read from ``journal_id`` (default: the journal in
    journal.dir)."""
    if journal_id is None:
        journal_id = JournalIdentity(config.journal.dir)
    if section.group.sink == "files" and section.files is not None:
        return FileSink(section.files)
    if section.group.sink == "forward" and section.forward is not None:
        return ForwardSink(section.forward, journal_id=journal_id)
    if section.group.sink == "cassandra" and section.cassandra is not None:
        return CassandraSink(
            storage.session,
            build_materializer(section.cassandra),
            group=section.name,
            journal_id=journal_id,
            config=config.cassandra,
        )
    raise ConfigError(f"consumers.{section.name}.sink", f"unknown sink {section.group.sink!r}")


def build_materializer(sink: CassandraSinkConfig) -> Materializer:
    """The materializer a group's ``[consumers.cassandra]`` names (options checked at load)."""
    if is_plugin(sink.materializer):
        return build_plugin(sink.materializer, sink.options, sink.plugin_path)
    return BUILTINS[sink.materializer][1](sink.options)


def build_group_sink(
    config: PipelineConfig,
    section: ConsumerSection,
    storage: Storage,
    journal_id: JournalIdSource | None = None,
) -> Sink:
    """The sink a running member writes to: a group reading the registry gets one sink per
    journal (rows and forwarded events name the journal each event was read from); a files
    sink names no journal and is shared."""
    if section.group.journals != "registry" or section.group.sink == "files":
        return build_sink(config, section, storage, journal_id)
    return SinkPerJournal(
        lambda journal: build_sink(config, section, storage, lambda: journal),
        JournalIdentity(config.journal.dir),
    )


def local_journal_id(config: PipelineConfig) -> str | None:
    """The identity of the journal in journal.dir, None when there is none (yet)."""
    try:
        return read_journal_id(config.journal.dir).hex
    except (JournalError, OSError):
        return None


def check_journal_dir(config: PipelineConfig) -> None:
    """A member reads the journal its server writes: without it, it would idle for ever."""
    journal_dir = config.journal.dir
    if not journal_dir.is_dir():
        raise ConfigError(
            "journal.dir",
            f"no journal directory at {journal_dir.absolute()} (start the server first, "
            "or point journal.dir at the directory it writes)",
        )


async def start_sink(section: ConsumerSection, sink: Sink) -> None:
    """Check a files sink's directory, and create or check a Cassandra sink's tables, before
    the member joins its group.

    A directory the sink cannot write or a schema that does not fit is a configuration error
    (exit 78).  Cassandra unreachable is not: the member starts, and the sink starts with the
    first batch it can write.
    """
    if isinstance(sink, SinkPerJournal):
        # Check the tables once, with a sink of its own; each journal's sink starts itself.
        probe = sink.probe()
        try:
            await start_sink(section, probe)
        finally:
            await probe.aclose()
        return
    if isinstance(sink, FileSink):
        try:
            await trio.to_thread.run_sync(sink.check_file_path)
        except SinkUnusable as exc:
            key = f"consumers.{section.name}.{exc.sink}.{exc.setting}"
            raise ConfigError(key, exc.reason) from exc
    if not isinstance(sink, CassandraSink):
        return
    try:
        for line in await sink.start():
            log.info("schema", extra={"group": section.name, "change": line})
    except SchemaMismatch as exc:
        raise ConfigError(f"consumers.{section.name}.cassandra", str(exc)) from exc
    except StorageError as exc:
        log.warning(
            "Cassandra unreachable; the group writes once it answers",
            extra={"group": section.name, "error": str(exc)},
        )


def build_coordinator(
    config: PipelineConfig, group: str, member_id: str | None = None
) -> Coordinator:
    coordination = config.coordination
    if coordination.kind is CoordinationKind.ZOOKEEPER:
        return build_zookeeper_coordinator(config, group, member_id)
    if coordination.kind is CoordinationKind.LOCAL:
        local = LocalCoordinatorConfig(
            state_dir=coordination.state_dir,
            rescan_interval_s=coordination.rescan_interval_s,
            revoke_timeout_s=coordination.revoke_timeout_s,
        )
        return LocalCoordinator(local, group, member_id)
    raise ConfigError("coordination.kind", f"{coordination.kind.value!r} is not available")


def build_zookeeper_coordinator(
    config: PipelineConfig, group: str, member_id: str | None = None
) -> ZooKeeperCoordinator:
    """A ZooKeeper member; its units of journal.dir's journal take over the offsets the group
    stored without journal id (``consumers.coordination.zookeeper``)."""
    coordination = config.coordination
    if coordination.kind is not CoordinationKind.ZOOKEEPER:
        raise ConfigError("coordination.kind", 'the journal registry needs "zookeeper"')
    return ZooKeeperCoordinator(
        coordination.zookeeper,
        group,
        member_id,
        settle_s=coordination.settle_s,
        rescan_interval_s=coordination.rescan_interval_s,
        revoke_timeout_s=coordination.revoke_timeout_s,
        legacy_journal_id=local_journal_id(config),
    )


def remote_read_config(section: ConsumerSection) -> RemoteReadConfig:
    group = section.group
    return RemoteReadConfig(
        timeout_s=group.fetch_timeout_s,
        backoff_initial_s=group.backoff_initial_s,
        backoff_max_s=group.backoff_max_s,
        tls=fetch_tls_context(group),
        tls_server_name=group.fetch_tls.server_name,
    )


def fetch_tls_context(group: GroupConfig) -> ssl.SSLContext | None:
    """The group's TLS context for fetch ports, read once; a file that does not load is a
    configuration error naming the group's key."""
    if not group.fetch_tls.enabled:
        return None
    try:
        return client_context(group.fetch_tls)
    except TlsSetupError as exc:
        raise ConfigError(f"consumers.{group.name}.fetch_tls.{exc.setting}", exc.problem) from exc


@asynccontextmanager
async def open_source(
    config: PipelineConfig, section: ConsumerSection, coordinator: Coordinator
) -> AsyncIterator[tuple[JournalSource | None, JournalIdSource | None]]:
    """Where the member reads, and the journal of a plain partition (None: journal.dir's):
    journal.dir's files (None, None), one ``fetch_from`` server, or every registered journal
    (``journals = "registry"``)."""
    group = section.group
    if group.journals == "registry":
        if not isinstance(coordinator, ZooKeeperCoordinator):
            raise ConfigError(
                f"consumers.{section.name}.journals",
                'reading the registry needs [coordination] kind = "zookeeper"',
            )
        local = (
            LocalJournalSource(config.journal.dir, config.journal.settings)
            if group.read_local
            else None
        )
        async with trio.open_nursery() as nursery:
            cluster = ClusterJournalSource(
                coordinator.journals,
                nursery,
                remote_read_config(section),
                local=local,
                local_journal_id=lambda: local_journal_id(config),
            )
            try:
                yield cluster, None
            finally:
                nursery.cancel_scope.cancel()
                with trio.CancelScope(shield=True):
                    await cluster.aclose()
        return
    if not group.fetch_from:
        yield None, None
        return
    host, port = parse_address(group.fetch_from, "fetch_from")
    async with open_remote_source(host, port, remote_read_config(section)) as remote:

        def served() -> uuid.UUID:
            # Set by describe(), which the first scan calls before anything is read.
            if remote.journal_id is None:
                raise StartupError(f"{remote.peer} has not said which journal it serves")
            return uuid.UUID(remote.journal_id)

        yield remote, served


@asynccontextmanager
async def open_member(
    config: PipelineConfig,
    section: ConsumerSection,
    storage: Storage,
    member_id: str | None = None,
) -> AsyncIterator[ConsumerRuntime]:
    """A running member of ``section``'s group; leaves the group gracefully on exit.

    With ``fetch_from``, or ``journals = "registry"``, the group reads through log servers'
    fetch services and needs no journal directory of its own.  Rows and forwarded events carry
    the identity of the journal each event was read from."""
    group = section.group
    if not group.fetch_from and group.journals != "registry":
        check_journal_dir(config)
    coordinator = build_coordinator(config, section.name, member_id)
    async with AsyncExitStack() as stack:
        source, journal_id = await stack.enter_async_context(
            open_source(config, section, coordinator)
        )
        sink = build_group_sink(config, section, storage, journal_id)
        try:
            await start_sink(section, sink)
            runtime = ConsumerRuntime(
                config.journal.dir,
                section.group,
                coordinator,
                sink,
                journal_config=config.journal.settings,
                source=source,
            )
            async with _member_running(runtime, section, coordinator) as running:
                yield running
        finally:
            with trio.CancelScope(shield=True):
                await sink.aclose()


@asynccontextmanager
async def _member_running(
    runtime: ConsumerRuntime, section: ConsumerSection, coordinator: Coordinator
) -> AsyncIterator[ConsumerRuntime]:
    """``runtime`` joined to its group; it leaves gracefully on exit."""
    async with trio.open_nursery() as nursery:
        try:
            await nursery.start(runtime.serve)
        except (CoordinationError, BaseExceptionGroup) as exc:
            # Joining failed (ZooKeeper unreachable, member id in use): a startup error.
            error = find_error(exc, CoordinationError)
            if error is None:
                raise
            raise StartupError(f"consumer group {section.name!r}: {error}") from exc
        log.info("consumer started", extra={"group": section.name, "member": coordinator.member_id})
        try:
            yield runtime
        finally:
            runtime.stop()


async def serve_member(
    config: PipelineConfig,
    section: ConsumerSection,
    storage: Storage,
    stop: trio.Event,
    *,
    task_status: trio.TaskStatus[ConsumerRuntime] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one member until ``stop`` is set, then leave the group gracefully (commit, release)."""
    async with open_member(config, section, storage) as runtime:
        task_status.started(runtime)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_log_status, runtime, config.log.status_interval_s)
            await stop.wait()
            nursery.cancel_scope.cancel()


def consumer_counters(runtime: ConsumerRuntime) -> dict[str, int]:
    """A member's counters for fb303, in its ``<scope>:<name>`` style: ``consumer <group>:<name>``
    for the runtime's, ``consumer <group>:sink <name>`` for the sink's, and the forwarder's sent
    and failed calls as ``scribe_overall:sent`` / ``retries``, as Scribe's network store."""
    metrics = runtime.metrics()
    group = metrics["group"]
    counters: dict[str, int] = {}
    for key, value in metrics.items():
        if isinstance(value, int) and not isinstance(value, bool):
            counters[f"consumer {group}:{key}"] = value
    for key, value in metrics["sink"].items():
        counters[f"consumer {group}:sink {key}"] = value
        if key in SCRIBE_OVERALL:
            counters[f"scribe_overall:{SCRIBE_OVERALL[key]}"] = value
    return counters


def consumer_problems(runtime: ConsumerRuntime) -> list[str]:
    """A member's problems for the fb303 status details: partitions held at journal damage."""
    return [damage.describe() for damage in runtime.damaged()]


def log_field(counter: str) -> str:
    """A counter's name as a log field (logfmt keys have no spaces): ``rows written`` is
    ``rows_written``, as the server's status line shows ``received good``."""
    return counter.replace(" ", "_")


def status_fields(runtime: ConsumerRuntime) -> dict[str, object]:
    """What a member's periodic status line says."""
    metrics = runtime.metrics()
    lag = sum(p["lag"] or 0 for p in metrics["partitions"].values())
    sink = metrics["sink"]
    return {
        "group": metrics["group"],
        "member": metrics["member"],
        "partitions": metrics["partitions owned"],
        "messages": metrics["messages consumed"],
        "commits": metrics["commits"],
        "sink_retries": metrics["sink retries"],
        "lag": lag,
        "damaged_partitions": len(runtime.damaged()),
        **{log_field(key): sink[key] for key in STATUS_SINK_METRICS if key in sink},
    }


async def _log_status(runtime: ConsumerRuntime, interval_s: float) -> None:
    while True:
        await trio.sleep(interval_s)
        log.info("consumer status", extra=status_fields(runtime))


async def known_groups(config: PipelineConfig) -> list[str]:
    """The groups with committed offsets in the coordinator, configured or not."""
    if config.coordination.kind is CoordinationKind.LOCAL:
        return await trio.to_thread.run_sync(list_groups, config.coordination.state_dir)
    return await list_zookeeper_groups(config.coordination.zookeeper)


async def retention_floors(config: PipelineConfig) -> dict[PartitionId, ConsumerFloor]:
    """Per partition, the offset each registered group has to consume next.

    A configured group that matches a partition but never committed pins it from its start
    (0); a group reading the registry pins this journal's units; groups known only from the
    coordinator's state (taken out of the configuration) pin
    what they committed, until ``pipeline offsets delete`` forgets them.
    """
    pins: dict[PartitionId, dict[str, int]] = {}
    partitions = (
        [info.pid for info in list_partitions(config.journal.dir)]
        if config.journal.dir.is_dir()
        else []
    )
    configured = {section.name for section in config.consumers}
    for section in config.consumers:
        matches = CategoryMatcher(section.group.categories)
        committed = await _committed(config, section.name)
        for pid in partitions:
            if matches(pid.category):
                pins.setdefault(pid, {})[section.name] = committed.get(pid) or 0
    for group in await known_groups(config):
        if group in configured:
            continue
        for pid, offset in (await _committed(config, group)).items():
            pins.setdefault(pid, {})[group] = offset or 0
    return {pid: ConsumerFloor(by_group) for pid, by_group in pins.items()}


async def _committed(config: PipelineConfig, group: str) -> dict[PartitionId, int | None]:
    """The group's committed offsets in this server's journal: its plain partitions, and its
    units of journal.dir's journal (as partitions); units of other journals are theirs.  A
    partition with both (an offset not migrated yet) is held at the lower."""
    committed = await build_coordinator(config, group).all_committed()
    local = local_journal_id(config)
    out: dict[PartitionId, int | None] = {}
    for pid, offset in committed.items():
        journal_id = journal_of(pid)
        if journal_id is not None and (journal_id != local or not isinstance(pid, Unit)):
            continue
        key = pid.partition_id if isinstance(pid, Unit) else pid
        out[key] = min(out[key] or 0, offset or 0) if key in out else offset
    return out
