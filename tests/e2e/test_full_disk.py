"""A restart on a full disk, then space is freed: every partition serves without another restart,
no temporary file stays, and every line about it names its file.

The real thing runs ``pipeline serve`` on a small tmpfs filled to the last byte (mounting one
needs root; without it that test is skipped).  The same story runs in-process on any machine,
with the full disk injected at the journal's ``FileIO``.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import trio

from journal import FileIO
from scribe_compat import AsyncScribeClient, FbStatus, LogEntry, ResultCode

from .conftest import (
    ServerFactory,
    journal_messages,
    make_config,
    running_daemon,
    verify_journal,
    write_config,
)

pytestmark = pytest.mark.timeout(120)

CATEGORIES = [b"alpha", b"beta", b"gamma", b"delta"]
TORN = b"gamma"  # its recovery must cut a torn tail aside: that copy needs space
MESSAGES = 20
CONFIG = """
[journal]
index_interval_bytes = 64
transient_retry_interval_s = 0.2
[admission]
min_free_disk_bytes = 0
disk_check_interval_s = 0.1
"""


def temporary_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if ".tmp-" in p.name)


def active_segment(journal_dir: Path, category: bytes) -> Path:
    return sorted((journal_dir / category.decode() / "0").glob("*.log"))[-1]


def tear(journal_dir: Path) -> Path:
    segment = active_segment(journal_dir, TORN)
    with segment.open("ab") as f:
        f.write(b"\x01half a batch" * 40)
    return segment


def fill(directory: Path) -> Path:
    """Write a file until the file system refuses one more byte."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def wait_until(predicate: Callable[[], bool], limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, so that filling it is quick."""
    mount_point = tmp_path / "small-fs"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        # Lazily: a server the test left running is killed only after this fixture ends.
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_restart_on_a_full_disk_serves_every_partition_once_space_is_freed(
    pipeline_server: ServerFactory, tmp_path: Path, small_filesystem: Path
) -> None:
    config = write_config(tmp_path / "pipeline.toml", CONFIG)
    server = pipeline_server(journal_dir=small_filesystem / "journal", config=config).start()
    with server.client() as client:
        for category in CATEGORIES:
            for i in range(MESSAGES):
                entry = LogEntry(category=category, message=b"%s-%02d" % (category, i) * 5)
                assert client.log([entry]) == ResultCode.OK
    assert server.terminate() == 0
    segment = tear(server.journal_dir)
    filler = fill(small_filesystem)

    server.start()
    started = server.new_log().decode()
    assert "Traceback" not in started
    # The index is a hint: rewriting it failed, and nothing was refused for that.
    rewrites = re.findall(r'msg="journal index not rewritten[^"]*" file=(\S+)', started)
    assert len(rewrites) == len(CATEGORIES) - 1, started
    assert "refused to open" not in started, started
    # The torn tail could not be cut aside: unavailable for now, naming the side file.
    [line] = [x for x in started.splitlines() if "unavailable for now" in x]
    assert f"file={segment}.torn-1" in line, line
    assert temporary_files(small_filesystem) == []
    assert list(segment.parent.glob("*.torn-*")) == []
    with server.client() as client:
        assert client.get_status() == FbStatus.WARNING
        assert "gamma/0" in client.get_status_details()
        assert client.log([LogEntry(category=b"alpha", message=b"full")]) == ResultCode.TRY_LATER

    filler.unlink()  # space is back; no restart

    def serving() -> bool:
        with server.client() as client:
            return bool(client.get_status() == FbStatus.ALIVE)

    wait_until(serving)
    with server.client() as client:
        for category in CATEGORIES:
            entry = LogEntry(category=category, message=b"after")
            assert client.log([entry]) == ResultCode.OK, category
    assert server.terminate() == 0
    assert temporary_files(small_filesystem) == []
    assert verify_journal(server.journal_dir) == []
    messages = journal_messages(server.journal_dir)
    for category in CATEGORIES:
        assert len(messages[category]) == MESSAGES + 1
        assert messages[category][-1] == b"after"


class FullDisk(FileIO):
    """Writes that need space fail with ENOSPC while ``full``."""

    def __init__(self) -> None:
        self.full = False

    def pwritev(self, fd: int, buffers: Sequence[bytes | memoryview], offset: int) -> int:
        if self.full:
            raise OSError(errno.ENOSPC, "injected: no space left on device")
        return super().pwritev(fd, buffers, offset)


async def test_restart_on_a_full_disk_in_process(tmp_path: Path) -> None:
    journal_dir = tmp_path / "journal"
    sections = {
        "journal": {"index_interval_bytes": 64, "transient_retry_interval_s": 0.05},
        "admission": {"min_free_disk_bytes": 0},
    }
    config = make_config(journal_dir, **sections)

    async def log(daemon: object, category: bytes, message: bytes) -> ResultCode:
        host, port = daemon.address  # type: ignore[attr-defined]
        async with await AsyncScribeClient.connect(host, port, 10.0) as client:
            result: ResultCode = await client.log([LogEntry(category=category, message=message)])
            return result

    async with running_daemon(config) as daemon:
        for category in CATEGORIES:
            for i in range(MESSAGES):
                assert await log(daemon, category, b"%s-%02d" % (category, i) * 5) == ResultCode.OK
    tear(journal_dir)
    io = FullDisk()
    io.full = True
    async with running_daemon(config, io) as daemon:
        service = daemon.service
        [failure] = service.journal.failures()
        assert failure.transient and failure.pid.category == TORN
        assert service.get_status() == FbStatus.WARNING
        assert temporary_files(journal_dir) == []
        io.full = False
        with trio.fail_after(10):
            while service.get_status() != FbStatus.ALIVE:  # noqa: ASYNC110 (retried by itself)
                await trio.sleep(0.02)
        for category in CATEGORIES:
            assert await log(daemon, category, b"after") == ResultCode.OK
    assert temporary_files(journal_dir) == []
    messages = journal_messages(journal_dir)
    assert all(len(messages[c]) == MESSAGES + 1 for c in CATEGORIES)
