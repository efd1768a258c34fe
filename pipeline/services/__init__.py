"""Local ZooKeeper and Cassandra for development, CI and `make run`: fetched from Maven Central,
configured from conf/services/, run under var/, started and stopped by `pipeline services`."""

from pipeline.services.config import (
    CassandraServiceConfig,
    ServicesConfig,
    ZooKeeperServiceConfig,
    services_config_from_mapping,
)

__all__ = [
    "CassandraServiceConfig",
    "ServicesConfig",
    "ZooKeeperServiceConfig",
    "services_config_from_mapping",
]
