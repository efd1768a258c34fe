"""Category directory names: injective, filesystem-safe, bounded; nothing escapes the journal."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from journal import (
    JournalConfig,
    PartitionId,
    category_dir_name,
    category_from_dir_name,
    list_partitions,
    open_journal,
    read_category,
)
from journal.format import JOURNAL_ID_FILE, LOCK_FILE
from journal.layout import MAX_NAME

NASTY = [
    b"",
    b".",
    b"..",
    b"../x",
    b"../../etc/passwd",
    b"/abs",
    b"/",
    b"a/b",
    b"\0",
    b"nul\0inside",
    b".hidden",
    b".lock",
    b".journal-id",
    b"journal-id",
    b"~",
    b"%",
    b"%41",
    b"A",
    b"a",
    b"\xff\xfe not utf-8",
    "caf\u00e9".encode(),
    b"x" * 10_000,
    b"y" * 199,
    b"y" * 200,
    b"y" * 201,
    b"\x01" * 10_000,
]


def assert_safe(name: str) -> None:
    assert name not in ("", ".", "..")
    assert "/" not in name and "\0" not in name and not name.startswith(".")
    assert len(name) <= MAX_NAME + 70
    assert len(name.encode()) <= 255
    assert name.isascii() and name.isprintable()


@given(st.binary(max_size=400))
def test_names_are_safe_and_decode_back(category: bytes) -> None:
    name = category_dir_name(category)
    assert_safe(name)
    if "~" in name:
        with pytest.raises(ValueError):
            category_from_dir_name(name)
    else:
        assert category_from_dir_name(name) == category


@given(st.binary(max_size=300), st.binary(max_size=300))
def test_names_are_injective(a: bytes, b: bytes) -> None:
    if a != b:
        assert category_dir_name(a) != category_dir_name(b)


@given(st.binary(min_size=150, max_size=600), st.binary(min_size=1, max_size=4))
def test_long_names_with_a_common_prefix_differ(prefix: bytes, tail: bytes) -> None:
    assert category_dir_name(prefix) != category_dir_name(prefix + tail)


@pytest.mark.parametrize("name", ["", ".", "..", "%4", "%zz", "%61", "a/b", "%2e", "é", "a~b"])
def test_names_no_category_encodes_to_are_rejected(name: str) -> None:
    with pytest.raises(ValueError):
        category_from_dir_name(name)


def test_nasty_names_are_distinct_and_safe() -> None:
    names = [category_dir_name(c) for c in NASTY]
    assert len(set(names)) == len(NASTY)
    for name in names:
        assert_safe(name)


async def test_no_category_writes_outside_the_journal(tmp_path: Path) -> None:
    journal_dir = tmp_path / "a" / "journal"
    async with open_journal(journal_dir, JournalConfig()) as journal:
        for i, category in enumerate(NASTY):
            assert (await journal.append(category, i % 3, [category[:50]])).base_offset == 0
    # nothing but the journal directory appeared under tmp_path
    outside = [
        p
        for p in await trio.to_thread.run_sync(lambda: list(tmp_path.rglob("*")))
        if journal_dir not in (p, *p.parents) and p != journal_dir.parent
    ]
    assert outside == []
    for entry in os.scandir(journal_dir):
        assert entry.is_dir() or entry.name in (LOCK_FILE, JOURNAL_ID_FILE)
    infos = list_partitions(journal_dir)
    assert sorted((i.category, i.partition) for i in infos) == sorted(
        (c, i % 3) for i, c in enumerate(NASTY)
    )
    for category in NASTY:
        assert read_category(journal_dir / category_dir_name(category)) == category
    # and they read back after recovery
    async with open_journal(journal_dir, JournalConfig()) as journal:
        assert len(journal.partitions()) == len(NASTY)
        with journal.open_reader(PartitionId(NASTY[-1], (len(NASTY) - 1) % 3), 0) as reader:
            assert reader.read()[0].message == NASTY[-1][:50]


def test_partition_ids_are_validated() -> None:
    for bad in (-1, 1 << 31, True, 1.0):
        with pytest.raises(ValueError):
            PartitionId(b"c", bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        PartitionId("text", 0)  # type: ignore[arg-type]
