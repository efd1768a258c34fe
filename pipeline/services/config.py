"""Settings of the local ZooKeeper and Cassandra that `pipeline services` runs.

TOML (the ``[services]`` table of the pipeline's file)::

    [services]
    var_dir = "var"          # data, logs, pid files (git-ignored)
    cache_dir = ".cache"     # fetched jars (git-ignored); a second start fetches nothing

    [services.zookeeper]
    enabled = true
    host = "127.0.0.1"
    port = 2181
    version = "3.9.5"
    heap_mb = 256
    start_timeout_s = 60.0

    [services.cassandra]
    enabled = true
    host = "127.0.0.1"
    port = 9042              # CQL
    storage_port = 7000      # gossip, bound on the same host
    version = "5.0.5"
    heap_mb = 1024
    cluster_name = "pipeline-dev"
    authenticator = "AllowAllAuthenticator"   # or "PasswordAuthenticator"
    ring_delay_ms = 1000
    superuser_setup_delay_ms = 200
    start_timeout_s = 180.0

Environment overrides use ``PIPELINE_SERVICES__CASSANDRA__PORT=9043`` and the like.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.settings import build

__all__ = [
    "CassandraServiceConfig",
    "ServicesConfig",
    "ZooKeeperServiceConfig",
    "services_config_from_mapping",
]

_VERSION = re.compile(r"\d+\.\d+\.\d+")
_AUTHENTICATORS = ("AllowAllAuthenticator", "PasswordAuthenticator")


def _check_common(host: str, port: int, version: str, heap_mb: int, timeout: float) -> None:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"host: expected an IP address, got {host!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"port: expected 1-65535, got {port}")
    if not _VERSION.fullmatch(version):
        raise ValueError(f"version: expected x.y.z, got {version!r}")
    # Below this neither server starts reliably; above it a shared 24 GiB machine suffers.
    if not 64 <= heap_mb <= 8192:
        raise ValueError(f"heap_mb: expected 64-8192, got {heap_mb}")
    if not timeout > 0:
        raise ValueError(f"start_timeout_s: expected a positive number, got {timeout}")


@dataclass(frozen=True)
class ZooKeeperServiceConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 2181
    # 3.9.x is what Maven Central serves whole (see conf/services/zookeeper-pom.xml).
    version: str = "3.9.5"
    # A standalone server for tests holds a few thousand small nodes.
    heap_mb: int = 256
    start_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        _check_common(self.host, self.port, self.version, self.heap_mb, self.start_timeout_s)
        if not self.version.startswith("3.") or int(self.version.split(".")[1]) < 8:
            raise ValueError(f"version: ZooKeeper 3.8 or newer needed, got {self.version}")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class CassandraServiceConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9042
    storage_port: int = 7000
    # 5.0.x: the JVM flags in conf/services/cassandra-jvm17.options are 5.0's.
    version: str = "5.0.5"
    # About 1 GiB: enough for tests and `make run`, small enough to share two cores and 24 GiB.
    heap_mb: int = 1024
    cluster_name: str = "pipeline-dev"
    authenticator: str = "AllowAllAuthenticator"
    # One node: nothing to wait for in the ring, no peers to hear from.
    ring_delay_ms: int = 1000
    superuser_setup_delay_ms: int = 200
    # A cold JVM on a busy shared CI machine; a warm start takes well under 30 s.
    start_timeout_s: float = 180.0

    def __post_init__(self) -> None:
        _check_common(self.host, self.port, self.version, self.heap_mb, self.start_timeout_s)
        if not 0 < self.storage_port < 65536 or self.storage_port == self.port:
            raise ValueError(
                f"storage_port: expected 1-65535 other than port, got {self.storage_port}"
            )
        if not self.version.startswith(("5.0.", "4.1.")):
            raise ValueError(f"version: expected 5.0.x (or 4.1.x), got {self.version}")
        if self.authenticator not in _AUTHENTICATORS:
            raise ValueError(
                f"authenticator: expected one of {', '.join(_AUTHENTICATORS)}, "
                f"got {self.authenticator!r}"
            )
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.cluster_name):
            raise ValueError(
                f"cluster_name: expected letters, digits, _ . -, got {self.cluster_name!r}"
            )
        if self.ring_delay_ms < 0 or self.superuser_setup_delay_ms < 0:
            raise ValueError("ring_delay_ms and superuser_setup_delay_ms must be >= 0")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ServicesConfig:
    zookeeper: ZooKeeperServiceConfig = field(default_factory=ZooKeeperServiceConfig)
    cassandra: CassandraServiceConfig = field(default_factory=CassandraServiceConfig)
    var_dir: Path = Path("var")
    cache_dir: Path = Path(".cache")


def services_config_from_mapping(data: Mapping[str, Any]) -> ServicesConfig:
    """Build the settings from the ``[services]`` table (its ``zookeeper`` and ``cassandra``
    sub-tables and ``var_dir``/``cache_dir``); raises `ConfigError` naming the key and problem."""
    try:
        return build(ServicesConfig, data, "services")
    except ConfigError as exc:
        # A __post_init__ check says "field: problem"; name the full key.
        field_name, sep, problem = exc.problem.partition(": ")
        if (
            sep
            and exc.key in ("services.zookeeper", "services.cassandra")
            and " " not in field_name
        ):
            raise ConfigError(f"{exc.key}.{field_name}", problem) from exc
        raise
