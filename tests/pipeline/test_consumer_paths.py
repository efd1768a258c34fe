"""A consumer whose journal directory does not exist, or whose files sink cannot write its
``file_path``, fails at start with exit 78 and the path, as a bad configuration does: real
``pipeline consume`` and ``pipeline run`` processes."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
import trio
from pipeline_cli import PIPELINE

from consumers import FileSink, FileSinkConfig, SinkUnusable

EXIT_CONFIG = 78


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp_path: Path, journal_dir: Path, file_path: Path) -> Path:
    path = tmp_path / "pipeline.toml"
    path.write_text(
        f"""
[server]
port = {free_port()}
[journal]
dir = "{journal_dir}"
[coordination]
state_dir = "{tmp_path / "state"}"
[[consumers]]
name = "archive"
categories = ["*"]
sink = "files"
[consumers.files]
file_path = "{file_path}"
"""
    )
    return path


def pipeline(*args: str | Path) -> subprocess.CompletedProcess[str]:
    # A consumer that starts idles until signalled: the timeout is the failure.
    return subprocess.run(
        [*PIPELINE, *map(str, args)], check=False, capture_output=True, text=True, timeout=30
    )


def not_a_directory(tmp_path: Path) -> Path:
    """A file_path no one can write, even root: its parent is a regular file."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory\n")
    return blocker / "files"


def test_consume_without_a_journal_directory_exits_78_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-journal"
    config = write_config(tmp_path, missing, tmp_path / "files")
    result = pipeline("consume", "--config", config, "--group", "archive")
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "journal.dir" in result.stderr
    assert str(missing) in result.stderr
    assert "Traceback" not in result.stderr
    assert not missing.exists()  # a consumer never creates the journal


@pytest.mark.parametrize("command", ["consume", "run"])
def test_an_unwritable_file_path_exits_78_naming_it(tmp_path: Path, command: str) -> None:
    journal = tmp_path / "journal"
    journal.mkdir()
    file_path = not_a_directory(tmp_path)
    config = write_config(tmp_path, journal, file_path)
    args = ("--group", "archive") if command == "consume" else ()
    result = pipeline(command, "--config", config, *args)
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "consumers.archive.files.file_path" in result.stderr
    assert str(file_path) in result.stderr
    assert "Traceback" not in result.stderr


async def test_file_sink_check_creates_the_directory_or_says_why_not(tmp_path: Path) -> None:
    fresh = FileSink(FileSinkConfig(file_path=tmp_path / "a" / "b"))
    await trio.to_thread.run_sync(fresh.check_file_path)
    assert (tmp_path / "a" / "b").is_dir()
    assert list((tmp_path / "a" / "b").iterdir()) == []  # the probe file is gone
    blocked = FileSink(FileSinkConfig(file_path=not_a_directory(tmp_path)))
    with pytest.raises(SinkUnusable) as caught:
        blocked.check_file_path()
    assert caught.value.setting == "file_path"
    assert "not a writable directory" in caught.value.reason
