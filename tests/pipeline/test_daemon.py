"""The log server in-process: Log into the real journal, routing, counters, fb303, reload, drain."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from journal import PartitionId, list_partitions, open_reader
from pipeline import config as config_module
from pipeline.config import PipelineConfig
from pipeline.daemon import Daemon, serve_pipeline
from scribe_compat import AsyncScribeClient, FbStatus, LogBatch, LogEntry, ResultCode


def make_config(tmp_path: Path, toml: str = "") -> PipelineConfig:
    path = tmp_path / "pipeline.toml"
    path.write_text(
        f'[server]\nport = 0\n[journal]\ndir = "{tmp_path / "journal"}"\n'
        "retention_check_interval_s = 3600.0\n" + toml
    )
    return config_module.load(path, environ={})


@pytest.fixture
async def daemon(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Daemon]:
    toml = getattr(request, "param", "")
    async with trio.open_nursery() as nursery:
        handle: Daemon = await nursery.start(serve_pipeline, make_config(tmp_path, toml))
        yield handle
        handle.request_stop()


async def client_for(daemon: Daemon, **kwargs: Any) -> AsyncScribeClient:
    host, port = daemon.address
    return await AsyncScribeClient.connect(host, port, 10, **kwargs)


def journal_messages(journal_dir: Path, category: bytes, partition: int = 0) -> list[bytes]:
    with open_reader(journal_dir, PartitionId(category, partition), 0) as reader:
        out: list[bytes] = []
        while batch := reader.read():
            out.extend(m.message for m in batch)
        return out


async def test_log_is_journaled_before_ok(daemon: Daemon, tmp_path: Path) -> None:
    entries = [
        LogEntry(category=b"app", message=f"m{i}\x00\xff".encode("latin-1")) for i in range(50)
    ]
    async with await client_for(daemon) as client:
        assert await client.log(entries) == ResultCode.OK
        counters = await client.get_counters()
    assert journal_messages(tmp_path / "journal", b"app") == [e.message for e in entries]
    assert counters["app:received good"] == 50
    assert counters["scribe_overall:received good"] == 50


async def test_strict_unframed_clients_are_served_too(daemon: Daemon, tmp_path: Path) -> None:
    async with await client_for(daemon, framed=False, strict=True) as client:
        assert await client.log([LogEntry(category=b"u", message=b"x")]) == ResultCode.OK
    assert journal_messages(tmp_path / "journal", b"u") == [b"x"]


async def test_empty_probe_answers_ok(daemon: Daemon) -> None:
    async with await client_for(daemon) as client:
        assert await client.log([]) == ResultCode.OK


ROUTES = """
[[routing.routes]]
category = "fan"
target = "fan-a"
[[routing.routes]]
category = "fan"
target = "fan-b"
[[routing.routes]]
category = "keyed*"
partitions = 4
partitioner = "key-hash"
"""


@pytest.mark.parametrize("daemon", [ROUTES], indirect=True)
async def test_routes_fan_out_partition_and_drop_unroutable(daemon: Daemon, tmp_path: Path) -> None:
    entries = [LogEntry(category=b"fan", message=b"f")]
    entries += [LogEntry(category=b"keyed.x", message=f"k{i}:v".encode()) for i in range(40)]
    entries += [LogEntry(category=b"nowhere", message=b"lost"), LogEntry(category=b"", message=b"")]
    async with await client_for(daemon) as client:
        assert await client.log(entries) == ResultCode.OK
        counters = await client.get_counters()
    journal_dir = tmp_path / "journal"
    assert journal_messages(journal_dir, b"fan-a") == [b"f"]
    assert journal_messages(journal_dir, b"fan-b") == [b"f"]
    keyed = {i.partition for i in list_partitions(journal_dir) if i.category == b"keyed.x"}
    assert len(keyed) > 1
    assert not any(i.category == b"nowhere" for i in list_partitions(journal_dir))
    assert counters["nowhere:received bad"] == 1
    assert counters["scribe_overall:received blank category"] == 1
    assert counters["keyed.x:received good"] == 40


@pytest.mark.parametrize(
    "daemon",
    ['[routing]\nunroutable = "journal"\n[[routing.routes]]\ncategory = "only"\n'],
    indirect=True,
)
async def test_unroutable_can_go_to_the_catch_all(daemon: Daemon, tmp_path: Path) -> None:
    async with await client_for(daemon) as client:
        assert await client.log([LogEntry(category=b"stray", message=b"s")]) == ResultCode.OK
    with open_reader(tmp_path / "journal", PartitionId(b"scribe_unroutable", 0), 0) as reader:
        (message,) = reader.read()
    assert message.message == b"s"
    assert message.metadata == {b"scribe_category": b"stray"}


async def test_fb303_methods(daemon: Daemon) -> None:
    async with await client_for(daemon, strict=True) as client:
        assert await client.get_name() == "scribe-pipeline"
        assert await client.get_version()
        assert await client.get_status() == FbStatus.ALIVE
        assert await client.get_status_details() == ""
        assert 0 < await client.alive_since() <= trio.current_time() + 2e9
        await client.set_option("k", "v")
        assert await client.get_option("k") == "v"
        assert await client.get_options() == {"k": "v"}
        assert await client.get_counter("scribe_overall:received good") == 0
        assert await client.get_cpu_profile(1) == ""


async def test_reinitialize_reloads_routes(tmp_path: Path) -> None:
    config = make_config(tmp_path, '[[routing.routes]]\ncategory = "a"\n')
    assert config.source is not None
    async with trio.open_nursery() as nursery:
        daemon: Daemon = await nursery.start(serve_pipeline, config)
        async with await client_for(daemon) as client:
            await client.log([LogEntry(category=b"b", message=b"1")])
            assert await client.get_counter("b:received bad") == 1
            config.source.write_text(
                config.source.read_text().replace('category = "a"', 'category = "b"')
            )
            await client.reinitialize()
            await trio.sleep(0.2)  # oneway: give the server a moment
            await client.log([LogEntry(category=b"b", message=b"2")])
            assert await client.get_counter("b:received good") == 1
        daemon.request_stop()
    assert journal_messages(tmp_path / "journal", b"b") == [b"2"]


async def test_shutdown_drains_and_stops(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        daemon: Daemon = await nursery.start(serve_pipeline, make_config(tmp_path))
        async with await client_for(daemon) as client:
            await client.log([LogEntry(category=b"s", message=b"before")])
            await client.shutdown()
        with trio.fail_after(15):
            while daemon.service.get_status() != FbStatus.STOPPING:  # noqa: ASYNC110
                await trio.sleep(0.01)
        late = LogBatch.from_entries([LogEntry(category=b"s", message=b"late")])
        assert await daemon.service.log(late) == ResultCode.TRY_LATER
        assert await daemon.service.log(LogBatch([], [])) == ResultCode.TRY_LATER
    # The nursery exited: the daemon drained and closed the journal by itself.
    assert journal_messages(tmp_path / "journal", b"s") == [b"before"]


async def test_the_server_sets_its_gil_switch_interval(tmp_path: Path) -> None:
    before = sys.getswitchinterval()
    try:
        config = make_config(tmp_path)
        async with trio.open_nursery() as nursery:
            daemon: Daemon = await nursery.start(serve_pipeline, config)
            assert sys.getswitchinterval() == pytest.approx(config.server.switch_interval_s)
            daemon.request_stop()
    finally:
        sys.setswitchinterval(before)
