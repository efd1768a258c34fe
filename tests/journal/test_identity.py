"""The journal's identity: created once by the first writer, stable, readable from any process,
never replaced when damaged."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner

from journal import (
    FileIO,
    JournalConfig,
    JournalCorrupt,
    JournalError,
    UnknownJournal,
    open_journal,
    read_journal_id,
)
from journal.format import JOURNAL_ID_FILE
from pipeline.cli.journal import journal_group


class RecordingIO(FileIO):
    """Records the directories fsynced and how many fdatasyncs ran."""

    def __init__(self) -> None:
        self.dirs: list[Path] = []
        self.fdatasyncs = 0

    def fdatasync(self, fd: int) -> None:
        self.fdatasyncs += 1
        super().fdatasync(fd)

    def fsync_dir(self, path: Path) -> None:
        self.dirs.append(Path(path))
        super().fsync_dir(path)


async def test_created_once_and_stable_across_reopen(tmp_path: Path) -> None:
    io = RecordingIO()
    async with open_journal(tmp_path, JournalConfig(), file_io=io) as journal:
        first = journal.journal_id
        assert isinstance(first, uuid.UUID) and first.version == 4
        assert read_journal_id(tmp_path) == first  # beside the writer, as another process would
        await journal.append(b"c", 0, [b"x"])
    path = tmp_path / JOURNAL_ID_FILE
    assert path.read_bytes() == f"{first}\n".encode()
    # written atomically: synced, renamed into place, the directory synced; no temporary left
    assert io.fdatasyncs >= 1 and tmp_path in io.dirs
    files = [e.name for e in await trio.to_thread.run_sync(os.scandir, tmp_path) if e.is_file()]
    assert sorted(files) == [".journal-id", ".lock"]
    before = os.stat(path)
    for _ in range(2):
        async with open_journal(tmp_path, JournalConfig()) as journal:
            assert journal.journal_id == first
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # untouched
    assert read_journal_id(tmp_path) == first


async def test_two_journals_get_different_ids(tmp_path: Path) -> None:
    ids = set()
    for name in ("a", "b", "c"):
        async with open_journal(tmp_path / name, JournalConfig()) as journal:
            ids.add(journal.journal_id)
    assert len(ids) == 3
    assert {read_journal_id(tmp_path / name) for name in ("a", "b", "c")} == ids


async def test_missing_before_a_writer_opened_the_journal(tmp_path: Path) -> None:
    for directory in (tmp_path / "never-created", tmp_path):
        with pytest.raises(UnknownJournal) as info:
            read_journal_id(directory)
        assert isinstance(info.value, JournalError) and isinstance(info.value, LookupError)
        assert info.value.path == directory / JOURNAL_ID_FILE
        assert str(directory / JOURNAL_ID_FILE) in str(info.value)


async def test_a_journal_of_older_code_gets_an_identity_and_keeps_its_data(
    tmp_path: Path,
) -> None:
    async with open_journal(tmp_path, JournalConfig()) as journal:
        await journal.append(b"c", 0, [b"kept"])
        old = journal.journal_id
    (tmp_path / JOURNAL_ID_FILE).unlink()  # as a journal written before identities existed
    # and a crash once left a temporary file while creating one
    (tmp_path / f"{JOURNAL_ID_FILE}.tmp-1").write_bytes(b"half")
    async with open_journal(tmp_path, JournalConfig()) as journal:
        assert journal.failures() == []
        assert journal.journal_id != old
        assert read_journal_id(tmp_path) == journal.journal_id
        with journal.open_reader(journal.partitions()[0], 0) as reader:
            assert [m.message for m in reader.read()] == [b"kept"]


DAMAGED = {
    "empty": b"",
    "truncated": str(uuid.uuid4()).encode()[:20],
    "no-newline": str(uuid.uuid4()).encode(),
    "two-newlines": str(uuid.uuid4()).encode() + b"\n\n",
    "garbage": b"\xff" * 37,
    "not-a-uuid": b"x" * 36 + b"\n",
    "upper-case": str(uuid.uuid4()).upper().encode() + b"\n",
    "no-hyphens": uuid.uuid4().hex.encode() + b"\n\n\n\n\n",
    "braces": b"{" + str(uuid.uuid4()).encode()[:34] + b"}\n",
    "long": str(uuid.uuid4()).encode() + b"\n" + b"x" * 10_000,
}


@pytest.mark.parametrize("content", DAMAGED.values(), ids=DAMAGED.keys())
async def test_a_damaged_identity_is_refused_not_replaced(tmp_path: Path, content: bytes) -> None:
    async with open_journal(tmp_path, JournalConfig()) as journal:
        await journal.append(b"c", 0, [b"x"])
    path = tmp_path / JOURNAL_ID_FILE
    path.write_bytes(content)
    with pytest.raises(JournalCorrupt) as info:
        read_journal_id(tmp_path)
    assert info.value.file == path and str(path) in str(info.value)
    with pytest.raises(JournalCorrupt) as info:
        async with open_journal(tmp_path, JournalConfig()):
            pytest.fail("a journal with a damaged identity opened")
    assert info.value.file == path and str(path) in str(info.value)
    assert path.read_bytes() == content
    # and the lock was released: a repaired file opens
    fixed = uuid.uuid4()
    path.write_bytes(f"{fixed}\n".encode())
    async with open_journal(tmp_path, JournalConfig()) as journal:
        assert journal.journal_id == fixed


async def test_ls_shows_the_identity(tmp_path: Path) -> None:
    async with open_journal(tmp_path, JournalConfig()) as journal:
        await journal.append(b"one", 0, [b"x"])
        await journal.append(b"two", 1, [b"y", b"z"])
        journal_id = journal.journal_id
    runner = CliRunner()
    text = runner.invoke(journal_group, ["ls", "--journal-dir", str(tmp_path)])
    assert text.exit_code == 0, text.output
    lines = text.output.splitlines()
    assert lines[0] == f"journal {journal_id}"
    assert lines[1].split()[:2] == ["CATEGORY", "PART"]
    assert [line.split()[:2] for line in lines[2:]] == [["one", "0"], ["two", "1"]]
    as_json = runner.invoke(journal_group, ["ls", "--journal-dir", str(tmp_path), "--json"])
    assert as_json.exit_code == 0, as_json.output
    records = [json.loads(line) for line in as_json.output.splitlines()]
    assert [(r["category"], r["high_water_mark"]) for r in records] == [("one", 1), ("two", 2)]
    assert {r["journal_id"] for r in records} == {str(journal_id)}

    (tmp_path / JOURNAL_ID_FILE).unlink()  # no identity yet: no line, no field
    text = runner.invoke(journal_group, ["ls", "--journal-dir", str(tmp_path)])
    assert text.exit_code == 0 and text.output.startswith("CATEGORY")
    as_json = runner.invoke(journal_group, ["ls", "--journal-dir", str(tmp_path), "--json"])
    assert all("journal_id" not in json.loads(line) for line in as_json.output.splitlines())

    (tmp_path / JOURNAL_ID_FILE).write_bytes(b"damaged\n")
    text = runner.invoke(journal_group, ["ls", "--journal-dir", str(tmp_path)])
    assert text.exit_code == 1 and str(tmp_path / JOURNAL_ID_FILE) in text.output
