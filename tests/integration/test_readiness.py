"""``/readyz`` of real ``pipeline consume`` processes against the real ZooKeeper and Cassandra.

Each daemon reaches its service through a TCP proxy on 127.0.0.1 that the test starts and
stops (nothing listens while it is stopped; stopping it closes every connection through it), so
the service itself keeps running for everyone else.  ZooKeeper: the member is not ready until it
has joined its group (503 ``consumer <group>: not started`` while ZooKeeper cannot be reached),
ready once joined, not ready while its session is suspended, ready again when the session
resumes.  Cassandra: not ready before the session opens, ready once it has, not ready while
the group's writes fail (its partitions paused), ready again once they go through.
``/metrics`` says the same in ``zookeeper_connected`` and ``cassandra_connected``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from pipeline_cli import PIPELINE
from prometheus_client.parser import text_string_to_metric_families

from consumers.cassandra import CassandraConfig, CassandraSession
from consumers.coordination.zk_client import ZooKeeperClient, ZooKeeperConfig
from journal import JournalConfig, open_journal

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

HTTP_LISTENING = re.compile(r'msg="http listening" .*?port=(\d+)')
GROUP = "ready"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TcpProxy:
    """Passes bytes between 127.0.0.1:``port`` and ``upstream`` while ``running``."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.port = free_port()
        self.upstream = upstream

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with trio.open_nursery() as nursery:
            listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
            nursery.start_soon(trio.serve_listeners, self._handle, listeners)
            try:
                yield
            finally:
                # Closes the listener and every connection: the client sees its peer vanish.
                nursery.cancel_scope.cancel()

    async def _handle(self, client: trio.SocketStream) -> None:
        async with client:
            try:
                upstream = await trio.open_tcp_stream(*self.upstream)
            except OSError:
                return
            async with upstream, trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, client, upstream, nursery.cancel_scope)
                nursery.start_soon(self._pump, upstream, client, nursery.cancel_scope)

    @staticmethod
    async def _pump(
        source: trio.SocketStream, sink: trio.SocketStream, scope: trio.CancelScope
    ) -> None:
        try:
            async for chunk in source:
                await sink.send_all(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()


class ConsumeProcess:
    """``pipeline consume --group ready`` with its HTTP server on a free port; it logs into
    ``tmp_path`` (the conftest attaches the tail to a failing test's report)."""

    def __init__(self, tmp_path: Path, config: str) -> None:
        self.config = tmp_path / "consume.toml"
        self.config.write_text(config)
        self.log = tmp_path / "consume.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.http_port = 0

    def spawn(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [*PIPELINE, "consume", "--config", str(self.config), "--group", GROUP],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
            )

    async def start(self) -> None:
        """Spawn the process and wait until its HTTP server listens."""
        self.spawn()

        async def listening() -> bool:
            assert self.proc is not None
            assert self.proc.poll() is None, self.log.read_text()
            match = HTTP_LISTENING.search(self.log.read_text(errors="replace"))
            if match:
                self.http_port = int(match.group(1))
            return match is not None

        await wait_until(listening, 30.0, "the HTTP server listening")

    async def get(self, path: str) -> tuple[int, bytes]:
        def fetch() -> tuple[int, bytes]:
            url = f"http://127.0.0.1:{self.http_port}{path}"
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    return response.status, response.read()
            except urllib.error.HTTPError as error:
                return error.code, error.read()

        return await trio.to_thread.run_sync(fetch)

    async def readyz(self) -> tuple[int, dict[str, str]]:
        """The status and the problems ``/readyz`` names (none when ready)."""
        status, body = await self.get("/readyz")
        problems: dict[str, str] = json.loads(body).get("problems", {})
        assert (status == 200) == (not problems), (status, body)
        return status, problems

    async def gauge(self, name: str, **labels: str) -> float | None:
        status, body = await self.get("/metrics")
        assert status == 200
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                if sample.name == "scribe_pipeline_" + name and sample.labels == labels:
                    return float(sample.value)
        return None

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(timeout=30)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


async def wait_until(predicate: Callable[[], Awaitable[bool]], limit_s: float, what: str) -> None:
    with trio.move_on_after(limit_s):
        while not await predicate():  # noqa: ASYNC110 (polling another process's state)
            await trio.sleep(0.1)
        return
    raise AssertionError(f"timed out after {limit_s} s waiting for {what}")


def problems_are(daemon: ConsumeProcess, expected: dict[str, str]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await daemon.readyz())[1] == expected

    return check


@pytest.fixture
async def consume_processes() -> AsyncIterator[list[ConsumeProcess]]:
    started: list[ConsumeProcess] = []
    try:
        yield started
    finally:
        for daemon in started:
            daemon.kill()


async def test_consume_is_ready_once_joined_and_not_while_its_zookeeper_session_is_suspended(
    tmp_path: Path,
    zk: ZooKeeperClient,
    zk_config: ZooKeeperConfig,
    consume_processes: list[ConsumeProcess],
) -> None:
    host, _, port = zk_config.hosts.split(",")[0].rpartition(":")
    proxy = TcpProxy((host, int(port)))
    (tmp_path / "journal").mkdir()
    daemon = ConsumeProcess(
        tmp_path,
        f"""
[journal]
dir = "{tmp_path / "journal"}"
[http]
port = 0
[coordination]
kind = "zookeeper"
settle_s = 0.2
rescan_interval_s = 0.5
[coordination.zookeeper]
hosts = "127.0.0.1:{proxy.port}"
chroot = "{zk_config.chroot}"
session_timeout_s = 10.0
connect_timeout_s = 120.0
request_timeout_s = 5.0
[[consumers]]
name = "{GROUP}"
categories = ["*"]
sink = "files"
[consumers.files]
file_path = "{tmp_path / "files"}"
""",
    )
    consume_processes.append(daemon)
    await daemon.start()
    # ZooKeeper cannot be reached: the process is alive, its member has not joined.
    assert (await daemon.get("/healthz"))[0] == 200
    assert await daemon.readyz() == (503, {f"consumer {GROUP}": "not started"})
    await trio.sleep(1.0)
    assert await daemon.readyz() == (503, {f"consumer {GROUP}": "not started"})
    async with proxy.running():
        await wait_until(problems_are(daemon, {}), 60.0, "ready once the member joined")
        assert await daemon.gauge("zookeeper_connected", group=GROUP) == 1
        members = await zk.get_children(f"/groups/{GROUP}/members")
        assert len(members) == 1, "ready, but not a member in ZooKeeper"
    # The proxy is gone with the connection: the session is suspended, kazoo reconnecting.
    suspended = {f"zookeeper {GROUP}": "session suspended"}
    await wait_until(problems_are(daemon, suspended), 20.0, "not ready while suspended")
    assert await daemon.gauge("zookeeper_connected", group=GROUP) == 0
    async with proxy.running():
        await wait_until(problems_are(daemon, {}), 60.0, "ready again once reconnected")
        assert await daemon.gauge("zookeeper_connected", group=GROUP) == 1
        assert daemon.stop() == 0


async def test_consume_into_cassandra_is_ready_while_its_writes_go_through(
    tmp_path: Path,
    cassandra: CassandraSession,
    cassandra_config: CassandraConfig,
    consume_processes: list[ConsumeProcess],
) -> None:
    proxy = TcpProxy((cassandra_config.hosts[0], cassandra_config.port))
    daemon = ConsumeProcess(
        tmp_path,
        f"""
[journal]
dir = "{tmp_path / "journal"}"
[http]
port = 0
[coordination]
state_dir = "{tmp_path / "state"}"
rescan_interval_s = 0.2
[cassandra]
hosts = ["127.0.0.1"]
port = {proxy.port}
keyspace = "{cassandra_config.keyspace}"
connect_timeout_s = 5.0
request_timeout_s = 5.0
[[consumers]]
name = "{GROUP}"
categories = ["*"]
sink = "cassandra"
batch_wait_s = 0.02
commit_interval_s = 0.2
discover_interval_s = 0.2
backoff_initial_s = 0.05
backoff_max_s = 1.0
[consumers.cassandra]
materializer = "events"
""",
    )
    consume_processes.append(daemon)
    async with open_journal(tmp_path / "journal", JournalConfig()) as journal:
        await journal.append(b"ready.events", 0, [b"first"])
        await daemon.start()
        # Joined (local coordination), but no Cassandra session: nothing can be written.
        not_connected = {"cassandra": "no session, or a Cassandra group is paused"}
        await wait_until(problems_are(daemon, not_connected), 30.0, "only Cassandra not ready")
        assert await daemon.gauge("cassandra_connected") == 0
        async with proxy.running():
            await wait_until(problems_are(daemon, {}), 90.0, "ready once the session opened")
            assert await daemon.gauge("cassandra_connected") == 1
            await _rows_written(daemon, 1)
        # Cassandra unreachable while the group is idle: the driver sees its connections go.
        await wait_until(problems_are(daemon, not_connected), 60.0, "not ready while idle")
        assert await daemon.gauge("cassandra_connected") == 0
        async with proxy.running():
            await wait_until(problems_are(daemon, {}), 90.0, "ready once it reconnected")
        # Cassandra unreachable: the next write fails and pauses its partition.
        await journal.append(b"ready.events", 0, [b"second"])
        await wait_until(problems_are(daemon, not_connected), 60.0, "not ready while paused")
        assert await daemon.gauge("cassandra_connected") == 0
        async with proxy.running():
            await wait_until(problems_are(daemon, {}), 90.0, "ready once writes went through")
            await _rows_written(daemon, 2)
            assert await daemon.gauge("cassandra_connected") == 1
            assert daemon.stop() == 0


async def _rows_written(daemon: ConsumeProcess, count: int) -> None:
    async def written() -> bool:
        return await daemon.gauge("sink_rows_total", group=GROUP) == count

    await wait_until(written, 30.0, f"{count} rows written")
