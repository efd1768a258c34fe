"""A registry group with a member on the server's own host that reads the journal's files
(``read_local``) delivers what a group of remote members delivers.

A real ``pipeline serve`` registered in the real ZooKeeper (this test's own chroot), with a
fetch port; a group with ``journals = "registry"`` whose member ``local`` has the server's
journal.dir and whose members ``r1`` and ``r2`` have empty ones, each writing its own files
sink.  ``local`` first runs alone, then beside the remote members (units move to them), is
SIGKILLed mid-stream (its units are read through the fetch service by the others) and comes
back (units move to its files again).  Run with ``read_local`` on and off: the delivered
result is the same, every acknowledged event, and none twice except around the kill (each
message is unique, so a message stands for its origin, journal, partition and offset).
"""

from __future__ import annotations

import collections
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fetch_procs import (
    Proc,
    connectable,
    file_lines,
    free_port,
    print_logs,
    registered_server_config,
    registry_member_config,
    send,
    wait_for,
)
from pipeline_cli import PIPELINE

from consumers.coordination.zk_client import ZooKeeperConfig

pytestmark = pytest.mark.timeout(240)

MEMBERS = ("local", "r1", "r2")
PARTITIONS = 4


def delivered(tmp_path: Path) -> list[bytes]:
    return [line for name in MEMBERS for line in file_lines(tmp_path / name / "files")]


def run_json(*args: str) -> Any:
    done = subprocess.run([*PIPELINE, *args], capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return [json.loads(line) for line in done.stdout.splitlines()]


def fetches(port: int) -> int:
    """The fetch requests the server has answered since it started."""
    [counters] = run_json("ctl", "counters", str(port), "--json")
    return int(counters["fetch:requests"])


def owners(config: Path) -> list[str | None]:
    rows = run_json("cluster", "status", "--config", str(config), "--json")
    return [row["owner"] for row in rows if row["kind"] == "unit"]


def owned_by(config: Path, members: int) -> bool:
    """Every unit has an owner, and ``members`` members own them."""
    found = owners(config)
    return len(found) == PARTITIONS and None not in found and len(set(found)) == members


@pytest.mark.parametrize("read_local", [True, False], ids=["read-local", "all-remote"])
def test_a_member_reading_the_servers_files_delivers_what_remote_members_do(
    tmp_path: Path, zk_config: ZooKeeperConfig, read_local: bool
) -> None:
    port, fetch_port = free_port(), free_port()
    journal_dir = tmp_path / "s1" / "journal"
    server_config = registered_server_config(
        tmp_path / "s1.toml", journal_dir, zk_config, port, fetch_port, PARTITIONS
    )
    server = Proc(["serve", "--config", str(server_config)], tmp_path / "s1.log")
    members: dict[str, Proc] = {}
    for name in MEMBERS:
        if name == "local":
            member_dir = journal_dir  # the server's host: its journal.dir
        else:
            member_dir = tmp_path / name / "journal"
            member_dir.mkdir(parents=True)
        config = registry_member_config(
            tmp_path / f"{name}.toml",
            member_dir,
            tmp_path / name / "files",
            zk_config,
            read_local=read_local,
        )
        members[name] = Proc(
            ["consume", "--config", str(config), "-g", "archive"], tmp_path / f"{name}.log"
        )
    status_config = tmp_path / "r1.toml"
    rounds: dict[bytes, list[bytes]] = {}

    def send_calls(tag: bytes, calls: range) -> None:
        for call in calls:
            # Key-less routing spreads calls over the partitions.
            batch = [b"%s-c%02d-m%03d" % (tag, call, m) for m in range(40)]
            send(port, batch)
            rounds.setdefault(tag, []).extend(batch)

    def all_delivered() -> bool:
        sent = {m for batch in rounds.values() for m in batch}
        return set(delivered(tmp_path)) >= sent

    try:
        server.start()
        wait_for(lambda: connectable(port) and connectable(fetch_port), what="server up")
        # The local member alone: every unit is its own.
        members["local"].start()
        send_calls(b"a", range(8))
        wait_for(all_delivered, 60, "round a delivered")
        assert (fetches(port) == 0) is read_local  # read from the files, or fetched

        # The remote members join: units move to them, read through the fetch service.
        members["r1"].start()
        members["r2"].start()
        wait_for(lambda: owned_by(status_config, 3), 60, "units shared by three members")
        send_calls(b"b", range(8))
        wait_for(all_delivered, 60, "round b delivered")
        assert fetches(port) > 0

        # The local member dies mid-stream: the remote members take its units over.
        send_calls(b"c", range(4))
        members["local"].kill()
        send_calls(b"c", range(4, 12))
        wait_for(all_delivered, 90, "round c delivered by the remote members")
        wait_for(lambda: owned_by(status_config, 2), 60, "units owned by the two left")

        # It comes back: units move to its files again, handed over gracefully.
        members["local"].start()
        wait_for(lambda: owned_by(status_config, 3), 60, "units shared by three again")
        send_calls(b"d", range(8))
        wait_for(all_delivered, 60, "round d delivered")

        got = delivered(tmp_path)
        sent = [m for batch in rounds.values() for m in batch]
        assert set(got) == set(sent)  # nothing lost, nothing invented
        twice = {m for m, n in collections.Counter(got).items() if n > 1}
        # Only the uncommitted tail of the killed member comes again (at-least-once).
        assert not twice & set(rounds[b"a"] + rounds[b"d"])
        for name in ("r1", "r2"):
            assert list((tmp_path / name / "journal").iterdir()) == []
        assert all(member.alive() for member in members.values())
    except BaseException:
        print_logs(tmp_path)
        raise
    finally:
        for member in members.values():
            member.stop()
        server.stop()
