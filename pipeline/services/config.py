"""Settings of the local ZooKeeper and Cassandra that `pipeline services` runs.

The ``[services]`` table of the pipeline's file, with ``[services.zookeeper]`` and
``[services.cassandra]``: conf/pipeline.toml lists every key with its default and reason (a
test keeps the two equal), and conf/services/cluster.toml is an ensemble of three and a
cluster of two.  Environment overrides use ``PIPELINE_SERVICES__CASSANDRA__PORT=9043`` and
the like.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from annotated_types import Interval

from pipeline.errors import ConfigError
from pipeline.settings import absolute, build, env_overrides, merge, read_toml, resolve_paths

__all__ = [
    "load_services_config",
    "CassandraServiceConfig",
    "ServicesConfig",
    "ZooKeeperServiceConfig",
    "services_config_from_mapping",
]

_VERSION = re.compile(r"\d+\.\d+\.\d+")
_AUTHENTICATORS = ("AllowAllAuthenticator", "PasswordAuthenticator")


Port = Annotated[int, Interval(ge=1, le=65535)]
# Below 64 MiB neither server starts reliably; above 8 GiB a shared 24 GiB machine suffers.
HeapMb = Annotated[int, Interval(ge=64, le=8192)]
# A start that takes more than an hour has failed, whatever the machine.
StartTimeout = Annotated[float, Interval(gt=0, le=3600)]
# More members than this on one two-core machine would spend their time electing and gossiping.
ZooKeeperServers = Annotated[int, Interval(ge=1, le=7)]
CassandraNodes = Annotated[int, Interval(ge=1, le=5)]
# Linux routes all of 127.0.0.0/8 to the loopback interface: a node per address, no setup.
_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


def _check_common(host: str, version: str) -> None:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"host: expected an IP address, got {host!r}") from None
    if not _VERSION.fullmatch(version):
        raise ValueError(f"version: expected x.y.z, got {version!r}")


@dataclass(frozen=True)
class ZooKeeperServiceConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port = 2181
    # 3.9.x is what Maven Central serves whole (see conf/services/zookeeper-pom.xml).
    version: str = "3.9.5"
    # A standalone server for tests holds a few thousand small nodes.
    heap_mb: HeapMb = 256
    start_timeout_s: StartTimeout = 60.0
    # One standalone server is what development and `make test` need; an ensemble (3) lets
    # tests stop servers under a running pipeline.  Server n (1-based) listens for clients on
    # port + n - 1 and for its peers on quorum_port + n - 1 and election_port + n - 1, all on
    # host, each with its own data directory and myid.
    servers: ZooKeeperServers = 1
    quorum_port: Port = 2888
    election_port: Port = 3888

    def __post_init__(self) -> None:
        _check_common(self.host, self.version)
        if not self.version.startswith("3.") or int(self.version.split(".")[1]) < 8:
            raise ValueError(f"version: ZooKeeper 3.8 or newer needed, got {self.version}")
        ranges = {
            "port": self.port,
            "quorum_port": self.quorum_port,
            "election_port": self.election_port,
        }
        for key, first in ranges.items():
            if first + self.servers - 1 > 65535:
                raise ValueError(f"{key}: {first} + {self.servers} servers passes port 65535")
        names = list(ranges)
        for i, key in enumerate(names):
            for other in names[i + 1 :]:
                if abs(ranges[key] - ranges[other]) < self.servers:
                    raise ValueError(
                        f"{other}: the ports of {self.servers} servers from {ranges[other]} "
                        f"overlap those of {key} from {ranges[key]}"
                    )

    @property
    def members(self) -> range:
        """The servers' ids (ZooKeeper's myid), from 1."""
        return range(1, self.servers + 1)

    def client_port(self, member: int) -> int:
        return self.port + member - 1

    @property
    def address(self) -> str:
        """The first server's host:port (the only one when standalone)."""
        return f"{self.host}:{self.port}"

    @property
    def hosts(self) -> str:
        """The connection string a client uses: every server's host:port."""
        return ",".join(f"{self.host}:{self.client_port(n)}" for n in self.members)


@dataclass(frozen=True)
class CassandraServiceConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port = 9042
    storage_port: Port = 7000
    # 5.0.x: the JVM flags in conf/services/cassandra-jvm17.options are 5.0's.
    version: str = "5.0.5"
    # 2 GiB: a node taking the materialization benchmark's 50,000 rows/s for minutes filled a
    # 1 GiB old generation and died (OutOfMemoryError); 2 GiB still leaves most of 24 GiB free.
    heap_mb: HeapMb = 2048
    cluster_name: str = "pipeline-dev"
    authenticator: str = "AllowAllAuthenticator"
    # One node: nothing to wait for in the ring, no peers to hear from.  (At most ten
    # minutes: a start waits for these before its own timeout.)
    ring_delay_ms: Annotated[int, Interval(ge=0, le=600_000)] = 1000
    superuser_setup_delay_ms: Annotated[int, Interval(ge=0, le=600_000)] = 200
    # A cold JVM on a busy shared CI machine; a warm start takes well under 30 s.
    start_timeout_s: StartTimeout = 180.0
    # One node for development and `make test`; 2 or 3 make a cluster on this machine (tests
    # stop nodes under a running pipeline).  Node n (1-based) binds host + n - 1 (IPv4 loopback:
    # 127.0.0.2, 127.0.0.3, ...) with the same ports; every node is a seed and owns an evenly
    # spaced token, so they start together and none waits to bootstrap.
    nodes: CassandraNodes = 1

    def __post_init__(self) -> None:
        _check_common(self.host, self.version)
        if self.nodes > 1:
            first = ipaddress.ip_address(self.host)
            if first not in _LOOPBACK or first + self.nodes - 1 not in _LOOPBACK:
                raise ValueError(
                    f"host: {self.nodes} nodes need consecutive loopback addresses in "
                    f"127.0.0.0/8 from host, got {self.host}"
                )
        if self.storage_port == self.port:
            raise ValueError(f"storage_port: expected a port other than port {self.port}")
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

    @property
    def members(self) -> range:
        """The nodes' numbers, from 1."""
        return range(1, self.nodes + 1)

    def node_host(self, member: int) -> str:
        return str(ipaddress.ip_address(self.host) + member - 1)

    @property
    def address(self) -> str:
        """The first node's host:port (the only one of a single node)."""
        return f"{self.host}:{self.port}"

    @property
    def hosts(self) -> tuple[str, ...]:
        """Every node's address: contact points for a client."""
        return tuple(self.node_host(n) for n in self.members)


@dataclass(frozen=True)
class ServicesConfig:
    zookeeper: ZooKeeperServiceConfig = field(default_factory=ZooKeeperServiceConfig)
    cassandra: CassandraServiceConfig = field(default_factory=CassandraServiceConfig)
    var_dir: Path = Path("var")
    cache_dir: Path = Path(".cache")


def services_config_from_mapping(data: Mapping[str, Any]) -> ServicesConfig:
    """Build the settings from the ``[services]`` table (its ``zookeeper`` and ``cassandra``
    sub-tables and ``var_dir``/``cache_dir``); raises `ConfigError` naming the key and problem."""
    return build(ServicesConfig, data, "services")


def load_services_config(
    path: Path | None, environ: dict[str, str] | None = None
) -> ServicesConfig:
    """Defaults, then the ``[services]`` table of ``path``, then ``PIPELINE_SERVICES__...``.

    Relative directories resolve as in every configuration (``pipeline.config``): against the
    file's directory, or the working directory for environment values and without a file.
    """
    data: dict[str, Any] = {}
    source = None if path is None else absolute(path, Path.cwd())
    if source is not None:
        table = read_toml(source).get("services", {})
        if not isinstance(table, dict):
            raise ConfigError("services", "expected a table")
        data = table
    env = env_overrides(os.environ if environ is None else environ).get("services", {})
    if env:
        data = merge(data, env)
    config = services_config_from_mapping(data)
    return resolve_paths(config, Path.cwd() if source is None else source.parent)
