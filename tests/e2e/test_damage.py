"""A byte flipped in the middle of a segment, as an operator meets it, with real processes.

110 messages in eleven Log calls, the server stopped, byte 500 of the segment flipped (the
checkpoint is intact, so the server opens the partition as clean, by design).  Then:

1. ``pipeline run`` with an embedded files consumer delivers the messages before the damage,
   fb303 status is WARNING naming the partition, the offset, the file position and the repair
   command, ``consumer <group>:read errors`` moves, and writes go on;
2. with the server stopped, a ``pipeline consume`` member runs on, held at the damage;
   ``pipeline journal repair --yes`` salvages the intact batches, the member goes on by itself
   and delivers them (and logs the skipped range), and ``pipeline journal verify`` exits 0;
3. ``pipeline run`` again: ALIVE.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Self

import pytest

from journal.salvage import find_batches
from scribe_compat import FbStatus, LogEntry, ResultCode

from .conftest import (
    ServerFactory,
    ServerProcess,
    pipeline_command,
    run_pipeline,
    write_config,
)

GROUP = "archive"
CONFIG = """
[server]
host = "127.0.0.1"
port = 0
[journal]
dir = "{journal}"
[coordination]
state_dir = "{state}"
rescan_interval_s = 0.1
[[routing.routes]]
category = "default"
partitions = 1
[[consumers]]
name = "{group}"
categories = ["dmg"]
sink = "files"
batch_wait_s = 0.01
commit_interval_s = 0.1
discover_interval_s = 0.2
backoff_initial_s = 0.05
backoff_max_s = 0.3
[consumers.files]
file_path = "{files}"
add_newlines = true
"""


class PipelineProcess(ServerProcess):
    """``pipeline <command> --config``: ``run`` (the server and the embedded groups), or
    ``consume`` (one member and no server: started once it logs so)."""

    def __init__(self, config: Path, journal_dir: Path, log_path: Path, *command: str) -> None:
        super().__init__(journal_dir, log_path, config, ())
        self.command = list(command)

    def arguments(self) -> list[str | Path]:
        assert self.config is not None
        return [*self.command, "--config", self.config]

    def start(self, timeout: float = 20.0) -> Self:
        if self.command[0] == "run":
            return super().start(timeout)
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                pipeline_command(*self.arguments()),
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.working_directory(),
            )
        wait_until(lambda: b"consumer started" in self.new_log(), timeout, "the member")
        return self


@pytest.fixture
def processes() -> Iterator[list[ServerProcess]]:
    """Processes a test starts itself; killed at teardown whatever happened (their logs are
    printed, which pytest shows when the test failed)."""
    started: list[ServerProcess] = []
    yield started
    for process in started:
        process.kill()
        print(f"--- {process.log_path}\n{process.log()[-20_000:]}")


def wait_until(predicate: Callable[[], bool], limit_s: float, what: object) -> None:
    """Polls; ``what`` (or what it returns, when callable) says what failed to come."""
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")
        time.sleep(0.05)


def delivered(files: Path) -> list[str]:
    """The lines the files sink wrote for ``dmg``, in file order."""
    directory = files / "dmg"
    if not directory.is_dir():
        return []
    names = sorted(
        p for p in directory.iterdir() if "_current" not in p.name and not p.name.startswith(".")
    )
    return b"".join(p.read_bytes() for p in names).decode().splitlines()


def counters(server: ServerProcess) -> dict[str, int]:
    with server.client() as client:
        return dict(client.get_counters())


def test_damage_in_the_middle_is_delivered_up_to_reported_repaired_and_consumed_past(
    pipeline_server: ServerFactory, processes: list[ServerProcess], tmp_path: Path
) -> None:
    journal, files = tmp_path / "journal", tmp_path / "files"
    config = write_config(
        tmp_path / "pipeline.toml",
        CONFIG.format(journal=journal, state=tmp_path / "state", files=files, group=GROUP),
    )
    writer = pipeline_server(journal_dir=journal, config=config).start()
    with writer.client() as client:
        for b in range(11):
            entries = [
                LogEntry(category=b"dmg", message=b"m%03d" % (b * 10 + k)) for k in range(10)
            ]
            assert client.log(entries) == ResultCode.OK
    assert writer.terminate() == 0
    segment = journal / "dmg" / "0" / f"{0:020d}.log"
    batches = list(find_batches(segment, 1 << 20))
    assert [b.header.base_offset for b in batches] == list(range(0, 110, 10))
    # the first offset of the batch that holds byte 500
    damaged = max(b.header.base_offset for b in batches if b.position <= 500)
    data = bytearray(segment.read_bytes())
    data[500] ^= 0xFF
    segment.write_bytes(bytes(data))
    before = [f"m{n:03d}" for n in range(damaged)]

    # 1. run: the messages before the damage arrive; status and counters say where it is
    run = PipelineProcess(config, journal, tmp_path / "run.log", "run")
    processes.append(run)
    run.start()
    wait_until(lambda: delivered(files) == before, 20, lambda: delivered(files))
    wait_until(lambda: counters(run).get(f"consumer {GROUP}:read errors", 0) >= 2, 20, "counter")
    with run.client() as client:
        status, details = client.get_status(), client.get_status_details()
        assert client.log([LogEntry(category=b"dmg", message=b"written on")]) == ResultCode.OK
    assert status == FbStatus.WARNING
    assert f"journal partition dmg/0 damaged at offset {damaged} ({segment} byte" in details
    assert "pipeline journal repair -c dmg -p 0" in details
    ctl = run_pipeline("ctl", "status", str(run.port))
    assert ctl.returncode == 3 and ctl.stdout.startswith(b"WARNING - "), ctl
    time.sleep(0.5)
    assert delivered(files) == before  # held at the damage: nothing after it, nothing twice
    assert run.terminate() == 0
    log = run.log()
    assert "journal damage" in log and "pipeline journal repair -c dmg -p 0" in log
    # bounded: one line per retry, and retries back off (here to 0.3 s)
    assert log.count("journal damage") < 60

    # 2. a member runs on while the operator repairs; it goes on by itself
    verify = run_pipeline("journal", "verify", "--journal-dir", journal)
    assert verify.returncode == 1, verify
    consume = PipelineProcess(config, journal, tmp_path / "consume.log", "consume", "-g", GROUP)
    processes.append(consume)
    consume.start()
    wait_until(lambda: b"journal damage" in consume.new_log(), 20, "the member held at damage")
    repair = run_pipeline("journal", "repair", "--journal-dir", journal, "-c", "dmg", "-p", "0",
                          "--yes")  # fmt: skip
    assert repair.returncode == 0, repair
    salvaged = [f"m{n:03d}" for n in range(damaged + 10, 110)] + ["written on"]
    assert f"salvaged {len(salvaged)} messages" in repair.stderr.decode()
    verify = run_pipeline("journal", "verify", "--journal-dir", journal)
    assert verify.returncode == 0, verify
    wait_until(lambda: delivered(files) == before + salvaged, 20, "the salvaged messages")
    consume_log = consume.new_log().decode()
    assert "journal damage passed" in consume_log
    skipped = re.search(r"journal data gone before it was consumed.*", consume_log)
    assert skipped and f"start={damaged}" in skipped.group() and "cut by repair" in skipped.group()
    assert consume.terminate() == 0

    # 3. the server again: nothing is held, status is ALIVE, nothing is delivered twice
    run.start()
    wait_until(lambda: run_pipeline("ctl", "status", str(run.port)).returncode == 2, 20, "ALIVE")
    assert counters(run).get(f"consumer {GROUP}:read errors", 0) == 0
    assert delivered(files) == before + salvaged
    assert run.terminate() == 0
