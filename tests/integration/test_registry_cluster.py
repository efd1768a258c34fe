"""Two log servers registered in ZooKeeper, three consumer processes that cannot read either
journal: every acknowledged event is delivered, across SIGKILL of a consumer and SIGKILL and
restart of a server while events flow.

Real ``pipeline serve`` and ``pipeline consume`` processes, the real ZooKeeper (this test's own
chroot).  Each consumer's journal.dir is an empty directory and its group says ``journals =
"registry"``: it finds the servers in the registry and reads each unit through its server's
fetch service.  Each consumer writes its own files sink (a Scribe file store is one writer's);
what they wrote together is compared with what was acknowledged, by message (each is unique).
"""

from __future__ import annotations

import collections
import json
import subprocess
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import trio
from fetch_procs import Proc, connectable, free_port, send, wait_for
from pipeline_cli import PIPELINE

from consumers.coordination.registry import Registration, registered_journals
from consumers.coordination.zk_client import ZooKeeperClient, ZooKeeperConfig

pytestmark = pytest.mark.timeout(240)

CATEGORY = b"app"


def zk_table(zk: ZooKeeperConfig) -> str:
    return f"""
[coordination]
kind = "zookeeper"
rescan_interval_s = 0.2
settle_s = 0.5
registry_interval_s = 0.2
[coordination.zookeeper]
hosts = "{zk.hosts}"
chroot = "{zk.chroot}"
session_timeout_s = {zk.session_timeout_s}
"""


def server_config(tmp: Path, name: str, zk: ZooKeeperConfig) -> tuple[Path, int, int]:
    port, fetch_port = free_port(), free_port()
    path = tmp / f"{name}.toml"
    path.write_text(
        f"""
[server]
port = {port}
[journal]
dir = "{tmp / name / "journal"}"
segment_bytes = 65536
[fetch]
port = {fetch_port}
[[routing.routes]]
category = "default"
partitions = 2
{zk_table(zk)}
"""
    )
    return path, port, fetch_port


def consumer_config(tmp: Path, name: str, zk: ZooKeeperConfig) -> Path:
    empty = tmp / name / "journal"
    empty.mkdir(parents=True)
    path = tmp / f"{name}.toml"
    path.write_text(
        f"""
[journal]
dir = "{empty}"
{zk_table(zk)}
[[consumers]]
name = "archive"
categories = ["app"]
sink = "files"
journals = "registry"
commit_interval_s = 0.1
discover_interval_s = 0.2
backoff_max_s = 0.5
[consumers.files]
file_path = "{tmp / name / "files"}"
add_newlines = true
"""
    )
    return path


def both_connectable(port: int, fetch_port: int) -> bool:
    return connectable(port) and connectable(fetch_port)


def lines(tmp: Path, consumers: list[str]) -> list[bytes]:
    out: list[bytes] = []
    for name in consumers:
        for path in sorted((tmp / name / "files" / "app").glob("app_[0-9]*")):
            out += path.read_bytes().splitlines()
    return out


async def test_two_servers_three_remote_consumers_lose_nothing_across_kills(
    tmp_path: Path, zk: ZooKeeperClient, zk_config: ZooKeeperConfig
) -> None:
    def registry() -> dict[str, Registration]:
        return trio.from_thread.run(registered_journals, zk)

    # The processes are driven from a thread: their waits are blocking ones.
    await trio.to_thread.run_sync(run_cluster, tmp_path, zk_config, registry)


def run_cluster(
    tmp_path: Path, zk_config: ZooKeeperConfig, registry: Callable[[], dict[str, Registration]]
) -> None:
    servers = []
    for name in ("s1", "s2"):
        config, port, fetch_port = server_config(tmp_path, name, zk_config)
        proc = Proc(["serve", "--config", str(config)], tmp_path / f"{name}.log")
        servers.append((proc, port, fetch_port))
    names = ["c1", "c2", "c3"]
    consumers = [
        Proc(
            ["consume", "--config", str(consumer_config(tmp_path, n, zk_config)), "-g", "archive"],
            tmp_path / f"{n}.log",
        )
        for n in names
    ]
    sent: list[bytes] = []

    def send_round(tag: str, calls: int = 4) -> None:
        for i, (_, port, _) in enumerate(servers):
            for call in range(calls):
                batch = [b"%s-s%d-c%02d-m%03d" % (tag.encode(), i, call, m) for m in range(50)]
                send(port, batch, CATEGORY)
                sent.extend(batch)

    def all_delivered() -> bool:
        return set(lines(tmp_path, names)) >= set(sent)

    try:
        for proc, _, _ in servers:
            proc.start()
        for _, port, fetch_port in servers:
            wait_for(partial(both_connectable, port, fetch_port), what="server up")
        for consumer in consumers:
            consumer.start()
        send_round("a")
        wait_for(all_delivered, 90, "first round delivered")
        got = lines(tmp_path, names)
        assert not [m for m, n in collections.Counter(got).items() if n > 1], "duplicates"

        # Both servers are registered with their partitions.
        registered = registry()
        assert len(registered) == 2
        for registration in registered.values():
            assert {(p.category, p.partition) for p in registration.partitions} == {
                (CATEGORY, 0),
                (CATEGORY, 1),
            }

        send_round("b")
        consumers[0].kill()  # a member dies mid-stream: its units are owned again
        send_round("c")
        server, port, fetch_port = servers[0]
        server.kill()  # a server dies: its units wait, nothing is forgotten
        for call in range(4):  # the other server takes events meanwhile
            batch = [b"d-s1-c%02d-m%03d" % (call, m) for m in range(50)]
            send(servers[1][1], batch, CATEGORY)
            sent.extend(batch)
        time.sleep(0.5)
        server.start()
        wait_for(partial(both_connectable, port, fetch_port), what="server back")
        send_round("e")
        wait_for(all_delivered, 120, "everything delivered")
        got = lines(tmp_path, names)
        assert set(got) == set(sent)  # nothing lost, nothing invented
        for name in names:
            assert list((tmp_path / name / "journal").iterdir()) == []
        assert consumers[1].alive() and consumers[2].alive()

        status = subprocess.run(
            [*PIPELINE, "cluster", "status", "--config", str(tmp_path / "c2.toml"), "--json"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert status.returncode == 0, status.stderr.decode()
        rows = [json.loads(line) for line in status.stdout.splitlines()]
        units = [r for r in rows if r["kind"] == "unit"]
        assert len(units) == 4
        assert all(r["alive"] for r in rows if r["kind"] == "server")
        assert sum(r["high_water_mark"] for r in units) == len(sent)
        assert all(r["lag"] == 0 for r in units), units
    except BaseException:
        for log in sorted(tmp_path.glob("*.log")):
            print(f"--- {log.name}\n{log.read_text()[-3000:]}")
        raise
    finally:
        for consumer in consumers:
            consumer.stop()
        for proc, _, _ in servers:
            proc.stop()
