"""Starting the local services a configuration uses, for ``pipeline run`` (``make run``)."""

from __future__ import annotations

from collections.abc import Callable

from pipeline.config import PipelineConfig
from pipeline.consumer_config import CoordinationKind
from pipeline.services.members import members, start_members, start_timeout_s
from pipeline.services.process import StartResult


def required_services(config: PipelineConfig) -> list[str]:
    """The enabled local services the configuration needs: ZooKeeper for ZooKeeper
    coordination, Cassandra for Cassandra sinks."""
    services: list[str] = []
    if config.coordination.kind is CoordinationKind.ZOOKEEPER and config.services.zookeeper.enabled:
        services.append("zookeeper")
    uses_cassandra = any(s.group.sink == "cassandra" for s in config.consumers)
    if uses_cassandra and config.services.cassandra.enabled:
        services.append("cassandra")
    return services


def start_required_services(
    config: PipelineConfig, progress: Callable[[str], None]
) -> list[StartResult]:
    """Start (or reuse) every member of each required service and wait until they are ready."""
    results = []
    for name in required_services(config):
        servers = members(config.services, name)
        results.extend(start_members(servers, progress, start_timeout_s(config.services, name)))
    return results
