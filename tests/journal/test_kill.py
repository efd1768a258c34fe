"""``kill -9`` of a process appending under FSYNC: no acknowledged message is lost or moved."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import trio

import journal
from journal import JournalConfig, PartitionId, open_journal, verify

ROOT = Path(journal.__file__).resolve().parent.parent
PID = PartitionId(b"kill", 0)

WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    import trio
    from pathlib import Path
    from journal import JournalConfig, open_journal

    async def main():
        config = JournalConfig(segment_bytes=20_000)
        async with open_journal(Path(sys.argv[2]), config) as journal:
            async def task(t):
                for seq in range(10**9):
                    batch = [b"t%d-s%d-m%d" % (t, seq, k) for k in range(1 + seq % 7)]
                    result = await journal.append(b"kill", 0, batch)
                    # acknowledged: report it (a line is one write, so it is whole or absent)
                    sys.stdout.write(f"{result.base_offset} {t} {seq} {result.count}\\n")
                    sys.stdout.flush()
            async with trio.open_nursery() as nursery:
                for t in range(4):
                    nursery.start_soon(task, t)

    trio.run(main)
    """
)


def run_and_kill(directory: Path, acks: int) -> list[tuple[int, int, int, int]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(ROOT), str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 30
    while len(lines) < acks and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
    os.kill(proc.pid, signal.SIGKILL)
    rest, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()
    lines += rest.splitlines(keepends=True)
    return [tuple(map(int, line.split())) for line in lines if line.endswith(b"\n")]  # type: ignore[misc]


@pytest.mark.crash
def test_kill_9_loses_no_acknowledged_message(tmp_path: Path) -> None:
    rounds = int(os.environ.get("CRASH_ROUNDS", "3"))
    acked: dict[int, bytes] = {}
    for round_ in range(rounds):
        for base, t, seq, count in run_and_kill(tmp_path, acks=200 + 50 * round_):
            for k in range(count):
                assert base + k not in acked, f"offset {base + k} reused"
                acked[base + k] = b"t%d-s%d-m%d" % (t, seq, k)

        async def check(round_: int) -> None:
            async with open_journal(tmp_path, JournalConfig(segment_bytes=20_000)) as j:
                assert j.failures() == []
                with j.open_reader(PID, 0) as reader:
                    got = {}
                    while chunk := reader.read():
                        got.update((m.offset, m.message) for m in chunk)
                assert sorted(got) == list(range(len(got)))
                for offset, message in acked.items():
                    assert got.get(offset) == message, f"round {round_}: offset {offset}"
                acked.update(got)  # seen by a reader: must survive later rounds too

        trio.run(check, round_)
    assert [p for p in verify(tmp_path) if p.fatal] == []
