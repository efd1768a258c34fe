"""Retention floors: every group with stored offsets holds retention back, configured or not,
and a group that does is named in the log; once its offsets are deleted, retention goes on."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from consumers import LocalCoordinator, LocalCoordinatorConfig
from journal import PartitionId, RetentionHold
from journal.segments import list_segments
from pipeline import config as config_module
from pipeline.config import PipelineConfig
from pipeline.consumer_app import retention_floors
from pipeline.daemon import Daemon, serve_pipeline
from pipeline.floors import ConsumerFloor, floor_lookup, log_holds
from scribe_compat import AsyncScribeClient, LogEntry, ResultCode

PID = PartitionId(b"app.x", 0)


def make_config(tmp_path: Path) -> PipelineConfig:
    path = tmp_path / "pipeline.toml"
    path.write_text(
        f"""
[server]
port = 0
[journal]
dir = "{tmp_path / "journal"}"
segment_bytes = 4096
retention_check_interval_s = 1.0
[coordination]
state_dir = "{tmp_path / "state"}"
[[routing.routes]]
category = "default"
retention_bytes = 1
[[consumers]]
name = "archive"
categories = ["other*"]
sink = "files"
[consumers.files]
file_path = "{tmp_path / "files"}"
"""
    )
    return config_module.load(path, environ={})


def removed_group(config: PipelineConfig) -> LocalCoordinator:
    """A group whose offsets are stored although the configuration no longer has it."""
    local = LocalCoordinatorConfig(state_dir=config.coordination.state_dir)
    return LocalCoordinator(local, "old", "admin")


def test_log_holds_names_each_group_behind_the_kept_segment(
    caplog: pytest.LogCaptureFixture,
) -> None:
    floors = {PID: ConsumerFloor({"archive": 900, "old": 10, "fresh": 0})}
    assert floor_lookup(floors)(PID) == 0
    assert floor_lookup(floors)(PartitionId(b"none", 0)) is None
    hold = RetentionHold(PID, base_offset=0, end_offset=20, size_bytes=4096, reason="age", floor=0)
    with caplog.at_level(logging.WARNING, logger="pipeline.floors"):
        log_holds([hold], floors, configured={"archive", "fresh"})
    lines = {r.group: r for r in caplog.records}  # type: ignore[attr-defined]
    assert set(lines) == {"old", "fresh"}  # archive committed past the segment: not to blame
    assert "not in the configuration" in lines["old"].getMessage()
    assert "offsets delete" in lines["old"].getMessage()
    assert lines["old"].partition == "app.x/0"  # type: ignore[attr-defined]
    assert lines["old"].committed == 10  # type: ignore[attr-defined]
    assert lines["fresh"].getMessage() == "retention held back by consumer group"


async def test_a_removed_group_holds_retention_until_its_offsets_are_deleted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path)
    old = removed_group(config)
    await old.reset(PID, 0)
    # Not configured, yet its stored offset pins the partition (archive matches nothing here).
    assert await retention_floors(config) == {PID: ConsumerFloor({"old": 0})}
    async with trio.open_nursery() as nursery:

        async def floors_now() -> dict[PartitionId, ConsumerFloor]:
            return await retention_floors(config)

        daemon: Daemon = await nursery.start(
            lambda task_status: serve_pipeline(
                config, retention_floors=floors_now, task_status=task_status
            )
        )
        host, port = daemon.address
        async with await AsyncScribeClient.connect(host, port, 10) as client:
            for i in range(12):
                entries = [LogEntry(category=PID.category, message=b"%04d" % i + b"x" * 1000)]
                assert await client.log(entries) == ResultCode.OK
        segments = list_segments(tmp_path / "journal" / "app.x" / "0")
        assert len(segments) > 2
        with caplog.at_level(logging.WARNING, logger="pipeline.floors"):
            await trio.sleep(1.5)  # a retention round at least
        held = [r for r in caplog.records if r.name == "pipeline.floors"]
        assert held, caplog.text
        assert (held[0].group, held[0].partition) == ("old", "app.x/0")  # type: ignore[attr-defined]
        assert list_segments(tmp_path / "journal" / "app.x" / "0") == segments  # nothing went
        assert await old.delete() == 1
        assert await retention_floors(config) == {}
        await trio.sleep(1.5)
        assert list_segments(tmp_path / "journal" / "app.x" / "0") == segments[-1:]
        daemon.request_stop()
