"""Helpers for tests that run ``pipeline serve`` and ``pipeline consume`` as processes."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from pipeline_cli import PIPELINE

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
