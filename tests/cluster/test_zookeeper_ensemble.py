"""Consumer daemons coordinated by a ZooKeeper ensemble of three while its servers go away.

A real log server (`pipeline serve`) takes a steady stream of Scribe calls; two `pipeline
consume` members share its partitions through the ensemble and write them to a files sink.
Stopping one of three servers leaves a quorum: the members' sessions move to another server
(no session is lost) and delivery goes on after at most a reconnect.  Stopping a second takes
the quorum away: the members stop writing, the log server keeps acknowledging.  With the
servers back, everything acknowledged reaches the sink.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio
from local_clusters import LocalCluster

from .flow import Daemons, Sampler, Sender, free_port, wait_for, wait_listening

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PARTITIONS = 4
GROUP = "archive"
MEMBERS = ("member-1", "member-2")
# Long enough that a member's session outlives a reconnect to another server.
SESSION_TIMEOUT_S = 10.0
# A member connected to the stopped server reconnects to another one, then takes its
# partitions again after settle_s: well under this, on a busy two-core machine.
MAX_RECONNECT_PAUSE_S = 8.0
# How long the ensemble stays without a quorum.
OUTAGE_S = 6.0


def write_config(tmp_path: Path, hosts: str, port: int) -> Path:
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
partitions = {PARTITIONS}
[coordination]
kind = "zookeeper"
settle_s = 0.5
rescan_interval_s = 0.5
revoke_timeout_s = 5.0
[coordination.zookeeper]
hosts = "{hosts}"
chroot = "/pipeline-cluster-tests/{uuid.uuid4().hex[:12]}"
session_timeout_s = {SESSION_TIMEOUT_S}
connect_timeout_s = 10.0
request_timeout_s = 3.0
# The test runs the ensemble; the daemons must not start servers of their own.
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
commit_interval_s = 0.2
discover_interval_s = 0.5
batch_wait_s = 0.02
sink = "files"
[consumers.files]
file_path = "{tmp_path / "files"}"
add_newlines = true
"""
    )
    return path


def delivered(files: Path) -> set[bytes]:
    out: set[bytes] = set()
    for path in (files / "ev").glob("ev_[0-9]*"):
        out.update(path.read_bytes().splitlines())
    return out


def records(log: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


def connection_states(log: str) -> list[str]:
    return [str(r.get("state")) for r in records(log) if r.get("msg") == "zookeeper connection"]


def ownership_gaps(logs: list[str], since: str) -> dict[str, float]:
    """Per partition, the longest time from a member losing it (at or after the ISO time
    ``since``) until a member started it again, from the members' JSON logs; a partition lost
    and not yet started again counts up to its last loss."""
    events = sorted(
        (str(r["ts"]), str(r["msg"]), str(r["partition"]))
        for log in logs
        for r in records(log)
        if r.get("msg") in ("partition lost", "partition started") and str(r["ts"]) >= since
    )
    gaps: dict[str, float] = {}
    lost_at: dict[str, datetime] = {}
    for ts, msg, partition in events:
        at = datetime.fromisoformat(ts)
        if msg == "partition lost":
            lost_at.setdefault(partition, at)
        elif partition in lost_at:
            gap = (at - lost_at.pop(partition)).total_seconds()
            gaps[partition] = max(gaps.get(partition, 0.0), gap)
    return gaps


def iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def test_consumers_ride_out_one_server_and_pause_without_a_quorum(
    tmp_path: Path, zk_ensemble: LocalCluster
) -> None:
    port = free_port()
    config = write_config(tmp_path, zk_ensemble.config.zookeeper.hosts, port)
    daemons = Daemons(tmp_path)
    files = tmp_path / "files"
    try:
        daemons.start("server", "serve", "--config", config)
        await trio.to_thread.run_sync(wait_listening, port, daemons, "server")
        for name in MEMBERS:
            daemons.start(name, "consume", "--config", config, "--group", GROUP)
        sender = Sender(("127.0.0.1", port), "ev")
        sampler = Sampler(lambda: trio.to_thread.run_sync(lambda: len(delivered(files))))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.run)
            nursery.start_soon(sampler.run)
            await wait_for(lambda: sampler.latest() >= 500, 60, "the members to deliver")

            # One of three down, the leader (the harder case: every client reconnects while
            # the other two elect a new one); the quorum stays.
            leader = zk_ensemble.zookeeper_leader()
            one_down, one_down_at = time.monotonic(), iso_now()
            await zk_ensemble.astop(leader)
            await trio.sleep(OUTAGE_S)
            one_up = time.monotonic()
            delivery_stall = sampler.longest_stall(one_down, one_up)
            grew_with_one_down = sampler.grew_between(one_down + delivery_stall, one_up)
            logs = [daemons.log(name) for name in MEMBERS]
            gaps = ownership_gaps(logs, one_down_at)
            with_one_down = {name: connection_states(daemons.log(name)) for name in MEMBERS}

            # Two of three down: no quorum, no coordination; ingest goes on.
            await zk_ensemble.astop(1 if leader != 1 else 2)
            quorum_lost = time.monotonic()
            await trio.sleep(OUTAGE_S)
            quorum_back = time.monotonic()
            acked_without_quorum = sender.acked_between(quorum_lost, quorum_back)
            # A batch already in a sink when the connection was suspended may still land.
            grew_without_quorum = sampler.grew_between(quorum_lost + 2.0, quorum_back)

            await trio.to_thread.run_sync(zk_ensemble.restore)
            restored = time.monotonic()
            await trio.sleep(2.0)
            nursery.cancel_scope.cancel()

        acked = set(sender.acked)
        resumed = await wait_for(lambda: acked <= delivered(files), 90, "every acked message")
        states = {name: connection_states(daemons.log(name)) for name in MEMBERS}
        print(
            f"\nleader (server {leader}) down: longest delivery stall {delivery_stall:.1f} s, "
            f"partitions owned again within {max(gaps.values(), default=0.0):.2f} s; quorum lost "
            f"{OUTAGE_S:.0f} s: {acked_without_quorum} acked meanwhile, delivery grew by "
            f"{grew_without_quorum}; all delivered {restored - quorum_back + resumed:.1f} s "
            f"after the restart began; {len(acked)} messages; states {states}"
        )
        assert all(daemons.alive(name) for name in ("server", *MEMBERS))
        assert delivery_stall < MAX_RECONNECT_PAUSE_S
        # Without its leader the ensemble drops every client while it elects another one.
        assert gaps, "the members kept their partitions through a leader change"
        assert all(gap < MAX_RECONNECT_PAUSE_S for gap in gaps.values()), gaps
        assert grew_with_one_down > 0
        assert acked_without_quorum > 0, "ingest must go on without ZooKeeper"
        assert grew_without_quorum == 0, "members must not write without a quorum"
        for name in MEMBERS:
            # A member on the stopped server moved to another one with its session.
            assert "lost" not in with_one_down[name], name
            assert "suspended" in states[name], name
        assert acked <= delivered(files)
    finally:
        daemons.close()
