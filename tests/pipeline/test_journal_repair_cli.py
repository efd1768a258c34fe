"""``pipeline journal repair`` as the operator reads it: one summary line (where it cut, the
documented gap, how many messages were salvaged and where they are now), JSON for machines,
``--no-salvage``, and one line, not a traceback, when the disk gives out half way."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner

from journal import JournalConfig, PartitionId, RepairResult, open_journal
from pipeline.cli import journal as journal_cli
from pipeline.cli.journal import journal_group

PID = PartitionId(b"dmg", 0)


def damaged_journal(directory: Path) -> None:
    async def write() -> None:
        async with open_journal(directory, JournalConfig()) as journal:
            for b in range(11):
                await journal.append(b"dmg", 0, [b"message-%03d" % (b * 10 + k) for k in range(10)])

    trio.run(write)
    segment = directory / "dmg" / "0" / f"{0:020d}.log"
    data = bytearray(segment.read_bytes())
    data[500] ^= 0xFF
    segment.write_bytes(bytes(data))


def repair(directory: Path, *extra: str) -> tuple[int, dict[str, object], str]:
    args = ["repair", "--journal-dir", str(directory), "-c", "dmg", "-p", "0", "--yes", *extra]
    result = CliRunner().invoke(journal_group, args)
    record = json.loads(result.stdout) if result.exit_code == 0 else {}
    return result.exit_code, record, result.stderr


def test_repair_says_what_it_cut_and_salvaged(tmp_path: Path) -> None:
    damaged_journal(tmp_path)
    code, record, summary = repair(tmp_path)
    assert code == 0
    assert record["gap"] == [20, 110]
    assert (record["salvaged_messages"], record["salvaged_batches"]) == (80, 8)
    assert record["next_offset"] == 190
    assert "offsets 20..109 are a documented gap" in summary
    assert "salvaged 80 messages (8 batches)" in summary and "offsets 110..189" in summary
    assert ".cut-1" in summary
    verify = CliRunner().invoke(journal_group, ["verify", "--journal-dir", str(tmp_path)])
    assert verify.exit_code == 0, verify.output

    code, record, summary = repair(tmp_path)  # nothing left to do
    assert (code, record["gap"], record["salvaged_messages"]) == (0, None, 0)
    assert "no damage found" in summary


def test_no_salvage_cuts_only(tmp_path: Path) -> None:
    damaged_journal(tmp_path)
    code, record, summary = repair(tmp_path, "--no-salvage")
    assert (code, record["gap"], record["salvaged_messages"]) == (0, [20, 110], 0)
    assert "salvaged no messages" in summary


def test_a_failure_half_way_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    damaged_journal(tmp_path)

    def full_disk(*args: object, **kwargs: object) -> RepairResult:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))

    monkeypatch.setattr(journal_cli, "repair", full_disk)
    code, _, message = repair(tmp_path)
    assert code == 1
    assert message.count("\n") == 1 and "Traceback" not in message
    assert "No space left on device" in message and "run repair again" in message
