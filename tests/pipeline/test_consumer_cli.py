"""``pipeline run`` with an embedded file consumer, ``offsets show|reset`` and ``journal replay``,
each as a real process against a real journal."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from pipeline_cli import PIPELINE

from journal import JournalConfig, PartitionId, RetentionPolicy, open_journal
from scribe_compat import LogEntry, ResultCode, ScribeClient


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp_path: Path, port: int, extra: str = "") -> Path:
    path = tmp_path / "pipeline.toml"
    path.write_text(
        f"""
[server]
port = {port}
[journal]
dir = "{tmp_path / "journal"}"
[coordination]
state_dir = "{tmp_path / "state"}"
rescan_interval_s = 0.2
[[routing.routes]]
category = "default"
partitions = 2
[[consumers]]
name = "archive"
categories = ["app*"]
sink = "files"
commit_interval_s = 0.1
discover_interval_s = 0.2
[consumers.files]
file_path = "{tmp_path / "files"}"
add_newlines = true
"""
        + extra
    )
    return path


def cli(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*PIPELINE, *map(str, args)], check=False, capture_output=True, text=True, timeout=60
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{args}: exit {result.returncode}\n{result.stderr}")
    return result


def wait_for(predicate: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def connectable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Path, int, subprocess.Popen[bytes]]]:
    port = free_port()
    config = write_config(tmp_path, port)
    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen([*PIPELINE, "run", "--config", str(config)], stderr=log)
    try:
        wait_for(lambda: connectable(port) or proc.poll() is not None)
        assert proc.poll() is None, (tmp_path / "run.log").read_text()
        yield config, port, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        log.close()


def send(port: int, category: bytes, messages: list[bytes]) -> None:
    with ScribeClient.connect("127.0.0.1", port) as client:
        entries = [LogEntry(category=category, message=m) for m in messages]
        assert client.log(entries) == ResultCode.OK


def file_lines(root: Path, category: str) -> list[bytes]:
    directory = root / category
    if not directory.is_dir():
        return []
    lines: list[bytes] = []
    for path in sorted(directory.glob(f"{category}_[0-9]*")):
        lines.extend(path.read_bytes().splitlines())
    return lines


def test_run_consumes_into_files_and_commits(
    running: tuple[Path, int, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    config, port, proc = running
    sent = [b"event-%d" % i for i in range(300)]
    for chunk in range(0, 300, 100):
        send(port, b"app.web", sent[chunk : chunk + 100])
    send(port, b"other", [b"not consumed"])
    wait_for(lambda: len(file_lines(tmp_path / "files", "app.web")) >= 300)
    assert sorted(file_lines(tmp_path / "files", "app.web")) == sorted(sent)
    assert not (tmp_path / "files" / "other").exists()

    def committed_all() -> bool:
        rows = [
            json.loads(r)
            for r in cli("offsets", "show", "--config", config, "--json").stdout.splitlines()
        ]
        return bool(rows) and all(r["lag"] == 0 and r["committed"] is not None for r in rows)

    wait_for(committed_all)
    rows = [
        json.loads(r)
        for r in cli("offsets", "show", "--config", config, "--json").stdout.splitlines()
    ]
    assert {r["category"] for r in rows} == {"app.web"}
    assert sum(r["committed"] for r in rows) == 300
    assert all(r["members"] for r in rows)

    refused = cli(
        "offsets", "reset", "--config", config, "-g", "archive", "--to", "earliest", check=False
    )
    assert refused.returncode == 1
    assert "active" in refused.stderr

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_offsets_reset_and_replay(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    proc = subprocess.Popen(
        [*PIPELINE, "serve", "--config", str(config)], stderr=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: connectable(port))
        send(port, b"app.x", [b"m%d" % i for i in range(50)])
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0

    shown = [
        json.loads(r)
        for r in cli("offsets", "show", "--config", config, "--json").stdout.splitlines()
    ]
    assert {(r["committed"], r["lag"]) for r in shown} <= {(None, n) for n in range(51)}
    assert sum(r["lag"] for r in shown) == 50

    cli("offsets", "reset", "--config", config, "-g", "archive", "--to", "latest")
    shown = [
        json.loads(r)
        for r in cli("offsets", "show", "--config", config, "--json").stdout.splitlines()
    ]
    assert sum(r["lag"] for r in shown) == 0
    cli("offsets", "reset", "--config", config, "-g", "archive", "--to", "earliest", "-p", "0")
    shown = {
        r["partition"]: r
        for r in (
            json.loads(x)
            for x in cli("offsets", "show", "--config", config, "--json").stdout.splitlines()
        )
    }
    assert shown[0]["committed"] == 0

    out = tmp_path / "replayed"
    result = cli(
        "journal", "replay", "--config", config, "-c", "app.x", "--to-files", out, "--add-newlines"
    )
    assert json.loads(result.stdout.splitlines()[-1])["messages"] == 50
    assert sorted(file_lines(out, "app.x")) == sorted(b"m%d" % i for i in range(50))

    partial = cli(
        "journal",
        "replay",
        "--config",
        config,
        "-c",
        "app.x",
        "-p",
        "0",
        "--from-offset",
        "1",
        "--to-offset",
        "3",
        "--to-files",
        tmp_path / "partial",
        "--add-newlines",
    )
    assert json.loads(partial.stdout.splitlines()[-1])["messages"] == 2


def test_replay_to_a_scribe_server(tmp_path: Path) -> None:
    source = tmp_path / "a"
    target = tmp_path / "b"
    source.mkdir()
    target.mkdir()
    port_a, port_b = free_port(), free_port()
    config_a = write_config(source, port_a)
    config_b = write_config(target, port_b)
    procs = [
        subprocess.Popen([*PIPELINE, "serve", "--config", str(c)], stderr=subprocess.DEVNULL)
        for c in (config_a, config_b)
    ]
    try:
        wait_for(lambda: connectable(port_a) and connectable(port_b))
        send(port_a, b"app.fwd", [b"f%d" % i for i in range(40)])
        cli(
            "journal",
            "replay",
            "--config",
            config_a,
            "-c",
            "app.fwd",
            "--to-scribe",
            f"127.0.0.1:{port_b}",
        )
        dumped = cli("journal", "dump", "--journal-dir", target / "journal", "-c", "app.fwd").stdout
        assert sorted(json.loads(line)["message"] for line in dumped.splitlines()) == sorted(
            f"f{i}" for i in range(40)
        )
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def test_consume_refuses_an_unknown_group(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port())
    result = cli("consume", "--config", config, "--group", "nope", check=False)
    assert result.returncode == 78
    assert "nope" in result.stderr
    assert os.path.exists(config)


def trimmed_journal(tmp_path: Path) -> tuple[Path, int, int]:
    """A journal of 250 messages in app.x/0 whose oldest segments retention deleted."""

    async def fill() -> tuple[int, int]:
        config = JournalConfig(segment_bytes=4096)
        async with open_journal(tmp_path / "journal", config) as journal:
            for i in range(25):
                await journal.append(
                    b"app.x", 0, [b"m%03d-%d " % (i, j) + b"x" * 200 for j in range(10)]
                )
            journal.apply_retention(lambda _: RetentionPolicy(max_bytes=8192), lambda _: None)
            with journal.open_reader(PartitionId(b"app.x", 0), None) as reader:
                return reader.earliest_offset(), reader.high_water_mark()

    earliest, high = trio.run(fill)
    assert 0 < earliest < high == 250
    return write_config(tmp_path, free_port()), earliest, high


def test_replay_and_reset_after_retention_trimmed_the_partition(tmp_path: Path) -> None:
    config, earliest, high = trimmed_journal(tmp_path)
    result = cli(
        "journal", "replay", "--config", config, "-c", "app.x", "--to-files", tmp_path / "r"
    )
    assert json.loads(result.stdout.splitlines()[-1])["messages"] == high - earliest
    shown = [
        json.loads(r)
        for r in cli("offsets", "show", "--config", config, "--json").stdout.splitlines()
    ]
    assert [r["lag"] for r in shown] == [high - earliest]
    reset = cli("offsets", "reset", "--config", config, "-g", "archive", "--to", "earliest")
    assert json.loads(reset.stdout)["offset"] == earliest


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("-g", "archive", "--to", "99999"), 2, "outside"),
        (("-g", "archive", "--to", "time:abc"), 2, "time:"),
        (("-g", "archive", "--to", "soon"), 2, "earliest, latest"),
        (
            ("-g", "nosuch", "--to", "earliest"),
            1,
            "no consumer group 'nosuch' (consumer groups: archive)",
        ),
    ],
)
def test_offsets_reset_refuses_bad_targets_clearly(
    tmp_path: Path, args: tuple[str, ...], code: int, says: str
) -> None:
    config, _, _ = trimmed_journal(tmp_path)
    result = cli("offsets", "reset", "--config", config, *args, check=False)
    assert result.returncode == code, result.stderr
    assert says in result.stderr
    assert "Traceback" not in result.stderr
