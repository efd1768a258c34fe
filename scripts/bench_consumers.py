#!/usr/bin/env python3
"""Consumer throughput on ZooKeeper coordination: file sink and forwarder, msgs/s per process.

Usage (ZooKeeper running, e.g. `pipeline services start --only zookeeper`)::

    .venv/bin/python scripts/bench_consumers.py [--messages 200000] [--size 100] [--members 1]

Fills a fresh journal (8 partitions) in a temporary directory, then starts ``--members``
`pipeline consume` processes (files sink, then forward sink to a `pipeline serve`) on a chroot of
their own and times how long they take until every partition's committed offset (read from
ZooKeeper) reaches the end of the journal.  Prints one JSON line per sink.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import trio

from consumers import errors as zkerr
from consumers.coordination.zk_client import ZooKeeperConfig, open_zookeeper
from journal import JournalConfig, open_journal

PIPELINE = [sys.executable, "-c", "from pipeline.cli import main; main()"]
PARTITIONS = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def fill(directory: Path, messages: int, size: int) -> None:
    async with open_journal(directory, JournalConfig()) as journal:
        per_partition = messages // PARTITIONS
        for partition in range(PARTITIONS):
            for start in range(0, per_partition, 1000):
                count = min(1000, per_partition - start)
                batch = [
                    (b"p%d-%09d " % (partition, start + i)).ljust(size, b"x") for i in range(count)
                ]
                await journal.append(b"bench", partition, batch)


async def committed_total(zk: ZooKeeperConfig, group: str) -> int:
    total = 0
    async with open_zookeeper(zk) as client:
        for partition in range(PARTITIONS):
            try:
                data, _ = await client.get(f"/groups/{group}/partitions/bench/{partition}/offset")
            except zkerr.NoNode:
                continue
            total += int(data) if data else 0
    return total


async def drop_chroot(zk: ZooKeeperConfig) -> None:
    async with open_zookeeper(ZooKeeperConfig(hosts=zk.hosts)) as client:
        await client.delete(zk.chroot, recursive=True)


def config_text(work: Path, zk: ZooKeeperConfig, sink: str) -> str:
    return f"""
[journal]
dir = "{work / "journal"}"
[coordination]
kind = "zookeeper"
settle_s = 0.5
[coordination.zookeeper]
hosts = "{zk.hosts}"
chroot = "{zk.chroot}"
session_timeout_s = 4.0
[log]
level = "warning"
[[consumers]]
name = "bench"
categories = ["*"]
{sink}
"""


def run_members(
    work: Path, config: Path, zk: ZooKeeperConfig, members: int, total: int
) -> dict[str, object]:
    procs = [
        subprocess.Popen(
            [*PIPELINE, "consume", "--config", str(config), "--group", "bench"],
            stderr=(work / f"{config.stem}-{i}.log").open("wb"),
        )
        for i in range(members)
    ]
    began = time.monotonic()
    try:
        while True:
            done = trio.run(committed_total, zk, "bench")
            if done >= total:
                break
            if any(p.poll() is not None for p in procs):
                raise SystemExit(f"a member died; see {work}")
            time.sleep(0.1)
        elapsed = time.monotonic() - began
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
    return {
        "messages": total,
        "members": members,
        "seconds_from_start": round(elapsed, 2),
        "msgs_per_s_per_process": round(total / elapsed / members),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--members", type=int, default=1)
    parser.add_argument("--hosts", default="127.0.0.1:2181")
    args = parser.parse_args()
    total = args.messages // PARTITIONS * PARTITIONS
    with tempfile.TemporaryDirectory(prefix="bench-consumers-") as tmp:
        work = Path(tmp)
        trio.run(fill, work / "journal", total, args.size)
        for sink in ("files", "forward"):
            zk = ZooKeeperConfig(hosts=args.hosts, chroot=f"/bench-{uuid.uuid4().hex[:10]}")
            server = None
            if sink == "files":
                table = f'sink = "files"\n[consumers.files]\nfile_path = "{work / "files"}"\n'
            else:
                port = free_port()
                upstream = work / "upstream.toml"
                upstream.write_text(
                    f'[server]\nport = {port}\n[journal]\ndir = "{work / "journal-b"}"\n'
                    '[log]\nlevel = "warning"\n'
                )
                server = subprocess.Popen(
                    [*PIPELINE, "serve", "--config", str(upstream)],
                    stderr=(work / "upstream.log").open("wb"),
                )
                table = (
                    f'sink = "forward"\n[consumers.forward]\nhost = "127.0.0.1"\nport = {port}\n'
                )
            config = work / f"{sink}.toml"
            config.write_text(config_text(work, zk, table))
            try:
                result = run_members(work, config, zk, args.members, total)
            finally:
                if server is not None:
                    server.terminate()
                    server.wait()
                trio.run(drop_chroot, zk)
            print(json.dumps({"sink": sink, "message_bytes": args.size, **result}), flush=True)


if __name__ == "__main__":
    main()
