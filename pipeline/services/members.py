"""The members of each local service: one standalone server (the default), or a ZooKeeper
ensemble and a Cassandra cluster on this machine, started together and stopped one by one."""

from __future__ import annotations

import time
from collections.abc import Sequence

from pipeline.services.cassandra import ManagedCassandra
from pipeline.services.config import (
    CassandraServiceConfig,
    ServicesConfig,
    ZooKeeperServiceConfig,
)
from pipeline.services.process import Launch, ManagedService, Progress, StartResult
from pipeline.services.zookeeper import ManagedZooKeeper

__all__ = ["SERVICE_NAMES", "is_enabled", "members", "start_members", "start_timeout_s"]

SERVICE_NAMES = ("zookeeper", "cassandra")


def members(
    config: ServicesConfig, service: str, member: int | None = None
) -> list[ManagedService]:
    """The service's servers in start order, or only server ``member`` (from 1); raises
    `ValueError` naming the members there are."""
    server = ManagedZooKeeper if service == "zookeeper" else ManagedCassandra
    chosen: list[ManagedService] = [server(config, n) for n in _settings(config, service).members]
    if member is None:
        return chosen
    if not 1 <= member <= len(chosen):
        raise ValueError(f"{service} has members 1 to {len(chosen)}, not {member}")
    return [chosen[member - 1]]


def _settings(
    config: ServicesConfig, service: str
) -> ZooKeeperServiceConfig | CassandraServiceConfig:
    if service == "zookeeper":
        return config.zookeeper
    if service == "cassandra":
        return config.cassandra
    raise ValueError(f"unknown service {service!r}: expected one of {', '.join(SERVICE_NAMES)}")


def is_enabled(config: ServicesConfig, service: str) -> bool:
    return _settings(config, service).enabled


def start_timeout_s(config: ServicesConfig, service: str) -> float:
    return _settings(config, service).start_timeout_s


def start_members(
    servers: Sequence[ManagedService], progress: Progress, timeout_s: float
) -> list[StartResult]:
    """Launch every server, then wait for each, all within one ``timeout_s``.

    All at once: an ensemble member answers only once a quorum runs, and Cassandra nodes that
    are all seeds start side by side.  When one fails, the servers this call launched are
    stopped again (those that already ran are left alone) and the error is raised.
    """
    deadline = time.monotonic() + timeout_s
    launched: list[tuple[ManagedService, Launch]] = []
    try:
        for server in servers:
            launched.append((server, server.launch(progress)))
        return [server.wait_ready(launch, progress, deadline) for server, launch in launched]
    except BaseException:
        for server, launch in launched:
            server.abandon(launch)
        raise
