"""The local ZooKeeper ensemble and Cassandra cluster of conf/services/cluster.toml, for tests
that stop and start their members (`make cluster-test` starts them first).

    ensemble = LocalCluster.zookeeper()
    ensemble.stop(2)             # SIGTERM member 2 by its pid file, wait until it exited
    ensemble.start(2)            # and back, waiting until it answers
    ensemble.restore()           # start whatever member is not running

The blocking calls have ``a``-prefixed trio versions that run them in a worker thread.
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass
from pathlib import Path

import trio

from pipeline.services.config import ServicesConfig, load_services_config
from pipeline.services.members import members, start_members, start_timeout_s
from pipeline.services.process import ManagedService

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_CONFIG = ROOT / "conf" / "services" / "cluster.toml"


def cluster_services_config() -> ServicesConfig:
    """conf/services/cluster.toml, without the environment's overrides (those are for the
    single servers)."""
    with contextlib.chdir(ROOT):
        return load_services_config(CLUSTER_CONFIG, {})


def _quiet(_message: str) -> None:
    pass


@dataclass
class LocalCluster:
    """One service's members, numbered from 1."""

    service: str
    config: ServicesConfig

    @classmethod
    def zookeeper(cls) -> LocalCluster:
        return cls("zookeeper", cluster_services_config())

    @classmethod
    def cassandra(cls) -> LocalCluster:
        return cls("cassandra", cluster_services_config())

    @property
    def servers(self) -> list[ManagedService]:
        return members(self.config, self.service)

    def member(self, number: int) -> ManagedService:
        (server,) = members(self.config, self.service, number)
        return server

    def not_running(self) -> list[str]:
        """The labels of members that do not answer, or that `pipeline services` did not start
        (a test may only stop what it can start again)."""
        return [s.label for s in self.servers if not s.status().managed]

    def stop(self, number: int) -> None:
        if not self.member(number).stop(_quiet):
            raise AssertionError(f"{self.service} member {number} was not running")

    def start(self, number: int) -> None:
        self.member(number).start(_quiet, start_timeout_s(self.config, self.service))

    def restore(self) -> None:
        """Start every member that is not running, together (an ensemble without a quorum
        answers only once enough of them run)."""
        stopped = [s for s in self.servers if s.managed_pid() is None]
        if stopped:
            start_members(stopped, _quiet, start_timeout_s(self.config, self.service))

    async def astop(self, number: int) -> None:
        await trio.to_thread.run_sync(self.stop, number)

    async def astart(self, number: int) -> None:
        await trio.to_thread.run_sync(self.start, number)

    def zookeeper_mode(self, number: int) -> str | None:
        """ "leader", "follower" or "standalone" from the server's ``srvr`` command; None when
        it does not answer or serves no quorum."""
        server = self.member(number)
        try:
            with socket.create_connection((server.host, server.port), timeout=2.0) as sock:
                sock.sendall(b"srvr")
                reply = b""
                while chunk := sock.recv(4096):
                    reply += chunk
        except OSError:
            return None
        for line in reply.decode("utf-8", "replace").splitlines():
            if line.startswith("Mode: "):
                return line.removeprefix("Mode: ").strip()
        return None

    def zookeeper_leader(self) -> int:
        for number in range(1, len(self.servers) + 1):
            if self.zookeeper_mode(number) == "leader":
                return number
        raise AssertionError(f"no {self.service} member says it leads")

    def log_tail(self, count: int = 40) -> list[str]:
        return [line for s in self.servers for line in s.log_tail(count)]
