"""The Cassandra sink writing to a cluster of two nodes, at replication factor 2, while one node
is stopped and started again.

A real `pipeline run` (log server and an `events` group) takes a steady stream of Scribe calls.
At consistency ONE the remaining replica takes every write: materialization goes on through the
outage.  At LOCAL_QUORUM (both replicas, at factor 2) no write can succeed: the group pauses,
retrying the same batch with backoff, and resumes once the node is back.  Either way the log
server keeps acknowledging, and afterwards the table holds every acknowledged event exactly
once (read at ALL, which also merges what the stopped node missed).
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import trio
from local_clusters import LocalCluster

from consumers.cassandra import CassandraConfig, Consistency, open_cassandra
from scribe_compat import AsyncScribeClient

from .flow import Daemons, Sampler, Sender, free_port, wait_for, wait_listening

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

GROUP = "events"
# The node that is stopped: the second of the two, so that the first contact point stays.
STOPPED_NODE = 2
# How long the node stays down once it has stopped.
OUTAGE_S = 8.0
# At ONE, a request in flight to the stopping node fails and is retried on the other replica
# after the sink's backoff: well under this.
MAX_STALL_AT_ONE_S = 4.0
# A batch already acknowledged by both replicas when the node went away may still be counted.
GRACE_S = 2.0


def write_config(tmp_path: Path, cluster: LocalCluster, port: int, consistency: str) -> Path:
    hosts = ", ".join(json.dumps(h) for h in cluster.config.cassandra.hosts)
    path = tmp_path / "pipeline.toml"
    path.write_text(
        f"""
[server]
host = "127.0.0.1"
port = {port}
drain_timeout_s = 2.0
[journal]
dir = "{tmp_path / "journal"}"
[[routing.routes]]
category = "ev"
partitions = 4
[coordination]
kind = "local"
state_dir = "{tmp_path / "state"}"
rescan_interval_s = 0.5
revoke_timeout_s = 5.0
[cassandra]
hosts = [{hosts}]
port = {cluster.config.cassandra.port}
keyspace = "cluster_{uuid.uuid4().hex[:12]}"
consistency = "{consistency}"
request_timeout_s = 5.0
[cassandra.replication]
strategy = "SimpleStrategy"
factor = 2
# The test runs the cluster; the daemon must not start servers of its own.
[services.zookeeper]
enabled = false
[services.cassandra]
enabled = false
[log]
format = "json"
status_interval_s = 1.0
[[consumers]]
name = "{GROUP}"
categories = ["*"]
sink = "cassandra"
batch_messages = 200
batch_wait_s = 0.02
commit_interval_s = 0.3
discover_interval_s = 0.5
backoff_initial_s = 0.05
backoff_max_s = 1.0
[consumers.cassandra]
materializer = "events"
"""
    )
    return path


def keyspace_of(config: Path) -> str:
    for line in config.read_text().splitlines():
        if line.startswith("keyspace = "):
            return line.split('"')[1]
    raise AssertionError("no keyspace in the configuration")


async def stored_messages(cluster: LocalCluster, keyspace: str) -> Counter[bytes]:
    """Every event's message in the table, read at ALL."""
    settings = cluster.config.cassandra
    config = CassandraConfig(
        hosts=settings.hosts,
        port=settings.port,
        keyspace=keyspace,
        consistency=Consistency.ALL,
        request_timeout_s=30.0,
    )
    async with open_cassandra(config, create_keyspace=False) as session:
        rows = await session.execute(f"SELECT message FROM {keyspace}.events")
        return Counter(bytes(row[0]) for row in rows.rows)


async def drop_keyspace(cluster: LocalCluster, keyspace: str) -> None:
    settings = cluster.config.cassandra
    config = CassandraConfig(hosts=settings.hosts, port=settings.port, keyspace=keyspace)
    async with open_cassandra(config, create_keyspace=False) as session:
        await session.drop_keyspace(keyspace)


@pytest.mark.parametrize(
    ("consistency", "pauses"), [("ONE", False), ("LOCAL_QUORUM", True)], ids=["ONE", "QUORUM"]
)
async def test_one_node_of_two_down(
    tmp_path: Path, cassandra_cluster: LocalCluster, consistency: str, pauses: bool
) -> None:
    port = free_port()
    config = write_config(tmp_path, cassandra_cluster, port, consistency)
    keyspace = keyspace_of(config)
    daemons = Daemons(tmp_path)
    prefix = f"consumer {GROUP}:"
    last_counters: dict[str, int] = {}

    async def counters() -> dict[str, int]:
        async with await AsyncScribeClient.connect("127.0.0.1", port, 5.0) as client:
            found = await client.get_counters()
        last_counters.update({k: v for k, v in found.items() if k.startswith(prefix)})
        return found

    async def rows_written() -> int:
        return (await counters()).get(f"{prefix}sink rows written", 0)

    try:
        daemons.start("run", "run", "--config", config)
        await trio.to_thread.run_sync(wait_listening, port, daemons, "run", 60.0)
        sender = Sender(("127.0.0.1", port), "ev", batch=20, interval_s=0.05)
        sampler = Sampler(rows_written)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.run)
            nursery.start_soon(sampler.run)
            await wait_for(lambda: sampler.latest() >= 500, 90, "rows to be written")
            before = dict(last_counters)

            stopping = time.monotonic()
            await cassandra_cluster.astop(STOPPED_NODE)
            down = time.monotonic()
            await trio.sleep(OUTAGE_S)
            up = time.monotonic()
            during = dict(last_counters)
            acked_while_down = sender.acked_between(stopping, up)
            grew_while_down = sampler.grew_between(down + GRACE_S, up)
            stall = sampler.longest_stall(stopping, up)

            await cassandra_cluster.astart(STOPPED_NODE)
            back = time.monotonic()
            await trio.sleep(2.0)
            nursery.cancel_scope.cancel()

        acked = set(sender.acked)
        began = time.monotonic()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sampler.run)
            await wait_for(lambda: sampler.latest() >= len(acked), 120, "every event written")
            nursery.cancel_scope.cancel()
        resumed = time.monotonic() - began
        stored = await stored_messages(cassandra_cluster, keyspace)
        retries = during.get(f"{prefix}sink retries", 0) - before.get(f"{prefix}sink retries", 0)
        print(
            f"\n{consistency}: node {STOPPED_NODE} stopped in {down - stopping:.1f} s, down "
            f"{up - down:.0f} s (back in "
            f"{back - up:.0f} s): {acked_while_down} acked, {grew_while_down} rows written, "
            f"longest stall {stall:.1f} s, {retries} sink retries meanwhile; caught up "
            f"{resumed:.1f} s after; {len(acked)} events; counters {last_counters}"
        )
        assert daemons.alive("run")
        assert acked_while_down > 0, "ingest must go on with a node down"
        if pauses:
            assert grew_while_down == 0, "no write can reach both replicas"
            assert retries > 0, "the group must retry the batch it could not write"
        else:
            assert grew_while_down > 0
            assert stall < MAX_STALL_AT_ONE_S
        # Every acknowledged event exactly once; nothing else.
        assert sender.failures == 0
        assert set(stored) == acked
        assert max(stored.values()) == 1
    finally:
        daemons.close()
        await drop_keyspace(cassandra_cluster, keyspace)
