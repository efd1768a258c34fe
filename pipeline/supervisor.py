"""The process root: the log server and consumer members under one nursery, and signals.

The first SIGTERM or SIGINT stops gracefully: the server drains (``Log`` answers TRY_LATER, calls
in progress finish, the journal closes) and every member commits and leaves its group.  A second
signal cancels everything at once; the journal stays consistent (recovery cuts what was not
durable) and consumers resume from their last commit (at-least-once).

SIGHUP reloads the server's configuration, as ``pipeline ctl reload`` does (``pipeline.reload``);
it never stops anything.  A process without a server (``pipeline consume``) has nothing a reload
could change (a member's group and sink are fixed while it runs), so there it is logged and
ignored; so is a SIGHUP while the server starts or stops.

Under systemd (``NOTIFY_SOCKET``, ``pipeline.notify``) the supervisor says READY=1 once the
server listens and every member has joined, keeps the status line current, and says STOPPING=1
at the first signal.
"""

from __future__ import annotations

import functools
import logging
import signal
from collections.abc import Sequence

import trio

from consumers import ConsumerRuntime
from journal import FileIO, PartitionId
from pipeline.config import PipelineConfig
from pipeline.consumer_app import (
    consumer_counters,
    consumer_problems,
    retention_floors,
    serve_member,
)
from pipeline.consumer_config import ConsumerSection
from pipeline.daemon import Daemon, serve_pipeline
from pipeline.floors import ConsumerFloor
from pipeline.notify import Notifier
from pipeline.operations import start_operations
from pipeline.process_view import Member, ProcessView
from pipeline.storage import open_storage
from scribe_compat import FbStatus

log = logging.getLogger(__name__)


async def run_until_signalled(
    config: PipelineConfig,
    *,
    server: bool = True,
    groups: Sequence[ConsumerSection] = (),
    notifier: Notifier | None = None,
) -> None:
    """Run the server (when ``server``) and a member of each group until signalled.

    When the server stops by itself (fb303 ``shutdown``), the members stop with it.
    ``notifier`` defaults to systemd's, from the environment.
    """
    notifier = Notifier.from_environment() if notifier is None else notifier
    # Receiving SIGHUP also keeps its default action (terminate at once, exit 129) away.
    with (
        notifier,
        trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals,
    ):
        async with trio.open_nursery() as nursery:
            stop_members = trio.Event()
            daemon: Daemon | None = None
            nursery.start_soon(notifier.serve_watchdog)
            # What /metrics and /readyz read; the HTTP server lives until everything stopped.
            view = ProcessView(config, runs_server=server, groups=tuple(groups))
            metrics, _http = await start_operations(nursery, view)

            async def supervise() -> None:
                nonlocal daemon
                async with (
                    open_storage(config.cassandra) as storage,
                    trio.open_nursery() as services,
                ):
                    view.storage = storage
                    if server:
                        file_io = None if metrics is None else metrics.file_io(None)
                        daemon = await services.start(
                            _serve_server, config, stop_members, notifier, file_io
                        )
                        view.daemon = daemon
                        if metrics is not None:
                            # Bytes and latency of Log calls; fb303 counts the messages anyway.
                            daemon.service.traffic = metrics.traffic
                    runtimes: list[ConsumerRuntime] = []
                    for section in groups:
                        runtime = await services.start(
                            serve_member, config, section, storage, stop_members
                        )
                        runtimes.append(runtime)
                        view.members.append(Member(section, runtime))
                        if daemon is not None:
                            daemon.service.counter_sources.append(
                                functools.partial(consumer_counters, runtime)
                            )
                            daemon.service.problem_sources.append(
                                functools.partial(consumer_problems, runtime)
                            )
                    notifier.ready(
                        _ready_status(daemon, groups),
                        functools.partial(_problems, daemon, runtimes),
                    )
                    nursery.start_soon(notifier.follow_status)
                nursery.cancel_scope.cancel()  # everything has stopped: stop watching signals

            nursery.start_soon(supervise)
            count = 0
            async for signum in signals:
                if signum == signal.SIGHUP:
                    _on_hangup(daemon, nursery, server=server, stopping=count > 0)
                    continue
                count += 1
                if count == 1:
                    log.info("signal received: stopping gracefully", extra={"signal": signum})
                    notifier.stopping()
                    view.stopping = True
                    stop_members.set()
                    if daemon is not None:
                        daemon.request_stop()
                else:
                    log.warning("second signal: stopping now", extra={"signal": signum})
                    nursery.cancel_scope.cancel()


def _on_hangup(
    daemon: Daemon | None, nursery: trio.Nursery, *, server: bool, stopping: bool
) -> None:
    if daemon is not None and not stopping:
        log.info("SIGHUP received: reloading the configuration")
        nursery.start_soon(daemon.reload, "SIGHUP")
        return
    if stopping:
        reason = "stopping"
    elif server:
        reason = "the server is still starting"
    else:
        reason = "no server in this process; a consumer member takes a new configuration on restart"
    log.info("SIGHUP ignored", extra={"reason": reason})


def _ready_status(daemon: Daemon | None, groups: Sequence[ConsumerSection]) -> str:
    """What runs, for ``systemctl status``: ``listening on 127.0.0.1:1463; consumer groups a``."""
    parts = []
    if daemon is not None:
        listening = f"listening on {_address(daemon.address)}"
        if daemon.fetch_server is not None:
            listening += f", fetch on {_address(daemon.fetch_server.address)}"
        parts.append(listening)
    if groups:
        names = ", ".join(section.name for section in groups)
        parts.append(f"consumer group{'s' if len(groups) > 1 else ''} {names}")
    return "; ".join(parts)


def _address(address: tuple[str, int]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _problems(daemon: Daemon | None, runtimes: Sequence[ConsumerRuntime]) -> list[str]:
    """What makes the status WARNING: the server's fb303 status (which takes in its embedded
    members' problems), or, without a server, the members' own."""
    if daemon is not None:
        service = daemon.service
        return [service.get_status_details()] if service.get_status() is FbStatus.WARNING else []
    return [problem for runtime in runtimes for problem in consumer_problems(runtime)]


async def _serve_server(
    config: PipelineConfig,
    stop_members: trio.Event,
    notifier: Notifier,
    file_io: FileIO | None = None,
    *,
    task_status: trio.TaskStatus[Daemon] = trio.TASK_STATUS_IGNORED,
) -> None:
    async def floors() -> dict[PartitionId, ConsumerFloor]:
        return await retention_floors(config)

    try:
        await serve_pipeline(
            config,
            retention_floors=floors,
            file_io=file_io,
            notifier=notifier,
            task_status=task_status,
        )
    finally:
        stop_members.set()
