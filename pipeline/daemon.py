"""The log server daemon: journal, Scribe service and housekeeping under one root nursery.

A stop (``Daemon.request_stop``, fb303 ``shutdown``) drains: ``Log`` answers TRY_LATER, every
call in progress finishes, the journal flushes and closes.  A reload (``Daemon.reload``, fb303
``reinitialize``) reads the configuration file again (``pipeline.reload``).  Signals are handled
one level up, in ``pipeline.supervisor``.

Before anything opens, the soft file descriptor limit is raised to the hard one, and a limit
still too low for the configuration is a start-up error (``pipeline.descriptors``), as is any
OSError opening the journal: one line and exit 70, never a traceback.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import sys
from collections.abc import Awaitable, Callable, Mapping
from functools import partial

import trio

from consumers.coordination import CoordinationError
from journal import (
    FileIO,
    Journal,
    JournalError,
    PartitionId,
    RetentionHold,
    RetentionPolicy,
    open_journal,
)
from pipeline import config as config_module
from pipeline.access import connection_policy, log_policy
from pipeline.admission import Admission, free_disk_bytes
from pipeline.config import PipelineConfig
from pipeline.descriptors import DescriptorWatch, check_limit, raise_soft_limit
from pipeline.errors import StartupError, reason_of
from pipeline.fetch_service import FetchService
from pipeline.floors import ConsumerFloor, floor_lookup, log_holds
from pipeline.log_service import LogService, remote_shutdown_allowed
from pipeline.notify import Notifier
from pipeline.registration import start_registration
from pipeline.reload import Reloader
from pipeline.routing import Router, RoutingConfig, Unroutable
from scribe_compat import FetchServer, ScribeServer, serve_fetch, serve_scribe
from scribe_compat.gate import ConnectionPolicy

log = logging.getLogger(__name__)

# Python's own thresholds for the older generations (``gc.get_threshold()``'s second and third):
# with the young one raised, they already make full collections that much rarer.
GC_OLDER_THRESHOLDS = (20, 100)

# Per partition, the offsets registered consumer groups have not committed yet.
RetentionFloors = Callable[[], Awaitable[Mapping[PartitionId, ConsumerFloor]]]


class Daemon:
    """Handles to the running server, for ``pipeline run`` and tests."""

    def __init__(
        self,
        service: LogService,
        server: ScribeServer,
        stop: trio.Event,
        reloader: Reloader,
        fetch_server: FetchServer | None = None,
    ) -> None:
        self.service = service
        self.server = server
        # The fetch service, when ``[fetch] port`` is set.
        self.fetch_server = fetch_server
        self._stop = stop
        self._reloader = reloader

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.address
        return host, port

    def request_stop(self) -> None:
        self._stop.set()

    async def reload(self, trigger: str) -> None:
        """Read the configuration file again, as fb303 reinitialize does (``trigger`` is logged)."""
        await self._reloader.reload(trigger)


async def serve_pipeline(
    config: PipelineConfig,
    *,
    retention_floors: RetentionFloors | None = None,
    file_io: FileIO | None = None,
    notifier: Notifier | None = None,
    task_status: trio.TaskStatus[Daemon] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the log server until a stop is requested, then drain and close.

    ``file_io`` replaces the journal's write and sync calls (tests inject failures there).
    ``notifier`` tells systemd of reloads and of the drain (readiness is the caller's to say).
    """
    journal_dir = config.journal.dir
    limit = raise_soft_limit()
    problem = check_limit(
        limit, config.journal.settings.max_open_partitions, config.journal.min_free_descriptors
    )
    if problem is not None:
        raise StartupError(problem)
    subject = f"journal {journal_dir}"
    try:
        journal_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"cannot create it: {reason_of(exc, subject)}", subject) from exc
    stop = trio.Event()
    opened = False
    try:
        journal_cm = open_journal(journal_dir, config.journal.settings, file_io=file_io)
        async with journal_cm as journal:
            opened = True
            await _serve(config, journal, stop, retention_floors, notifier, task_status)
    except JournalError as exc:
        raise StartupError(exc, subject) from exc
    except OSError as exc:
        if opened:
            raise
        # E.g. out of descriptors while recovering: the file is named, the fix is the limit.
        raise StartupError(f"did not open: {reason_of(exc, subject)}", subject) from exc


def _router(routing: RoutingConfig, journal: Journal) -> Router:
    """A router that journals only categories the journal may create (max_categories)."""
    router = Router(routing, admit_category=journal.claim_category)
    if routing.unroutable is Unroutable.JOURNAL:
        # Where events over the limit go must itself never be over it.
        journal.claim_category(router.catch_all_category, beyond_limit=True)
    return router


async def _serve(
    config: PipelineConfig,
    journal: Journal,
    stop: trio.Event,
    retention_floors: RetentionFloors | None,
    notifier: Notifier | None,
    task_status: trio.TaskStatus[Daemon],
) -> None:
    current = config
    server: ScribeServer | None = None
    fetch_server: FetchServer | None = None

    def apply(new: PipelineConfig) -> None:
        nonlocal current
        # Certificates are read first: a file that does not load leaves everything as it was.
        scribe_policy = _scribe_policy(new, current)
        fetch_policy = _fetch_policy(new, current)
        service.router = _router(new.routing, journal)
        service.admission.reconfigure(new.admission)
        if server is not None:
            # New limits apply to connections accepted from now on; the address stays.
            server.config = dataclasses.replace(
                new.server, host=current.server.host, port=current.server.port
            )
            server.gate.policy = scribe_policy  # for connections accepted from now on
        if fetch_server is not None:
            fetch_server.gate.policy = fetch_policy
        current = new

    reloader = Reloader(config.source, config_module.load, apply, notifier)

    admission = Admission(
        config.admission,
        pending_bytes=lambda: journal.pending_bytes,
        free_disk=lambda: free_disk_bytes(config.journal.dir),
    )
    service = LogService(
        name=config.name,
        journal=journal,
        router=_router(config.routing, journal),
        admission=admission,
        reload=lambda: reloader.reload("fb303 reinitialize"),
        request_stop=stop.set,
        fb303=config.fb303,
        allow_remote_shutdown=remote_shutdown_allowed(config.server),
        descriptors=DescriptorWatch(config.journal.min_free_descriptors),
    )

    # Process-wide, and only the server's to set: how soon the event loop's thread gets the GIL
    # back from a thread decoding a large call, and how rarely a collection holds it.  What
    # start-up allocated lives as long as the process: frozen, no collection walks it again.
    sys.setswitchinterval(config.server.switch_interval_s)
    gc.freeze()
    gc.set_threshold(config.server.gc_young_threshold, *GC_OLDER_THRESHOLDS)
    async with trio.open_nursery() as nursery:
        policy = _scribe_policy(config, config)
        try:
            server = await nursery.start(
                partial(serve_scribe, service, config.server, policy=policy)
            )
        except OSError as exc:
            raise StartupError(
                f"cannot listen on {config.server.host}:{config.server.port}: {exc.strerror}"
            ) from exc
        service.counter_sources.append(server.counters)  # connections and buffers in getCounters
        service.counter_sources.append(reloader.counters)
        service.problem_sources.append(reloader.problems)
        log_policy("server", config.server.host, policy, config.server.tls)
        fetch_server = await _start_fetch(nursery, config, journal, service)
        if fetch_server is not None:
            await start_registration(nursery, config, journal, fetch_server)
        nursery.start_soon(
            _every,
            config.journal.retention_check_interval_s,
            lambda: _apply_retention(journal, service, current, retention_floors),
        )
        nursery.start_soon(
            _every, config.log.status_interval_s, lambda: _log_status(service, server)
        )
        service.mark_ready()
        host, port = server.address
        log.info(
            "listening",
            extra={
                "host": host,
                "port": port,
                "journal": str(config.journal.dir),
                "durability": config.journal.settings.durability.value,
            },
        )
        task_status.started(Daemon(service, server, stop, reloader, fetch_server))
        await stop.wait()
        log.info("draining", extra={"connections": server.connection_count})
        if notifier is not None:
            notifier.stopping()  # also when fb303 shutdown, not a signal, asked for the stop
        service.begin_stopping()
        await server.drain()
        nursery.cancel_scope.cancel()
    log.info("stopped")


async def _start_fetch(
    nursery: trio.Nursery, config: PipelineConfig, journal: Journal, service: LogService
) -> FetchServer | None:
    """The fetch service beside ``Log``, when ``[fetch] port`` is set; its counters join
    fb303's.  It stops with the nursery, after the Scribe server has drained."""
    fetch = config.fetch
    if not fetch.enabled:
        return None
    handler = FetchService(journal, fetch)
    policy = _fetch_policy(config, config)
    try:
        fetch_server: FetchServer = await nursery.start(
            partial(serve_fetch, handler, fetch.server_config(), policy=policy)
        )
    except OSError as exc:
        raise StartupError(f"cannot listen on {fetch.host}:{fetch.port}: {exc.strerror}") from exc
    service.counter_sources.append(handler.counters)
    service.counter_sources.append(fetch_server.counters)
    host, port = fetch_server.address
    log.info("fetch service listening", extra={"host": host, "port": port})
    log_policy("fetch", fetch.host, policy, fetch.tls)
    return fetch_server


def _scribe_policy(new: PipelineConfig, running: PipelineConfig) -> ConnectionPolicy:
    """The Scribe port's policy from ``new``, for the address it runs on (a reload keeps it)."""
    server = new.server
    return connection_policy(server.allow, running.server.host, server.tls, "server")


def _fetch_policy(new: PipelineConfig, running: PipelineConfig) -> ConnectionPolicy:
    fetch = new.fetch
    return connection_policy(fetch.allow, running.fetch.host, fetch.tls, "fetch")


async def _every(interval_s: float, job: Callable[[], Awaitable[None]]) -> None:
    while True:
        await trio.sleep(interval_s)
        await job()


async def _log_status(service: LogService, server: ScribeServer) -> None:
    counters = service.counters.snapshot()
    log.info(
        "server status",
        extra={
            "status": service.get_status().name,
            "connections": server.connection_count,
            "received_good": counters.get("scribe_overall:received good", 0),
            "received_bad": counters.get("scribe_overall:received bad", 0),
            "pending_bytes": service.journal.pending_bytes,
            "failed_writers": len(service.journal.failures()),
            "categories": service.journal.category_count,
            "open_partition_files": service.journal.open_partition_files,
        },
    )


async def _apply_retention(
    journal: Journal,
    service: LogService,
    config: PipelineConfig,
    retention_floors: RetentionFloors | None,
) -> None:
    router = service.router

    def policy_for(category: bytes) -> RetentionPolicy:
        route = router.retention_for(category)
        if route is None:
            return RetentionPolicy(max_age_s=None, max_bytes=None)
        return RetentionPolicy(max_age_s=route.retention_age_s, max_bytes=route.retention_bytes)

    floors: Mapping[PartitionId, ConsumerFloor] = {}
    if retention_floors is not None and config.journal.retention_respects_consumers:
        try:
            floors = await retention_floors()
        except CoordinationError as exc:
            # Unknown floors could delete what a group has not consumed: skip this round.
            log.warning(
                "consumer offsets unavailable; retention skipped", extra={"error": str(exc)}
            )
            return

    holds: list[RetentionHold] = []
    try:
        await trio.to_thread.run_sync(
            journal.apply_retention, policy_for, floor_lookup(floors), holds.append
        )
    except (OSError, JournalError):
        log.exception("retention failed; will try again")
    log_holds(holds, floors, {section.name for section in config.consumers})
