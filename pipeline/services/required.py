"""Starting the local services a configuration uses, for ``pipeline run`` (``make run``)."""

from __future__ import annotations

from collections.abc import Callable

from pipeline.config import PipelineConfig
from pipeline.consumer_config import CoordinationKind
from pipeline.services.cassandra import ManagedCassandra
from pipeline.services.process import ManagedService, StartResult
from pipeline.services.zookeeper import ManagedZooKeeper

# Sinks that write to Cassandra (the materializers) name themselves with this prefix.
CASSANDRA_SINK_PREFIX = "cassandra"


def required_services(config: PipelineConfig) -> list[ManagedService]:
    """The enabled local services the configuration needs: ZooKeeper for ZooKeeper
    coordination, Cassandra for Cassandra sinks."""
    services: list[ManagedService] = []
    if config.coordination.kind is CoordinationKind.ZOOKEEPER and config.services.zookeeper.enabled:
        services.append(ManagedZooKeeper(config.services))
    uses_cassandra = any(s.group.sink.startswith(CASSANDRA_SINK_PREFIX) for s in config.consumers)
    if uses_cassandra and config.services.cassandra.enabled:
        services.append(ManagedCassandra(config.services))
    return services


def start_required_services(
    config: PipelineConfig, progress: Callable[[str], None]
) -> list[StartResult]:
    """Start (or reuse) each required service and wait until it is ready."""
    results = []
    for service in required_services(config):
        timeout = (
            config.services.zookeeper.start_timeout_s
            if service.name == "zookeeper"
            else config.services.cassandra.start_timeout_s
        )
        results.append(service.start(progress, timeout))
    return results
