"""Counters have one style, fb303's ``<scope>:<name with spaces>``, wherever they are produced:
the consumer runtime, every sink's ``metrics()``, and the counters and status line a member
gives; ``pipeline ctl counters --json`` prints them as one JSON object."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import trio
from pipeline_cli import PIPELINE

from consumers import (
    FileSink,
    FileSinkConfig,
    ForwardSink,
    ForwardSinkConfig,
    GroupConfig,
    LocalCoordinator,
    LocalCoordinatorConfig,
)
from consumers.cassandra import CassandraConfig
from consumers.runtime import ConsumerRuntime
from consumers.sinks.cassandra import BUILTINS, CassandraSink
from pipeline import config as config_module
from pipeline.consumer_app import consumer_counters, status_fields
from pipeline.daemon import Daemon, serve_pipeline
from scribe_compat import AsyncScribeClient, LogEntry, ResultCode

# Words of lower-case letters and digits, one space apart: "sink retries", "p99 us".
NAME = re.compile(r"[a-z0-9]+( [a-z0-9]+)*")
COUNTER = re.compile(r"[^:]+:[a-z0-9]+( [a-z0-9]+)*")
LOG_FIELD = re.compile(r"[a-z0-9]+(_[a-z0-9]+)*")


def runtime_with(tmp_path: Path, sink: FileSink | ForwardSink | CassandraSink) -> ConsumerRuntime:
    coordinator = LocalCoordinator(LocalCoordinatorConfig(state_dir=tmp_path / "state"), "archive")
    return ConsumerRuntime(tmp_path / "journal", GroupConfig("archive"), coordinator, sink)


def cassandra_sink() -> CassandraSink:
    options, materializer = BUILTINS["events"]
    return CassandraSink(
        lambda: None,  # type: ignore[arg-type,return-value]  (never started here)
        materializer(options()),
        group="archive",
        journal_id=uuid.uuid4(),
        config=CassandraConfig(),
    )


def sinks(tmp_path: Path) -> list[FileSink | ForwardSink | CassandraSink]:
    return [
        FileSink(FileSinkConfig(file_path=tmp_path / "files")),
        ForwardSink(ForwardSinkConfig(host="127.0.0.1")),
        cassandra_sink(),
    ]


def test_every_sink_names_its_counters_in_one_style(tmp_path: Path) -> None:
    for sink in sinks(tmp_path):
        names = list(sink.metrics())
        assert names, sink
        assert all(NAME.fullmatch(name) for name in names), names


def test_a_member_gives_fb303_counters_and_log_fields_in_one_style(tmp_path: Path) -> None:
    for sink in sinks(tmp_path):
        runtime = runtime_with(tmp_path, sink)
        counters = consumer_counters(runtime)
        assert all(COUNTER.fullmatch(name) for name in counters), sorted(counters)
        fields = status_fields(runtime)
        assert all(LOG_FIELD.fullmatch(field) for field in fields), sorted(fields)
    files = consumer_counters(runtime_with(tmp_path, sinks(tmp_path)[0]))
    for name in (
        "consumer archive:messages consumed",
        "consumer archive:bytes consumed",
        "consumer archive:sink retries",
        "consumer archive:partitions owned",
        "consumer archive:sink batches",
        "consumer archive:sink files created",
    ):
        assert name in files, sorted(files)
    forward = consumer_counters(runtime_with(tmp_path, sinks(tmp_path)[1]))
    # Scribe's network store reports these; dashboards built on Scribe read them.
    assert {"scribe_overall:sent", "scribe_overall:retries"} <= set(forward)
    cassandra = status_fields(runtime_with(tmp_path, cassandra_sink()))
    assert {"rows_written", "dead_letters", "cassandra_latency_p99_us"} <= set(cassandra)


async def test_ctl_counters_json_prints_one_object(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.toml"
    path.write_text(f'[server]\nport = 0\n[journal]\ndir = "{tmp_path / "journal"}"\n')
    config = config_module.load(path, environ={})
    async with trio.open_nursery() as nursery:
        daemon: Daemon = await nursery.start(serve_pipeline, config)
        host, port = daemon.address
        async with await AsyncScribeClient.connect(host, port, 10) as client:
            assert await client.log([LogEntry(category=b"app", message=b"m")]) == ResultCode.OK
        with trio.fail_after(60):
            result = await trio.run_process(
                [*PIPELINE, "ctl", "counters", "--target", f"{host}:{port}", "--json"],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        plain = await trio.run_process(
            [*PIPELINE, "ctl", "counters", "--target", f"{host}:{port}"], capture_stdout=True
        )
        refused = await trio.run_process(
            [*PIPELINE, "ctl", "status", "--target", f"{host}:{port}", "--json"],
            capture_stderr=True,
            check=False,
        )
        daemon.request_stop()
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.decode().splitlines()  # one JSON object, on one line
    counters = json.loads(line)
    assert counters["app:received good"] == 1
    assert counters["scribe_overall:received good"] == 1
    assert all(isinstance(value, int) for value in counters.values())
    assert list(counters) == sorted(counters)
    # The same counters as the scribe_ctrl lines.
    assert plain.stdout.decode().splitlines() == [f"{k}: {v}" for k, v in counters.items()]
    assert refused.returncode == 2  # a usage error: --json is for counters
    assert b"--json" in refused.stderr
