"""A reader in another process never sees past the durable high-water mark, and follows it."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import trio

import journal
from journal import JournalConfig, PartitionId, open_journal

PID = PartitionId(b"xproc", 0)
ROOT = Path(journal.__file__).resolve().parent.parent

CHILD = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[1])
    import trio
    from pathlib import Path
    from journal import JournalConfig, PartitionId, open_reader

    directory, mode, want = Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    config = JournalConfig(tail_poll_interval_s=0.005)
    reader = open_reader(directory, PartitionId(b"xproc", 0), 0, config)
    seen, violations = [], []

    def check(batch):
        hwm_after = reader.high_water_mark()  # the mark only grows: data seen is below it
        violations.extend(m.offset for m in batch if m.offset >= hwm_after)
        seen.extend(m.offset for m in batch)

    if mode == "snapshot":
        while batch := reader.read(max_messages=5):
            check(batch)
    else:
        async def follow():
            with trio.fail_after(30):
                while len(seen) < want:
                    check(await reader.read_wait(max_messages=50))
        trio.run(follow)
    print(json.dumps({"seen": seen, "violations": violations, "hwm": reader.high_water_mark()}))
    """
)


async def run_child(directory: Path, mode: str, want: int = 0) -> dict[str, list[int]]:
    result = await trio.run_process(
        [sys.executable, "-c", CHILD, str(ROOT), str(directory), mode, str(want)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    out: dict[str, list[int]] = json.loads(result.stdout)
    return out


async def test_other_process_never_sees_unsynced_data(tmp_path: Path, kit) -> None:
    io = kit.BlockingFsyncIO()
    async with open_journal(tmp_path, JournalConfig(), file_io=io) as journal:
        await journal.append(b"xproc", 0, [b"a0", b"a1", b"a2"])
        segment = next((tmp_path / "xproc" / "0").glob("*.log"))
        size = segment.stat().st_size
        io.block = True
        async with trio.open_nursery() as nursery:
            nursery.start_soon(journal.append, b"xproc", 0, [b"b0", b"b1"])
            await trio.to_thread.run_sync(io.entered.wait)
            assert segment.stat().st_size > size  # written, waiting in fdatasync
            child = await run_child(tmp_path, "snapshot")
            assert child == {"seen": [0, 1, 2], "violations": [], "hwm": 3}
            with journal.open_reader(PID, 0) as reader:  # the same holds in this process
                assert [m.offset for m in reader.read()] == [0, 1, 2]
                assert reader.read() == []
            io.block = False
            io.release.set()
        child = await run_child(tmp_path, "snapshot")
        assert child == {"seen": [0, 1, 2, 3, 4], "violations": [], "hwm": 5}


async def test_other_process_follows_a_busy_writer(tmp_path: Path) -> None:
    batches, per_batch = 60, 10
    total = batches * per_batch
    async with open_journal(tmp_path, JournalConfig(segment_bytes=2000)) as journal:
        await journal.append(b"xproc", 0, [b"first"] * per_batch)
        outcome: dict[str, dict[str, list[int]]] = {}

        async def child() -> None:
            outcome["child"] = await run_child(tmp_path, "follow", total)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(child)
            for i in range(1, batches):
                await journal.append(b"xproc", 0, [b"m%04d-%d" % (i, k) for k in range(per_batch)])
                await trio.sleep(0.002)
    assert outcome["child"]["violations"] == []
    assert outcome["child"]["seen"] == list(range(total))
    assert len(list((tmp_path / "xproc" / "0").glob("*.log"))) > 3  # it crossed segments
