"""Fetch throughput: one partition read through the fetch service beside the same partition read
from its files, in the same run.

The journal is written once (``messages`` of ``message_bytes``, in batches of ``batch``), then
read whole from offset 0, ``rounds`` times each way, the two ways taking turns: by a local
reader (``journal.open_reader``, as a consumer on the server's host does) and by a remote
reader (``consumers.RemoteReader``) of a ``pipeline serve`` child process serving that
journal's fetch port on 127.0.0.1.  Both do the same work, the work the consumer runtime needs:
every batch's crc verified, its payload decoded, one ``JournalMessage`` per message, handed
out ``read_messages`` at a time; each timing starts before the reader is opened (the remote
one's connection and first fetch included) and ends with the last message.  The best round of
each way is reported (on a shared machine the best is the one least disturbed), with the ratio
remote / local that issue 10 targets (at least 70 %), and every round's rates.
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
    # Reads each way, taking turns: three make the best round a fair one on a busy machine.
    rounds: int = 3


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


def _best(rates: tuple[ReadRate, ...]) -> ReadRate:
    return min(rates, key=lambda rate: rate.seconds)


def _median(rates: tuple[ReadRate, ...]) -> ReadRate:
    return sorted(rates, key=lambda rate: rate.seconds)[len(rates) // 2]


@dataclass(frozen=True)
class FetchBenchResult:
    """Every round's rate each way; the best rounds make the headline figures."""

    local_rounds: tuple[ReadRate, ...]
    remote_rounds: tuple[ReadRate, ...]

    @property
    def local(self) -> ReadRate:
        return _best(self.local_rounds)

    @property
    def remote(self) -> ReadRate:
        return _best(self.remote_rounds)

    @property
    def ratio(self) -> float:
        return self.remote.msgs_per_s / self.local.msgs_per_s

    def as_dict(self) -> dict[str, float | int]:
        local_median = _median(self.local_rounds)
        remote_median = _median(self.remote_rounds)
        return {
            "messages": self.local.messages,
            "rounds": len(self.local_rounds),
            "local_msgs_per_s": round(self.local.msgs_per_s),
            "local_mb_per_s": round(self.local.mb_per_s, 1),
            "remote_msgs_per_s": round(self.remote.msgs_per_s),
            "remote_mb_per_s": round(self.remote.mb_per_s, 1),
            "remote_over_local": round(self.ratio, 3),
            "local_median_msgs_per_s": round(local_median.msgs_per_s),
            "remote_median_msgs_per_s": round(remote_median.msgs_per_s),
            "median_remote_over_local": round(
                remote_median.msgs_per_s / local_median.msgs_per_s, 3
            ),
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
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env["PIPELINE_FETCH__PORT"] = str(port)
    command = [sys.executable, "-c", "from pipeline.cli import main; main()", "serve"]
    command += ["--journal-dir", str(directory), "--port", "0", "--host", "127.0.0.1"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    local_rounds: list[ReadRate] = []
    remote_rounds: list[ReadRate] = []
    try:
        _wait_listening(port, proc)
        for _ in range(settings.rounds):
            local_rounds.append(_read_local(directory, settings))
            remote_rounds.append(trio.run(_read_remote, port, settings))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return FetchBenchResult(tuple(local_rounds), tuple(remote_rounds))
