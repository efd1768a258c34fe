"""``pipeline offsets show`` lists every group with stored offsets, configured or not, and
``pipeline offsets delete`` forgets one (refused while members are active unless forced), each
as a real process against the local coordinator's state."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import trio
from pipeline_cli import PIPELINE, IgnoringListener

from consumers import LocalCoordinator, LocalCoordinatorConfig
from journal import JournalConfig, PartitionId, open_journal

PID = PartitionId(b"app.x", 0)


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "pipeline.toml"
    path.write_text(
        f"""
[journal]
dir = "{tmp_path / "journal"}"
[coordination]
state_dir = "{tmp_path / "state"}"
rescan_interval_s = 0.1
[[consumers]]
name = "archive"
categories = ["app*"]
sink = "files"
[consumers.files]
file_path = "{tmp_path / "files"}"
"""
    )
    return path


async def cli(*args: str | Path, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(60):
        return await trio.run_process(
            [*PIPELINE, *map(str, args)],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


def rows(result: subprocess.CompletedProcess[bytes]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr.decode()
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def member(tmp_path: Path, group: str) -> LocalCoordinator:
    return LocalCoordinator(LocalCoordinatorConfig(state_dir=tmp_path / "state"), group, "m")


async def prepared(tmp_path: Path) -> Path:
    """Ten messages in app.x/0; "archive" (configured) at 4, "old" (not any more) at 2."""
    async with open_journal(tmp_path / "journal", JournalConfig()) as journal:
        await journal.append(PID.category, 0, [b"m%d" % i for i in range(10)])
    await member(tmp_path, "archive").reset(PID, 4)
    await member(tmp_path, "old").reset(PID, 2)
    return write_config(tmp_path)


async def test_show_lists_groups_that_are_no_longer_configured(tmp_path: Path) -> None:
    config = await prepared(tmp_path)
    shown = rows(await cli("offsets", "show", "--config", config, "--json"))
    assert [(r["group"], r["committed"], r["lag"], r["configured"]) for r in shown] == [
        ("archive", 4, 6, True),
        ("old", 2, 8, False),
    ]
    table = await cli("offsets", "show", "--config", config)
    assert b"old*" in table.stdout
    assert b"not in the configuration" in table.stderr


async def test_delete_forgets_a_group_after_confirmation(tmp_path: Path) -> None:
    config = await prepared(tmp_path)
    declined = await cli("offsets", "delete", "--config", config, "-g", "old", stdin=b"n\n")
    assert declined.returncode == 1
    assert b"delete the offsets of group 'old' in 1 partitions?" in declined.stderr
    assert await member(tmp_path, "old").committed(PID) == 2
    deleted = rows(await cli("offsets", "delete", "--config", config, "-g", "old", stdin=b"y\n"))
    assert deleted == [{"group": "old", "partitions": 1, "configured": False}]
    shown = rows(await cli("offsets", "show", "--config", config, "--json"))
    assert [r["group"] for r in shown] == ["archive"]
    again = await cli("offsets", "delete", "--config", config, "-g", "old", "--yes")
    assert again.returncode == 1
    assert b"no consumer group 'old' (consumer groups: archive)" in again.stderr


async def test_delete_is_refused_while_members_are_active_unless_forced(tmp_path: Path) -> None:
    config = await prepared(tmp_path)
    active = member(tmp_path, "old")
    async with trio.open_nursery() as nursery:
        await nursery.start(active.run, IgnoringListener())
        refused = await cli("offsets", "delete", "--config", config, "-g", "old", "--yes")
        assert refused.returncode == 1
        assert b"active members ['m']" in refused.stderr
        assert b"--force" in refused.stderr
        assert await member(tmp_path, "old").committed(PID) == 2
        forced = await cli("offsets", "delete", "--config", config, "-g", "old", "--yes", "--force")
        assert rows(forced) == [{"group": "old", "partitions": 1, "configured": False}]
        active.stop()
    assert await member(tmp_path, "old").committed(PID) is None
