"""A group taken out of the configuration, coordinated through the real ZooKeeper: listed by
``pipeline offsets show``, holding retention back, and forgotten by ``pipeline offsets delete``
(refused while a member is active unless forced)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio
from pipeline_cli import PIPELINE, IgnoringListener

from consumers.coordination.zk_client import ZooKeeperClient, ZooKeeperConfig
from consumers.coordination.zookeeper import ZooKeeperCoordinator
from journal import JournalConfig, PartitionId, open_journal
from pipeline import config as config_module
from pipeline.consumer_app import retention_floors
from pipeline.floors import ConsumerFloor

pytestmark = pytest.mark.timeout(120)

PID = PartitionId(b"app.x", 0)


def write_config(tmp_path: Path, zk_config: ZooKeeperConfig) -> Path:
    path = tmp_path / "pipeline.toml"
    path.write_text(
        f"""
[journal]
dir = "{tmp_path / "journal"}"
[coordination]
kind = "zookeeper"
settle_s = 0.2
[coordination.zookeeper]
hosts = "{zk_config.hosts}"
chroot = "{zk_config.chroot}"
[[consumers]]
name = "archive"
categories = ["app*"]
sink = "files"
[consumers.files]
file_path = "{tmp_path / "files"}"
"""
    )
    return path


async def cli(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(60):
        return await trio.run_process(
            [*PIPELINE, *map(str, args)], capture_stdout=True, capture_stderr=True, check=False
        )


def rows(result: subprocess.CompletedProcess[bytes]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr.decode()
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def member(zk_config: ZooKeeperConfig, group: str) -> ZooKeeperCoordinator:
    return ZooKeeperCoordinator(zk_config, group, "m", settle_s=0.2, rescan_interval_s=0.2)


async def test_a_removed_group_is_shown_holds_retention_and_is_deleted(
    tmp_path: Path, zk: ZooKeeperClient, zk_config: ZooKeeperConfig
) -> None:
    async with open_journal(tmp_path / "journal", JournalConfig()) as journal:
        await journal.append(PID.category, 0, [b"m%d" % i for i in range(10)])
    await member(zk_config, "archive").reset(PID, 4)
    await member(zk_config, "old").reset(PID, 2)
    path = write_config(tmp_path, zk_config)
    config = config_module.load(path, environ={})
    assert await retention_floors(config) == {PID: ConsumerFloor({"archive": 4, "old": 2})}

    shown = rows(await cli("offsets", "show", "--config", path, "--json"))
    assert [(r["group"], r["committed"], r["configured"]) for r in shown] == [
        ("archive", 4, True),
        ("old", 2, False),
    ]
    active = member(zk_config, "old")
    async with trio.open_nursery() as nursery:
        await nursery.start(active.run, IgnoringListener())
        refused = await cli("offsets", "delete", "--config", path, "-g", "old", "--yes")
        assert refused.returncode == 1
        assert b"active members ['m']" in refused.stderr
        forced = await cli("offsets", "delete", "--config", path, "-g", "old", "--yes", "--force")
        assert rows(forced) == [{"group": "old", "partitions": 1, "configured": False}]
        active.stop()
    assert await member(zk_config, "old").all_committed() == {}
    assert await retention_floors(config) == {PID: ConsumerFloor({"archive": 4})}
    shown = rows(await cli("offsets", "show", "--config", path, "--json"))
    assert [r["group"] for r in shown] == ["archive"]
