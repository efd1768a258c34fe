"""The process root: the log server and consumer members under one nursery, and signals.

The first SIGTERM or SIGINT stops gracefully: the server drains (``Log`` answers TRY_LATER, calls
in progress finish, the journal closes) and every member commits and leaves its group.  A second
signal cancels everything at once; the journal stays consistent (recovery cuts what was not
durable) and consumers resume from their last commit (at-least-once).

SIGHUP reloads the server's configuration, as ``pipeline ctl reload`` does (``pipeline.reload``);
it never stops anything.  A process without a server (``pipeline consume``) has nothing a reload
could change (a member's group and sink are fixed while it runs), so there it is logged and
ignored; so is a SIGHUP while the server starts or stops.
"""

from __future__ import annotations

import functools
import logging
import signal
from collections.abc import Sequence

import trio

from journal import PartitionId
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
from pipeline.storage import open_storage

log = logging.getLogger(__name__)


async def run_until_signalled(
    config: PipelineConfig, *, server: bool = True, groups: Sequence[ConsumerSection] = ()
) -> None:
    """Run the server (when ``server``) and a member of each group until signalled.

    When the server stops by itself (fb303 ``shutdown``), the members stop with it.
    """
    # Receiving SIGHUP also keeps its default action (terminate at once, exit 129) away.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            stop_members = trio.Event()
            daemon: Daemon | None = None

            async def supervise() -> None:
                nonlocal daemon
                async with (
                    open_storage(config.cassandra) as storage,
                    trio.open_nursery() as services,
                ):
                    if server:
                        daemon = await services.start(_serve_server, config, stop_members)
                    for section in groups:
                        runtime = await services.start(
                            serve_member, config, section, storage, stop_members
                        )
                        if daemon is not None:
                            daemon.service.counter_sources.append(
                                functools.partial(consumer_counters, runtime)
                            )
                            daemon.service.problem_sources.append(
                                functools.partial(consumer_problems, runtime)
                            )
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


async def _serve_server(
    config: PipelineConfig,
    stop_members: trio.Event,
    *,
    task_status: trio.TaskStatus[Daemon] = trio.TASK_STATUS_IGNORED,
) -> None:
    async def floors() -> dict[PartitionId, ConsumerFloor]:
        return await retention_floors(config)

    try:
        await serve_pipeline(config, retention_floors=floors, task_status=task_status)
    finally:
        stop_members.set()
