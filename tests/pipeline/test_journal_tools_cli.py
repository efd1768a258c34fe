"""The journal and offsets tools as an operator meets them: ``journal tail`` follows what
appears, a closed pipe ends any command quietly, an unknown name is one error naming what
exists, times are refused when they are plainly seconds, and replay gives up in bounded time."""

from __future__ import annotations

import datetime
import json
import logging
import queue
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import click
import pytest
import trio
from click.testing import CliRunner, Result
from pipeline_cli import PIPELINE

from journal import JournalConfig, open_journal
from pipeline.cli import main
from pipeline.cli.common import TimeParam
from pipeline.times import parse_time

SECONDS = 1_795_000_000  # 2026-11-18 as seconds since the epoch


def append(directory: Path, category: bytes, messages: list[bytes], partition: int = 0) -> None:
    async def write() -> None:
        async with open_journal(directory, JournalConfig()) as journal:
            await journal.append(category, partition, messages)

    trio.run(write)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "pipeline.toml"
    path.write_text(
        f"""
[journal]
dir = "{tmp_path / "journal"}"
[coordination]
state_dir = "{tmp_path / "state"}"
[[consumers]]
name = "archive"
categories = ["app*"]
sink = "files"
[consumers.files]
file_path = "{tmp_path / "files"}"
"""
    )
    return path


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """The tools configure logging on the runner's stderr; later tests get the old handlers."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    """``app.x`` with partitions 0 and 1, and ``other``; a config beside it."""
    directory = tmp_path / "journal"
    append(directory, b"app.x", [b"a0", b"a1"], 0)
    append(directory, b"app.x", [b"b0"], 1)
    append(directory, b"other", [b"o0"])
    write_config(tmp_path)
    return directory


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


class Lines:
    """A process's stream read line by line in a thread, so a test can wait with a deadline."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[bytes]) -> None:
        with stream:
            for line in stream:
                self._lines.put(line)

    def next(self, timeout: float = 20.0) -> bytes:
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line within {timeout} s") from None

    def ready(self) -> bool:
        return not self._lines.empty()


def start_tail(directory: Path, *args: str) -> tuple[subprocess.Popen[bytes], Lines, Lines]:
    proc = subprocess.Popen(
        [*PIPELINE, "journal", "tail", "--journal-dir", str(directory), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    return proc, Lines(proc.stdout), Lines(proc.stderr)


def finish(proc: subprocess.Popen[bytes]) -> int:
    try:
        return proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- 10: tail follows what appears; a closed pipe ends quietly --------------------------------


def test_tail_follows_a_category_created_after_it_started(journal: Path) -> None:
    proc, out, err = start_tail(journal, "--count", "3")
    try:
        # Once a message of ``other`` comes through, tail has made its first scan.
        deadline = time.monotonic() + 20
        while not out.ready():
            assert time.monotonic() < deadline, "tail printed nothing of a present category"
            append(journal, b"other", [b"ping"])
            time.sleep(0.1)
        first = json.loads(out.next())
        assert first["category"] == "other"
        append(journal, b"brand.new", [b"n0", b"n1"])
        got = [json.loads(out.next()) for _ in range(2)]
        assert finish(proc) == 0
    finally:
        finish(proc)
    # A partition that appears is read from its first message, as tail -F reads a new file.
    assert [(r["category"], r["offset"], r["message"]) for r in got] == [
        ("brand.new", 0, "n0"),
        ("brand.new", 1, "n1"),
    ]
    assert b"following brand.new/0" in err.next()


def test_tail_waits_for_a_category_that_does_not_exist_yet(journal: Path) -> None:
    proc, out, err = start_tail(journal, "-c", "not.yet", "--count", "2")
    try:
        notice = err.next()
        assert b"waiting for category 'not.yet' to appear in" in notice
        assert proc.poll() is None
        append(journal, b"not.yet", [b"first", b"second"])
        got = [json.loads(out.next())["message"] for _ in range(2)]
        assert finish(proc) == 0
    finally:
        finish(proc)
    assert got == ["first", "second"]


@pytest.mark.parametrize("command", [["dump"], ["tail", "--from-beginning"]])
def test_a_closed_pipe_ends_dump_and_tail_quietly(tmp_path: Path, command: list[str]) -> None:
    directory = tmp_path / "journal"
    # More than a pipe's buffer, so that the writer meets the closed pipe.
    append(directory, b"big", [b"%04d " % i + b"x" * 500 for i in range(2000)])
    proc = subprocess.Popen(
        [*PIPELINE, "journal", command[0], "--journal-dir", str(directory), *command[1:]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        assert json.loads(proc.stdout.readline())["offset"] == 0
        proc.stdout.close()  # as `| head -1` does
        code = proc.wait(timeout=20)
        stderr = proc.stderr.read()
    finally:
        finish(proc)
        proc.stderr.close()
    assert (code, stderr) == (1, b"")


# -- 11: replay to nothing listening gives up ------------------------------------------------


def test_replay_to_scribe_gives_up_after_max_retry_time(journal: Path) -> None:
    config = journal.parent / "pipeline.toml"
    port = free_port()  # nothing listens there
    started = time.monotonic()
    replay = ["journal", "replay", "--config", str(config), "-c", "app.x", "-p", "0"]
    to = ["--to-scribe", f"127.0.0.1:{port}", "--max-retry-time", "1"]
    result = subprocess.run(
        [*PIPELINE, *replay, *to],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert time.monotonic() - started < 30
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    retries = [line for line in lines if "forward retry" in line]
    assert retries, result.stderr
    assert "attempt=1" in retries[0] and "reason=" in retries[0] and "connect failed" in retries[0]
    last = lines[-1]
    assert last.startswith("Error: replay stopped after 0 of 2 messages: forward (app.x/0): ")
    assert "gave up after" in last and "connect failed" in last
    assert last.endswith("(--max-retry-time 1)")
    assert "Traceback" not in result.stderr


def test_replay_max_retry_time_has_a_range(journal: Path) -> None:
    config = journal.parent / "pipeline.toml"
    for bad in ("0", "-1", "1e9"):
        result = invoke(
            "journal", "replay", "--config", config, "-c", "app.x",
            "--to-scribe", "127.0.0.1:1", "--max-retry-time", bad,
        )  # fmt: skip
        assert result.exit_code == 2, (bad, result.output)
        assert "--max-retry-time" in result.stderr


# -- 12: an unknown category or group is an error naming those that exist ---------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("journal", "dump", "-c", "nosuch"), "no category 'nosuch' in {journal} (categories: "
         "app.x, other)"),
        (("journal", "verify", "-c", "nosuch"), "no category 'nosuch' in {journal} (categories: "
         "app.x, other)"),
        (("journal", "dump", "-c", "app.x", "-p", "7"), "no partition 7 in category 'app.x' "
         "(partitions: 0, 1)"),
        (("journal", "repair", "-c", "nosuch", "-p", "0", "--yes"), "no category 'nosuch' in "
         "{journal} (categories: app.x, other)"),
        (("journal", "replay", "-c", "nosuch", "--to-files", "out"), "no category 'nosuch' in "
         "{journal} (categories: app.x, other)"),
        (("offsets", "show", "-g", "nosuch"), "no consumer group 'nosuch' (consumer groups: "
         "archive)"),
        (("offsets", "reset", "-g", "nosuch", "--to", "earliest"), "no consumer group 'nosuch' "
         "(consumer groups: archive)"),
        (("offsets", "reset", "-g", "archive", "-c", "other", "--to", "earliest"),
         "no category 'other' in group 'archive' (categories: app.x)"),
        (("offsets", "delete", "-g", "nosuch", "--yes"), "no consumer group 'nosuch' "
         "(consumer groups: archive)"),
    ],
)  # fmt: skip
def test_unknown_names_are_an_error_naming_what_exists(
    journal: Path, args: tuple[str, ...], says: str
) -> None:
    where = (
        ("--journal-dir", journal)
        if args[1] in ("dump", "verify", "repair")
        else ("--config", journal.parent / "pipeline.toml")
    )
    result = invoke(*args[:2], *where, *args[2:])
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [f"Error: {says.format(journal=journal)}"]
    assert result.stdout == ""


# -- 13: times and numeric options -----------------------------------------------------------


def test_parse_time_forms() -> None:
    now = SECONDS * 1000
    assert parse_time("-10m", now) == parse_time("10m", now) == now - 600_000
    assert parse_time("-2h", now) == now - 7_200_000
    assert parse_time("30s", now) == now - 30_000
    assert parse_time("1d", now) == now - 86_400_000
    assert parse_time("now", now) == now
    assert parse_time("1795000000123", now) == 1_795_000_000_123
    assert parse_time("0", now) == 0  # small numbers stay milliseconds
    assert parse_time("2026-11-18T11:06:40Z", now) == 1_795_000_000_000
    assert parse_time("2026-11-18T11:06:40.5", now) == 1_795_000_000_500  # naive: UTC
    assert parse_time("2026-11-18T12:06:40+01:00", now) == 1_795_000_000_000
    with pytest.raises(ValueError, match="is not a time"):
        parse_time("yesterday", now)
    with pytest.raises(ValueError, match=f"looks like seconds .* use {SECONDS * 1000}$"):
        parse_time(str(SECONDS), now)


@pytest.mark.parametrize(
    "args",
    [
        ("journal", "dump", "--from-time", "{s}"),
        ("journal", "replay", "-c", "app.x", "--to-files", "out", "--from-time", "{s}"),
        ("journal", "replay", "-c", "app.x", "--to-files", "out", "--to-time", "{s}"),
        ("offsets", "reset", "-g", "archive", "--to", "time:{s}"),
        ("events", "-c", "app.x", "--since", "{s}"),
        ("events", "-c", "app.x", "--until", "{s}"),
    ],
)
def test_seconds_are_refused_with_the_milliseconds_to_use(
    journal: Path, args: tuple[str, ...]
) -> None:
    where = (
        ("--journal-dir", journal)
        if args[1] == "dump"
        else ("--config", journal.parent / "pipeline.toml")
    )
    filled = [a.format(s=SECONDS) for a in args]
    head = 1 if filled[0] == "events" else 2
    result = invoke(*filled[:head], *where, *filled[head:])
    assert result.exit_code == 2, result.output
    last = result.stderr.splitlines()[-1]
    assert f"{SECONDS} looks like seconds since the epoch (2026-11-18T11:06:40.000Z)" in last
    assert last.endswith(f"use {SECONDS * 1000}")


def test_dump_from_time_as_relative_iso_or_milliseconds(journal: Path) -> None:
    def dumped(when: str) -> list[str]:
        result = invoke("journal", "dump", "--journal-dir", journal, "-c", "app.x", "-p", "0",
                        "--from-time", when)  # fmt: skip
        assert result.exit_code == 0, result.output
        return [json.loads(line)["message"] for line in result.stdout.splitlines()]

    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    assert dumped("-10m") == dumped("2001-01-01T00:00:00Z") == dumped("0") == ["a0", "a1"]
    assert dumped(later.isoformat()) == dumped(str(int(later.timestamp() * 1000))) == []


@pytest.mark.parametrize(
    "args",
    [
        ("journal", "dump", "--limit", "-1"),
        ("journal", "dump", "--limit", "0"),
        ("journal", "dump", "-p", "-1"),
        ("journal", "dump", "--from-offset", "-5"),
        ("journal", "tail", "--count", "0"),
        ("journal", "repair", "-c", "app.x", "-p", "-1", "--yes"),
    ],
)
def test_numeric_options_refuse_values_out_of_range(journal: Path, args: tuple[str, ...]) -> None:
    result = invoke(*args[:2], "--journal-dir", journal, *args[2:])
    assert result.exit_code == 2, result.output
    assert "is not in the range" in result.stderr


def test_time_param_reads_relative_times_against_its_clock() -> None:
    param = TimeParam(clock=lambda: SECONDS)
    assert param.convert("-2h", None, None) == SECONDS * 1000 - 7_200_000
    with pytest.raises(click.BadParameter, match="looks like seconds"):
        param.convert(str(SECONDS), None, None)
