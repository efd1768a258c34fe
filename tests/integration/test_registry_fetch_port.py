"""A log server that comes back on another fetch port is read there by the running consumers.

A real ``pipeline serve`` registered in the real ZooKeeper (this test's own chroot) and two
``pipeline consume`` members of a group with ``journals = "registry"`` and empty journal
directories, each writing its own files sink.  The server is SIGKILLed while the members wait
at the tail (long polls on its fetch port) and restarted on the same journal with a new fetch
port: the members, never restarted, close their readers of the old address when the registry
shows the new one and go on there.  Every acknowledged event is delivered, none twice (no
member died, so nothing is redelivered).
"""

from __future__ import annotations

import collections
from pathlib import Path

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

from consumers.coordination.zk_client import ZooKeeperConfig

pytestmark = pytest.mark.timeout(180)

MEMBERS = ("c1", "c2")


def delivered(tmp_path: Path) -> list[bytes]:
    return [line for name in MEMBERS for line in file_lines(tmp_path / name / "files")]


def test_a_server_restarted_on_a_new_fetch_port_is_resumed_without_restarting_consumers(
    tmp_path: Path, zk_config: ZooKeeperConfig
) -> None:
    port, old_fetch, new_fetch = free_port(), free_port(), free_port()
    journal_dir = tmp_path / "s1" / "journal"
    config = tmp_path / "s1.toml"
    registered_server_config(config, journal_dir, zk_config, port, old_fetch, partitions=2)
    server = Proc(["serve", "--config", str(config)], tmp_path / "s1.log")
    members = []
    for name in MEMBERS:
        empty = tmp_path / name / "journal"
        empty.mkdir(parents=True)
        member_config = registry_member_config(
            tmp_path / f"{name}.toml", empty, tmp_path / name / "files", zk_config
        )
        members.append(
            Proc(
                ["consume", "--config", str(member_config), "-g", "archive"],
                tmp_path / f"{name}.log",
            )
        )
    sent: list[bytes] = []

    def send_round(tag: bytes) -> None:
        for call in range(6):
            batch = [b"%s-c%02d-m%03d" % (tag, call, m) for m in range(50)]
            send(port, batch)
            sent.extend(batch)

    def all_delivered() -> bool:
        return set(delivered(tmp_path)) >= set(sent)

    try:
        server.start()
        wait_for(lambda: connectable(port) and connectable(old_fetch), what="server up")
        for member in members:
            member.start()
        send_round(b"a")
        wait_for(all_delivered, 60, "first round delivered")

        # At the tail, in long polls on the old port, when the server dies; it comes back on
        # the same journal, listening for fetches elsewhere.
        server.kill()
        registered_server_config(config, journal_dir, zk_config, port, new_fetch, partitions=2)
        server.start()
        wait_for(lambda: connectable(port) and connectable(new_fetch), what="server back")
        assert not connectable(old_fetch)
        send_round(b"b")
        wait_for(all_delivered, 60, "events after the move delivered")

        got = delivered(tmp_path)
        assert set(got) == set(sent)
        assert [m for m, n in collections.Counter(got).items() if n > 1] == []
        assert all(member.alive() for member in members)  # never restarted
        moved = "journal registered at a new fetch address; its units reopen there"
        assert any(moved in member.log.read_text() for member in members)
        for name in MEMBERS:
            assert list((tmp_path / name / "journal").iterdir()) == []
    except BaseException:
        print_logs(tmp_path)
        raise
    finally:
        for member in members:
            member.stop()
        server.stop()
