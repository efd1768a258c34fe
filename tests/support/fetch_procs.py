"""Helpers for tests that run ``pipeline serve`` and ``pipeline consume`` as processes."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from pipeline_cli import PIPELINE

from consumers.coordination.zk_client import ZooKeeperConfig
from scribe_compat import LogEntry, ResultCode, ScribeClient, TransportError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not met in {timeout}s")


def connectable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def send(port: int, messages: list[bytes], category: bytes = b"app") -> None:
    """One Log call, resent until it is acknowledged (the server may be restarting)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with ScribeClient.connect("127.0.0.1", port, timeout=5) as client:
                entries = [LogEntry(category=category, message=m) for m in messages]
                if client.log(entries) == ResultCode.OK:
                    return
        except TransportError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)


class Proc:
    """A ``pipeline`` process with its output in ``log``."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args = args
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([*PIPELINE, *self.args], stderr=log, stdout=log)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


# -- servers registered in ZooKeeper and groups reading the registry ---------------------------


def zk_table(zk: ZooKeeperConfig) -> str:
    """ZooKeeper coordination in ``zk``'s chroot, with short rescans and settles for tests."""
    return f"""
[coordination]
kind = "zookeeper"
rescan_interval_s = 0.2
settle_s = 0.5
registry_interval_s = 0.2
[coordination.zookeeper]
hosts = "{zk.hosts}"
chroot = "{zk.chroot}"
session_timeout_s = {zk.session_timeout_s}
"""


def registered_server_config(
    path: Path, journal_dir: Path, zk: ZooKeeperConfig, port: int, fetch_port: int, partitions: int
) -> Path:
    """A ``pipeline serve`` configuration: one route of ``partitions``, a fetch port, registered
    in ZooKeeper."""
    path.write_text(
        f"""
[server]
port = {port}
[journal]
dir = "{journal_dir}"
segment_bytes = 65536
[fetch]
port = {fetch_port}
[[routing.routes]]
category = "default"
partitions = {partitions}
{zk_table(zk)}
"""
    )
    return path


def registry_member_config(
    path: Path, journal_dir: Path, files: Path, zk: ZooKeeperConfig, *, read_local: bool = True
) -> Path:
    """A ``pipeline consume -g archive`` configuration: the group reads every registered journal
    (``journals = "registry"``) of category ``app`` into its own files sink at ``files``;
    ``journal_dir`` is this member's journal.dir (a server's, or an empty one)."""
    path.write_text(
        f"""
[journal]
dir = "{journal_dir}"
{zk_table(zk)}
[[consumers]]
name = "archive"
categories = ["app"]
journals = "registry"
read_local = {"true" if read_local else "false"}
commit_interval_s = 0.1
discover_interval_s = 0.2
backoff_max_s = 0.5
sink = "files"
[consumers.files]
file_path = "{files}"
add_newlines = true
"""
    )
    return path


def file_lines(files: Path, category: str = "app") -> list[bytes]:
    """The lines a files sink wrote for ``category``, file by file."""
    out: list[bytes] = []
    for path in sorted((files / category).glob(f"{category}_[0-9]*")):
        out += path.read_bytes().splitlines()
    return out


def print_logs(directory: Path) -> None:
    """The tails of the processes' logs, for a failing test's output."""
    for log in sorted(directory.glob("*.log")):
        print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
