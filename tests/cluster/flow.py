"""What the cluster tests share: a paced Scribe sender that remembers what was acknowledged,
a sampler of how far the consumers got, and the daemons (`pipeline serve|consume|run`)."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio
from pipeline_cli import PIPELINE

from scribe_compat import AsyncScribeClient, ClientError, LogEntry, ResultCode


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Sender:
    """Sends ``batch`` distinct messages (``<tag>-<seq>``) of ``category`` every ``interval_s``
    until cancelled, resending a batch until it is acknowledged, as Scribe's clients do."""

    address: tuple[str, int]
    tag: str
    category: bytes = b"ev"
    batch: int = 20
    interval_s: float = 0.05
    acked: list[bytes] = field(default_factory=list)
    # (monotonic time, messages acknowledged so far) after each acknowledged call.
    progress: list[tuple[float, int]] = field(default_factory=list)
    failures: int = 0

    def message(self, seq: int) -> bytes:
        return f"{self.tag}-{seq:07d}".encode()

    async def run(self) -> None:
        client: AsyncScribeClient | None = None
        try:
            while True:
                if client is None:
                    try:
                        client = await AsyncScribeClient.connect(*self.address, 5.0)
                    except ClientError:
                        self.failures += 1
                        await trio.sleep(0.1)
                        continue
                start = len(self.acked)
                messages = [self.message(s) for s in range(start, start + self.batch)]
                try:
                    code = await client.log([LogEntry(self.category, m) for m in messages])
                except ClientError:
                    self.failures += 1
                    with trio.CancelScope(shield=True):
                        await client.aclose()
                    client = None
                    continue
                if code is ResultCode.OK:
                    self.acked.extend(messages)
                    self.progress.append((time.monotonic(), len(self.acked)))
                else:
                    self.failures += 1
                await trio.sleep(self.interval_s)
        finally:
            if client is not None:
                with trio.CancelScope(shield=True):
                    await client.aclose()

    def acked_between(self, start: float, end: float) -> int:
        counts = [n for t, n in self.progress if start <= t <= end]
        return counts[-1] - counts[0] if counts else 0


@dataclass
class Sampler:
    """Polls ``await count()`` (how far the consumers got) every ``every_s``."""

    count: Callable[[], Awaitable[int]]
    every_s: float = 0.25
    samples: list[tuple[float, int]] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            value = await self.count()
            self.samples.append((time.monotonic(), value))
            await trio.sleep(self.every_s)

    def latest(self) -> int:
        return self.samples[-1][1] if self.samples else 0

    def longest_stall(self, start: float, end: float) -> float:
        """The longest time between two increases of the count within [start, end]."""
        window = [(t, n) for t, n in self.samples if start <= t <= end]
        longest, last_change, last_value = 0.0, start, None
        for t, n in window:
            if last_value is not None and n > last_value:
                longest = max(longest, t - last_change)
                last_change = t
            last_value = n
        return max(longest, (window[-1][0] if window else start) - last_change)

    def grew_between(self, start: float, end: float) -> int:
        window = [n for t, n in self.samples if start <= t <= end]
        return window[-1] - window[0] if window else 0


async def wait_for(predicate: Callable[[], bool], limit_s: float, what: str) -> float:
    """Poll ``predicate`` in a worker thread; the seconds it took to hold."""
    began = time.monotonic()
    with trio.move_on_after(limit_s):
        while True:
            if await trio.to_thread.run_sync(predicate):
                return time.monotonic() - began
            await trio.sleep(0.2)
    raise AssertionError(f"timed out after {limit_s} s waiting for {what}")


class Daemons:
    """``pipeline`` child processes of one test, each logging to ``tmp_path/<name>.log``;
    whatever still runs at the end is terminated (then killed)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str | Path) -> subprocess.Popen[bytes]:
        log = self.tmp_path / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [*PIPELINE, *map(str, args)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text(errors="replace")

    def alive(self, name: str) -> bool:
        return self.procs[name].poll() is None

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_listening(port: int, daemons: Daemons, name: str, limit_s: float = 30.0) -> None:
    deadline = time.monotonic() + limit_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            pass
        if not daemons.alive(name):
            raise AssertionError(f"{name} exited:\n{daemons.log(name)[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} not listening on {port}:\n{daemons.log(name)[-3000:]}")
        time.sleep(0.1)
