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
from typing import Any

import pytest
import trio
from fetch_procs import Proc, connectable, free_port, send, wait_for, zk_table
from pipeline_cli import PIPELINE

from consumers.cassandra import CassandraConfig, CassandraSession
from consumers.coordination.registry import Registration, registered_journals
from consumers.coordination.zk_client import ZooKeeperClient, ZooKeeperConfig
from consumers.errors import StorageError

pytestmark = pytest.mark.timeout(240)

CATEGORY = b"app"


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


def files_sink(tmp: Path, name: str) -> str:
    return f"""sink = "files"
[consumers.files]
file_path = "{tmp / name / "files"}"
add_newlines = true
"""


def cassandra_sink(cassandra: CassandraConfig) -> str:
    hosts = ", ".join(f'"{h}"' for h in cassandra.hosts)
    return f"""sink = "cassandra"
[consumers.cassandra]
materializer = "events"
[cassandra]
hosts = [{hosts}]
port = {cassandra.port}
keyspace = "{cassandra.keyspace}"
request_timeout_s = 10.0
[services.cassandra]
enabled = false
"""


def consumer_config(tmp: Path, name: str, zk: ZooKeeperConfig, sink: str) -> Path:
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
journals = "registry"
commit_interval_s = 0.1
discover_interval_s = 0.2
backoff_max_s = 0.5
{sink}"""
    )
    return path


def json_lines(done: subprocess.CompletedProcess[bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in done.stdout.splitlines()]


def no_lag(config: str) -> bool:
    rows = json_lines(pipeline("cluster", "status", "--config", config, "--json"))
    return all(r["lag"] == 0 for r in rows if r["kind"] == "unit")


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


def test_cluster_status_names_the_groups_there_are_for_an_unknown_one(
    tmp_path: Path, zk_config: ZooKeeperConfig
) -> None:
    config = consumer_config(tmp_path, "c1", zk_config, files_sink(tmp_path, "c1"))
    done = subprocess.run(
        [*PIPELINE, "cluster", "status", "--config", str(config), "-g", "nosuch"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr.decode()
    # The convention's wording (require_known), as offsets show/reset/delete say it.
    assert done.stderr.decode().splitlines() == [
        "Error: no consumer group 'nosuch' (consumer groups: archive)"
    ]


def start_servers(tmp_path: Path, zk_config: ZooKeeperConfig) -> list[tuple[Proc, int, int]]:
    servers = []
    for name in ("s1", "s2"):
        config, port, fetch_port = server_config(tmp_path, name, zk_config)
        proc = Proc(["serve", "--config", str(config)], tmp_path / f"{name}.log")
        servers.append((proc, port, fetch_port))
    for proc, _, _ in servers:
        proc.start()
    for _, port, fetch_port in servers:
        wait_for(partial(both_connectable, port, fetch_port), what="server up")
    return servers


def start_consumers(
    tmp_path: Path, zk_config: ZooKeeperConfig, names: list[str], sink: Callable[[str], str]
) -> list[Proc]:
    consumers = []
    for name in names:
        config = consumer_config(tmp_path, name, zk_config, sink(name))
        consumer = Proc(
            ["consume", "--config", str(config), "-g", "archive"], tmp_path / f"{name}.log"
        )
        consumer.start()
        consumers.append(consumer)
    return consumers


def pipeline(*args: str) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run([*PIPELINE, *args], capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done


def run_cluster(
    tmp_path: Path, zk_config: ZooKeeperConfig, registry: Callable[[], dict[str, Registration]]
) -> None:
    servers: list[tuple[Proc, int, int]] = []
    consumers: list[Proc] = []
    names = ["c1", "c2", "c3"]
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
        servers += start_servers(tmp_path, zk_config)
        consumers += start_consumers(tmp_path, zk_config, names, partial(files_sink, tmp_path))
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

        config = str(tmp_path / "c2.toml")
        # Once every unit's last commit is in (commit_interval_s), no lag is left anywhere.
        wait_for(partial(no_lag, config), 30, "every unit committed")
        rows = json_lines(pipeline("cluster", "status", "--config", config, "--json"))
        units = [r for r in rows if r["kind"] == "unit"]
        assert len(units) == 4
        assert {r["journal_id"] for r in units} == set(registered)
        assert all(r["alive"] for r in rows if r["kind"] == "server")
        assert sum(r["high_water_mark"] for r in units) == len(sent)
        assert {r["owner"] is not None for r in units} == {True}
        [group] = [r for r in rows if r["kind"] == "group"]
        assert len(group["members"]) == 2
        table = pipeline("cluster", "status", "--config", config).stdout.decode()
        for journal_id in registered:
            assert journal_id in table and journal_id[:8] in table
        assert "group archive: members " in table

        # Offsets across servers: one row per unit, with its journal.
        shown = json_lines(pipeline("offsets", "show", "--config", config, "--json"))
        assert {(r["journal_id"], r["partition"]) for r in shown} == {
            (j, p) for j in registered for p in (0, 1)
        }
        assert all(r["lag"] == 0 for r in shown)

        # A replay of the first server's journal through its fetch service, chosen by id.
        first = min(registered)
        replayed = tmp_path / "replayed"
        pipeline(
            "journal", "replay", "--config", config, "-c", "app",
            "--journal-id", first[:8], "--to-files", str(replayed), "--add-newlines",
        )  # fmt: skip
        again = [
            line
            for path in sorted((replayed / "app").glob("app_[0-9]*"))
            for line in path.read_bytes().splitlines()
        ]
        served_by_first = registered[first].fetch_port == servers[0][2]
        mark = b"-s0-" if served_by_first else b"-s1-"
        assert sorted(again) == sorted(m for m in sent if mark in m)
    except BaseException:
        for log in sorted(tmp_path.glob("*.log")):
            print(f"--- {log.name}\n{log.read_text()[-3000:]}")
        raise
    finally:
        for consumer in consumers:
            consumer.stop()
        for proc, _, _ in servers:
            proc.stop()


async def test_rows_name_the_journal_each_event_was_read_from(
    tmp_path: Path,
    zk: ZooKeeperClient,
    zk_config: ZooKeeperConfig,
    cassandra: CassandraSession,
    cassandra_config: CassandraConfig,
) -> None:
    """Two servers, two remote consumers into Cassandra, one of them SIGKILLed mid-stream:
    one row per acknowledged event, keyed by the journal it was journaled in."""

    async def positions() -> list[tuple[str, int, int]]:
        try:
            rows = await cassandra.execute(
                f"SELECT journal_id, partition, offset FROM {cassandra_config.keyspace}.events"
            )
        except StorageError:  # the table appears with the first member
            return []
        return [(r[0].hex, int(r[1]), int(r[2])) for r in rows.rows]

    def count_rows() -> list[tuple[str, int, int]]:
        return trio.from_thread.run(positions)

    def registry() -> dict[str, Registration]:
        return trio.from_thread.run(registered_journals, zk)

    await trio.to_thread.run_sync(
        run_cassandra_cluster, tmp_path, zk_config, cassandra_config, registry, count_rows
    )


def run_cassandra_cluster(
    tmp_path: Path,
    zk_config: ZooKeeperConfig,
    cassandra_config: CassandraConfig,
    registry: Callable[[], dict[str, Registration]],
    rows: Callable[[], list[tuple[str, int, int]]],
) -> None:
    servers: list[tuple[Proc, int, int]] = []
    consumers: list[Proc] = []
    sent = 0
    try:
        servers += start_servers(tmp_path, zk_config)
        sink = cassandra_sink(cassandra_config)
        consumers += start_consumers(tmp_path, zk_config, ["c1", "c2"], lambda _: sink)
        for round_ in range(3):
            for i, (_, port, _) in enumerate(servers):
                for call in range(3):
                    send(port, [b"r%d-s%d-c%d-m%03d" % (round_, i, call, m) for m in range(50)])
                    sent += 50
            if round_ == 0:
                consumers[0].kill()
        wait_for(lambda: len(set(rows())) >= sent, 120, "every event in Cassandra")
        found = rows()
        assert len(found) == len(set(found)) == sent  # one row per event: keyed by its origin
        assert {journal_id for journal_id, _, _ in found} == set(registry())
    except BaseException:
        for log in sorted(tmp_path.glob("*.log")):
            print(f"--- {log.name}\n{log.read_text()[-3000:]}")
        raise
    finally:
        for consumer in consumers:
            consumer.stop()
        for proc, _, _ in servers:
            proc.stop()
