"""Fetch throughput: one partition read through the fetch service beside the same partition read
from its files, in the same run.

The journal is written once (``messages`` of ``message_bytes``, in batches of ``batch``), then
read twice, each time whole, from offset 0: by a local reader (``journal.open_reader``, as a
consumer on the server's host does) and by a remote reader (``consumers.RemoteReader``) of a
``pipeline serve`` child process serving that journal's fetch port on 127.0.0.1.  Each read
hands out batches of ``read_messages`` as the consumer runtime asks for them.  The ratio
remote / local is what issue 10 targets (at least 70 %).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import trio

from consumers import RemoteReadConfig, open_remote_source
from journal import Durability, JournalConfig, PartitionId, open_journal, open_reader

PID = PartitionId(b"bench-fetch", 0)


@dataclass(frozen=True)
class FetchBenchSettings:
    messages: int = 200_000
    message_bytes: int = 200
    batch: int = 1000
    read_messages: int = 1000


@dataclass(frozen=True)
class ReadRate:
    messages: int
    seconds: float
    nbytes: int

    @property
    def msgs_per_s(self) -> float:
        return self.messages / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.nbytes / self.seconds / 1e6


@dataclass(frozen=True)
class FetchBenchResult:
    local: ReadRate
    remote: ReadRate

    @property
    def ratio(self) -> float:
        return self.remote.msgs_per_s / self.local.msgs_per_s

    def as_dict(self) -> dict[str, float | int]:
        return {
            "messages": self.local.messages,
            "local_msgs_per_s": round(self.local.msgs_per_s),
            "local_mb_per_s": round(self.local.mb_per_s, 1),
            "remote_msgs_per_s": round(self.remote.msgs_per_s),
            "remote_mb_per_s": round(self.remote.mb_per_s, 1),
            "remote_over_local": round(self.ratio, 3),
        }


async def _write(directory: Path, settings: FetchBenchSettings) -> None:
    config = JournalConfig(durability=Durability.NONE)
    body = b"x" * settings.message_bytes
    async with open_journal(directory, config) as journal:
        for start in range(0, settings.messages, settings.batch):
            count = min(settings.batch, settings.messages - start)
            await journal.append(PID.category, PID.partition, [body] * count)


def _read_local(directory: Path, settings: FetchBenchSettings) -> ReadRate:
    started = time.perf_counter()
    reader = open_reader(directory, PID, 0)
    got = nbytes = 0
    try:
        while got < settings.messages:
            batch = reader.read(settings.read_messages, 1 << 30)
            got += len(batch)
            nbytes += sum(len(m.message) for m in batch)
    finally:
        reader.close()
    return ReadRate(got, time.perf_counter() - started, nbytes)


async def _read_remote(port: int, settings: FetchBenchSettings) -> ReadRate:
    async with open_remote_source("127.0.0.1", port, RemoteReadConfig()) as source:
        started = time.perf_counter()
        reader = await source.open_reader(PID, 0)
        got = nbytes = 0
        while got < settings.messages:
            batch = await reader.read_wait(settings.read_messages, 1 << 30)
            got += len(batch)
            nbytes += sum(len(m.message) for m in batch)
        seconds = time.perf_counter() - started
        reader.close()
    return ReadRate(got, seconds, nbytes)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the fetch server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the fetch server did not listen on port {port} in {timeout_s}s")


def run_fetch_bench(directory: Path, settings: FetchBenchSettings) -> FetchBenchResult:
    """Write the journal in ``directory`` (which must be empty or new), read it both ways."""
    trio.run(_write, directory, settings)
    local = _read_local(directory, settings)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env["PIPELINE_FETCH__PORT"] = str(port)
    command = [sys.executable, "-c", "from pipeline.cli import main; main()", "serve"]
    command += ["--journal-dir", str(directory), "--port", "0", "--host", "127.0.0.1"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(port, proc)
        remote = trio.run(_read_remote, port, settings)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return FetchBenchResult(local, remote)
