"""Recovery: torn and garbage tails are cut and kept aside; damage before the checkpoint is
refused with its file and position; repair makes a refused partition open again."""

from __future__ import annotations

import random
import shutil
import struct
import zlib
from pathlib import Path

import pytest

from journal import (
    Durability,
    JournalConfig,
    JournalCorrupt,
    OffsetOutOfRange,
    PartitionId,
    UnsupportedFormat,
    WriterFailed,
    list_partitions,
    open_journal,
    open_reader,
    repair,
    verify,
)
from journal.format import (
    FORMAT_VERSION,
    HEADER,
    HEADER_SIZE,
    decode_hwm,
    encode_batch,
    encode_payload,
)

PID = PartitionId(b"rec", 0)
OTHER = PartitionId(b"other", 0)
TS = 1_700_000_000_000


def part(directory: Path) -> Path:
    return directory / "rec" / "0"


def active_segment(directory: Path) -> Path:
    return sorted(part(directory).glob("*.log"))[-1]


async def acked_image(tmp_path: Path, config: JournalConfig, n: int = 4) -> tuple[Path, int]:
    """A crash image (copied while open and idle) holding ``n`` acknowledged batches of two
    messages in PID and one in OTHER; returns it and PID's high-water mark."""
    live = tmp_path / "live"
    async with open_journal(live, config) as journal:
        for i in range(n):
            await journal.append(PID.category, 0, [b"acked-%d-a" % i, b"acked-%d-b" % i])
        await journal.append(OTHER.category, 0, [b"other"])
        image = tmp_path / "image"
        shutil.copytree(live, image)
        return image, journal.high_water_mark(PID)


def expected(n: int = 4) -> list[bytes]:
    return [m for i in range(n) for m in (b"acked-%d-a" % i, b"acked-%d-b" % i)]


def read_all(directory: Path, pid: PartitionId = PID) -> list[bytes]:
    with open_reader(directory, pid, 0) as reader:
        out = []
        while chunk := reader.read():
            out += [m.message for m in chunk]
        return out


def append_bytes(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def batch_with_version(version: int, base: int) -> bytes:
    payload, _ = encode_payload([b"from the future"], None)
    rest = HEADER.pack(0, 0, version, 0, 0, base, 1, TS, TS)[8:]
    crc = zlib.crc32(payload, zlib.crc32(rest))
    return struct.pack("<II", len(rest) + 4 + len(payload), crc) + rest + payload


@pytest.fixture
def config() -> JournalConfig:
    return JournalConfig(segment_bytes=1 << 20)


async def test_torn_tail_of_every_length_is_cut_and_kept(
    tmp_path: Path, config: JournalConfig
) -> None:
    image, hwm = await acked_image(tmp_path, config)
    torn = encode_batch([b"never-acknowledged"], None, hwm, TS)
    for cut in range(1, len(torn) + 1):
        trial = tmp_path / f"trial-{cut}"
        shutil.copytree(image, trial)
        segment = active_segment(trial)
        append_bytes(segment, torn[:cut])
        async with open_journal(trial, config) as journal:
            assert journal.failures() == []
            if cut == len(torn):  # a whole valid batch is not torn: it stays
                assert journal.high_water_mark(PID) == hwm + 1
                assert list(part(trial).glob("*.torn-*")) == []
                continue
            assert journal.high_water_mark(PID) == hwm
            side = segment.with_name(segment.name + ".torn-1")
            assert side.read_bytes() == torn[:cut]
            assert (await journal.append(PID.category, 0, [b"next"])).base_offset == hwm
        assert read_all(trial) == [*expected(), b"next"]
        assert verify(trial) == []
        shutil.rmtree(trial)


GARBAGE = {
    "one-zero": b"\0",
    "zeros": b"\0" * 300,
    "ones": b"\xff" * 64,
    "random": random.Random(7).randbytes(5000),
    "huge-length": struct.pack("<I", 0xFFFFFFF0) + b"x" * 60,
    "wrong-offset": encode_batch([b"misplaced"], None, 10_000, TS),
}


@pytest.mark.parametrize("kind", sorted(GARBAGE))
async def test_garbage_tail_is_cut_and_kept(
    tmp_path: Path, config: JournalConfig, kind: str
) -> None:
    image, hwm = await acked_image(tmp_path, config)
    segment = active_segment(image)
    append_bytes(segment, GARBAGE[kind])
    async with open_journal(image, config) as journal:
        assert journal.failures() == []
        assert journal.high_water_mark(PID) == hwm
        assert (await journal.append(PID.category, 0, [b"next"])).base_offset == hwm
    assert segment.with_name(segment.name + ".torn-1").read_bytes() == GARBAGE[kind]
    assert read_all(image) == [*expected(), b"next"]


async def test_valid_batch_then_garbage_keeps_the_batch(
    tmp_path: Path, config: JournalConfig
) -> None:
    image, hwm = await acked_image(tmp_path, config)
    segment = active_segment(image)
    whole = encode_batch([b"written, not acked"], None, hwm, TS)
    flipped = bytearray(encode_batch([b"flipped"], None, hwm + 1, TS))
    flipped[-3] ^= 0x01
    append_bytes(segment, whole + bytes(flipped))
    async with open_journal(image, config) as journal:
        assert journal.high_water_mark(PID) == hwm + 1
    assert segment.with_name(segment.name + ".torn-1").read_bytes() == bytes(flipped)
    assert read_all(image)[-1] == b"written, not acked"


async def test_stale_checkpoint_scans_the_longer_tail(
    tmp_path: Path, config: JournalConfig
) -> None:
    """After a power loss the ``hwm`` file may be older than the log: recovery scans more."""
    live = tmp_path / "live"
    async with open_journal(live, config) as journal:
        await journal.append(PID.category, 0, [b"a"])
        old_hwm = (part(live) / "hwm").read_bytes()
        for i in range(5):
            await journal.append(PID.category, 0, [b"b%d" % i])
        shutil.copytree(live, tmp_path / "image")
    image = tmp_path / "image"
    (part(image) / "hwm").write_bytes(old_hwm)
    append_bytes(active_segment(image), b"\x07" * 33)
    async with open_journal(image, config) as journal:
        assert journal.high_water_mark(PID) == 6
    assert read_all(image) == [b"a", *(b"b%d" % i for i in range(5))]


@pytest.mark.parametrize("damage", ["flip-last-batch", "truncate-before-checkpoint", "hwm-file"])
async def test_damage_before_the_checkpoint_is_refused_then_repaired(
    tmp_path: Path, config: JournalConfig, damage: str
) -> None:
    image, hwm = await acked_image(tmp_path, config)
    segment = active_segment(image)
    data = bytearray(segment.read_bytes())
    last_batch = len(data) - (
        HEADER_SIZE + len(encode_payload([b"acked-3-a", b"acked-3-b"], None)[0])
    )
    if damage == "flip-last-batch":
        data[last_batch + HEADER_SIZE + 2] ^= 0x40
        segment.write_bytes(bytes(data))
        where = (segment, last_batch)
    elif damage == "truncate-before-checkpoint":
        segment.write_bytes(bytes(data[:-5]))
        where = (segment, len(data) - 5)
    else:
        hwm_path = part(image) / "hwm"
        hwm_path.write_bytes(b"\0" * 68)
        where = (hwm_path, 0)
    async with open_journal(image, config) as journal:
        [failure] = journal.failures()
        assert failure.pid == PID
        assert isinstance(failure.error, JournalCorrupt)
        assert (failure.error.file, failure.error.position) == where
        assert str(where[0]) in str(failure.error)
        assert PID in journal.partitions()
        with pytest.raises(WriterFailed):
            await journal.append(PID.category, 0, [b"refused"])
        with pytest.raises(WriterFailed):
            journal.open_reader(PID, 0)
        # the other partition works
        assert (await journal.append(OTHER.category, 0, [b"fine"])).base_offset == 1
    assert any(p.fatal for p in verify(image, PID))
    result = repair(image, PID)
    assert result.next_offset >= hwm  # no offset a reader may have seen is reused
    async with open_journal(image, config) as journal:
        assert journal.failures() == []
        base = (await journal.append(PID.category, 0, [b"after repair"])).base_offset
        assert base == result.next_offset
    messages = open_reader(image, PID, 0, skip_gaps=True)
    got = []
    while chunk := messages.read():
        got += [m.message for m in chunk]
    messages.close()
    kept = expected()[:6] if damage != "hwm-file" else expected()
    assert got == [*kept, b"after repair"]
    if damage != "hwm-file":
        assert result.cut_file == segment
        assert result.side_files and result.side_files[0].name.startswith(segment.name + ".cut-")
    assert [p for p in verify(image, PID) if p.fatal] == []


async def test_damage_in_the_middle_is_found_by_readers_verify_and_repair(
    tmp_path: Path, config: JournalConfig
) -> None:
    image, hwm = await acked_image(tmp_path, config, n=6)
    segment = active_segment(image)
    data = bytearray(segment.read_bytes())
    record = len(data) // 6
    data[2 * record + HEADER_SIZE + 1] ^= 0x01  # the third batch
    segment.write_bytes(bytes(data))
    async with open_journal(image, config) as journal:
        # recovery reads only the tail: the partition opens
        assert journal.failures() == []
        with journal.open_reader(PID, 0) as reader:
            assert len(reader.read()) == 4  # the good batches before the damage
            with pytest.raises(JournalCorrupt) as info:
                reader.read()
        assert (info.value.file, info.value.position) == (segment, 2 * record)
    problems = verify(image, PID)
    assert [(p.file, p.position, p.fatal) for p in problems] == [(segment, 2 * record, True)]
    result = repair(image, PID, salvage=False)  # salvage: tests/journal/test_repair.py
    assert (result.cut_file, result.cut_position) == (segment, 2 * record)
    assert result.next_offset == hwm  # continues after a gap: offsets 4..11 are not reused
    assert result.side_files[0].read_bytes() == bytes(data[2 * record :])
    with open_reader(image, PID, 0, skip_gaps=True) as reader:
        got = []
        while chunk := reader.read():
            got += chunk
        assert [m.offset for m in got] == [0, 1, 2, 3]
    async with open_journal(image, config) as journal:
        assert (await journal.append(PID.category, 0, [b"x"])).base_offset == hwm
        with journal.open_reader(PID, 0, skip_gaps=True) as reader:
            offsets = [m.offset for m in reader.read()] + [m.offset for m in reader.read()]
            assert offsets == [0, 1, 2, 3, hwm]
            assert reader.skipped == [(4, hwm)]


async def test_unknown_version_is_refused_not_cut(tmp_path: Path, config: JournalConfig) -> None:
    image, hwm = await acked_image(tmp_path, config)
    segment = active_segment(image)
    append_bytes(segment, batch_with_version(FORMAT_VERSION + 1, hwm))
    size = segment.stat().st_size
    async with open_journal(image, config) as journal:
        [failure] = journal.failures()
        assert isinstance(failure.error, UnsupportedFormat)
        assert failure.error.version == FORMAT_VERSION + 1
    assert segment.stat().st_size == size  # nothing was cut
    assert list(part(image).glob("*.torn-*")) == []


async def test_segments_after_a_cut_are_moved_aside(tmp_path: Path, kit) -> None:
    record = kit.record_size([b"acked-0-a", b"acked-0-b"])
    config = JournalConfig(segment_bytes=record)
    image, hwm = await acked_image(tmp_path, config)
    # a stray segment that does not continue the log (as if left from a crash mid-roll)
    stray = part(image) / f"{hwm + 7:020d}.log"
    stray.write_bytes(encode_batch([b"stray"], None, hwm + 7, TS))
    async with open_journal(image, config) as journal:
        assert journal.failures() == []
        assert journal.high_water_mark(PID) == hwm
        assert (await journal.append(PID.category, 0, [b"n"])).base_offset == hwm
    assert not stray.exists()
    assert stray.with_name(stray.name + ".torn-1").exists()
    assert read_all(image) == [*expected(), b"n"]


async def test_list_partitions(tmp_path: Path, config: JournalConfig) -> None:
    image, hwm = await acked_image(tmp_path, config)
    async with open_journal(image, config):
        pass
    infos = {info.pid: info for info in list_partitions(image)}
    assert set(infos) == {PID, OTHER}
    info = infos[PID]
    assert (info.segments, info.earliest_offset, info.high_water_mark) == (1, 0, hwm)
    assert info.size_bytes == active_segment(image).stat().st_size == info.bytes
    assert info.clean_shutdown and info.last_timestamp_ms is not None


async def test_lost_unsynced_data_never_gives_its_offsets_again(tmp_path: Path) -> None:
    """NONE/INTERVAL acknowledge before fdatasync; if a power loss then takes that data, the
    offsets readers may have seen are skipped (a gap), never handed out again."""
    config = JournalConfig(durability=Durability.NONE)
    live = tmp_path / "live"
    async with open_journal(live, config) as journal:
        await journal.append(PID.category, 0, [b"synced"])
    async with open_journal(live, config) as journal:  # the close synced "synced"
        for i in range(4):
            await journal.append(PID.category, 0, [b"unsynced-%d" % i])
        shutil.copytree(live, tmp_path / "image")
    image = tmp_path / "image"
    cp = decode_hwm((part(image) / "hwm").read_bytes())
    assert (cp.hwm, cp.cp_offset) == (5, 1)
    segment = active_segment(image)
    with segment.open("r+b") as f:  # the power loss: only synced data is left
        f.truncate(cp.cp_position)
    async with open_journal(image, config) as journal:
        assert journal.high_water_mark(PID) == 5
        assert (await journal.append(PID.category, 0, [b"after"])).base_offset == 5
        with journal.open_reader(PID, 0) as reader:
            assert [m.message for m in reader.read()] == [b"synced"]
            with pytest.raises(OffsetOutOfRange) as info:
                reader.read()
            assert (info.value.offset, info.value.earliest) == (1, 5)
            reader.seek(info.value.earliest)
            assert [m.message for m in reader.read()] == [b"after"]
    problems = verify(image, PID)
    assert [(p.reason.endswith("(gap)"), p.fatal) for p in problems] == [(True, False)]
