"""Fixtures for tests against the real ZooKeeper and Cassandra.

They connect to the servers `pipeline services start` runs (its default addresses), or to
``PIPELINE_ZK_HOSTS`` and ``PIPELINE_CASSANDRA_HOSTS`` (or ``..._HOST``) and
``PIPELINE_CASSANDRA_PORT``.
Every test gets its own ZooKeeper chroot or Cassandra keyspace, removed afterwards.  When a test
fails, the tail of the server's log is added to its report.  Every test here is marked
``integration``.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path

import pytest

from consumers.cassandra import CassandraConfig, CassandraSession, open_cassandra
from consumers.coordination.zk_client import ZooKeeperClient, ZooKeeperConfig, open_zookeeper
from pipeline.services.cassandra import ManagedCassandra
from pipeline.services.config import ServicesConfig, load_services_config
from pipeline.services.process import ManagedService, port_accepts
from pipeline.services.zookeeper import ManagedZooKeeper

HERE = Path(__file__).parent
ROOT = HERE.parents[1]

# The shared contract suites (tests/consumers/coordinator_contract.py) run here too.
if str(HERE.parent / "consumers") not in sys.path:
    sys.path.insert(0, str(HERE.parent / "consumers"))

# The servers a test may wait on: generous for a busy two-core CI machine.
CONNECT_TIMEOUT_S = 10.0


def _services_config() -> ServicesConfig:
    # var/ and .cache/ are the project root's, wherever pytest runs from: without a file, the
    # relative defaults resolve against the working directory, so load them from the root.
    with contextlib.chdir(ROOT):
        return load_services_config(None)


def managed_zookeeper() -> ManagedZooKeeper:
    return ManagedZooKeeper(_services_config())


def managed_cassandra() -> ManagedCassandra:
    return ManagedCassandra(_services_config())


def zk_hosts() -> str:
    return os.environ.get("PIPELINE_ZK_HOSTS") or _services_config().zookeeper.address


def cassandra_endpoint() -> tuple[tuple[str, ...], int]:
    config = _services_config().cassandra
    hosts = os.environ.get("PIPELINE_CASSANDRA_HOSTS") or os.environ.get(
        "PIPELINE_CASSANDRA_HOST", config.host
    )
    port = int(os.environ.get("PIPELINE_CASSANDRA_PORT", config.port))
    return tuple(h.strip() for h in hosts.split(",") if h.strip()), port


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and HERE in Path(str(item.path)).parents:
        names = set(getattr(item, "fixturenames", ()))
        services: list[ManagedService] = []
        if names & {"zk", "zk_config", "zk_root", "zk_server"}:
            services.append(managed_zookeeper())
        if names & {"cassandra", "cassandra_config"}:
            services.append(managed_cassandra())
        for service in services:
            tail = service.log_tail(60)
            if tail:
                report.sections.append((f"{service.name} log tail", "\n".join(tail)))
        # The test's own daemons (consumer members, servers) log into its tmp_path.
        tmp_path = getattr(item, "funcargs", {}).get("tmp_path")
        for log_file in sorted(Path(tmp_path).glob("*.log")) if tmp_path else ():
            lines = log_file.read_text(errors="replace").splitlines()[-40:]
            report.sections.append((f"{log_file.name} tail", "\n".join(lines)))
    return report


def _unique(name: str) -> str:
    cleaned = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:24]
    return f"{cleaned}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def zk_server() -> ManagedZooKeeper:
    """The ZooKeeper that `pipeline services start` manages (for restart tests)."""
    return managed_zookeeper()


@pytest.fixture(scope="session")
def zk_root() -> str:
    hosts = zk_hosts()
    host, _, port = hosts.split(",")[0].rpartition(":")
    if not port_accepts(host, int(port), 2.0):
        pytest.fail(f"ZooKeeper is not running at {hosts}: run `pipeline services start` first")
    return hosts


@pytest.fixture
def zk_config(zk_root: str, request: pytest.FixtureRequest) -> ZooKeeperConfig:
    """A chroot of this test's own under /pipeline-tests."""
    return ZooKeeperConfig(
        hosts=zk_root,
        chroot=f"/pipeline-tests/{_unique(request.node.name)}",
        session_timeout_s=4.0,
        connect_timeout_s=CONNECT_TIMEOUT_S,
        request_timeout_s=CONNECT_TIMEOUT_S,
    )


@pytest.fixture
async def zk(zk_config: ZooKeeperConfig) -> AsyncIterator[ZooKeeperClient]:
    async with open_zookeeper(zk_config) as client:
        yield client
    # Remove the chroot with a client rooted above it.
    root = ZooKeeperConfig(hosts=zk_config.hosts, connect_timeout_s=CONNECT_TIMEOUT_S)
    async with open_zookeeper(root) as admin:
        await admin.delete(zk_config.chroot, recursive=True)


@pytest.fixture(scope="session")
def cassandra_available() -> tuple[tuple[str, ...], int]:
    hosts, port = cassandra_endpoint()
    if not port_accepts(hosts[0], port, 2.0):
        pytest.fail(
            f"Cassandra is not running at {hosts[0]}:{port}: run `pipeline services start` first"
        )
    return hosts, port


@pytest.fixture
def cassandra_config(
    cassandra_available: tuple[tuple[str, ...], int], request: pytest.FixtureRequest
) -> CassandraConfig:
    """A keyspace of this test's own."""
    hosts, port = cassandra_available
    return CassandraConfig(
        hosts=hosts,
        port=port,
        keyspace="t_" + _unique(request.node.name)[-30:],
        connect_timeout_s=CONNECT_TIMEOUT_S,
        request_timeout_s=30.0,
    )


@pytest.fixture
async def cassandra(cassandra_config: CassandraConfig) -> AsyncIterator[CassandraSession]:
    async with open_cassandra(cassandra_config) as session:
        try:
            yield session
        finally:
            await session.drop_keyspace(cassandra_config.keyspace)


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts TCP connections and never says a word."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (connections are refused)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
