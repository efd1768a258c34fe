"""The file sink: Scribe's file store layout, rotation, the _current symlink, durability."""

from __future__ import annotations

import calendar
import os
from pathlib import Path

import pytest
import trio

from consumers import FileSink, FileSinkConfig, SinkError
from journal import JournalMessage, PartitionId

WEB = PartitionId(b"web", 0)


class Clock:
    def __init__(self, text: str) -> None:
        self.now = 0.0
        self.set(text)

    def set(self, text: str) -> None:
        self.now = float(calendar.timegm((*(int(x) for x in text.split()), 0, 0, 0)))

    def __call__(self) -> float:
        return self.now


def msgs(*payloads: bytes, start: int = 0) -> list[JournalMessage]:
    return [JournalMessage(start + i, 0, p, None) for i, p in enumerate(payloads)]


def listing(directory: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes()
        for p in sorted(directory.iterdir())
        if not p.name.startswith(".") and not p.is_symlink()
    }


def current(directory: Path, name: str = "web") -> str:
    return os.readlink(directory / f"{name}_current")


async def test_layout_without_rotation(tmp_path: Path) -> None:
    sink = FileSink(FileSinkConfig(file_path=tmp_path, add_newlines=True))
    await sink.write(WEB, msgs(b"a", b"b"))
    await sink.write(PartitionId(b"web", 1), msgs(b"c"))
    await sink.aclose()
    directory = tmp_path / "web"
    assert listing(directory) == {"web_00000": b"a\nb\nc\n"}
    assert current(directory) == "web_00000"
    assert sink.metrics()["messages"] == 3


async def test_without_newlines_messages_are_written_as_is(tmp_path: Path) -> None:
    sink = FileSink(FileSinkConfig(file_path=tmp_path))
    await sink.write(WEB, msgs(b"a\n", b"b\x00"))
    await sink.aclose()
    assert listing(tmp_path / "web") == {"web_00000": b"a\nb\x00"}


async def test_rotation_by_size(tmp_path: Path) -> None:
    sink = FileSink(FileSinkConfig(file_path=tmp_path, max_size=10))
    await sink.write(WEB, msgs(b"1111", b"2222", b"3333"))
    await sink.write(WEB, msgs(b"4" * 25, b"55"))  # too big for any file: one of its own
    await sink.aclose()
    directory = tmp_path / "web"
    assert listing(directory) == {
        "web_00000": b"11112222",
        "web_00001": b"3333",
        "web_00002": b"4" * 25,
        "web_00003": b"55",
    }
    assert current(directory) == "web_00003"


async def test_rotation_by_period_dates_files(tmp_path: Path) -> None:
    clock = Clock("2024 3 1 23 30 0")
    config = FileSinkConfig(file_path=tmp_path, rotate_period="daily", timezone="utc")
    sink = FileSink(config, clock=clock)
    await sink.write(WEB, msgs(b"a"))
    clock.set("2024 3 1 23 59 59")
    await sink.write(WEB, msgs(b"b"))
    clock.set("2024 3 2 0 0 1")
    await sink.write(WEB, msgs(b"c"))
    await sink.aclose()
    directory = tmp_path / "web"
    assert listing(directory) == {"web-2024-03-01_00000": b"ab", "web-2024-03-02_00000": b"c"}
    assert current(directory) == "web-2024-03-02_00000"


async def test_rotation_every_n_seconds_and_hourly(tmp_path: Path) -> None:
    clock = Clock("2024 3 1 10 0 0")
    sink = FileSink(
        FileSinkConfig(file_path=tmp_path, rotate_period="10s", timezone="utc"), clock=clock
    )
    for second in (0, 5, 10, 19, 20):
        clock.set(f"2024 3 1 10 0 {second}")
        await sink.write(WEB, msgs(str(second).encode() + b","))
    await sink.aclose()
    assert listing(tmp_path / "web") == {
        "web-2024-03-01_00000": b"0,5,",
        "web-2024-03-01_00001": b"10,19,",
        "web-2024-03-01_00002": b"20,",
    }
    hourly = FileSink(
        FileSinkConfig(file_path=tmp_path / "h", rotate_period="hourly", timezone="utc"),
        clock=clock,
    )
    for hour, minute in ((10, 0), (10, 59), (11, 0)):
        clock.set(f"2024 3 1 {hour} {minute} 0")
        await hourly.write(WEB, msgs(b"x"))
    await hourly.aclose()
    assert sorted(listing(tmp_path / "h" / "web")) == [
        "web-2024-03-01_00000",
        "web-2024-03-01_00001",
    ]


async def test_a_new_writer_continues_the_current_file(tmp_path: Path) -> None:
    config = FileSinkConfig(file_path=tmp_path, max_size=100)
    first = FileSink(config)
    await first.write(WEB, msgs(b"a"))
    await first.aclose()
    second = FileSink(config)
    await second.write(WEB, msgs(b"b"))
    await second.aclose()
    assert listing(tmp_path / "web") == {"web_00000": b"ab"}


async def test_a_current_file_moved_away_starts_a_new_one(tmp_path: Path) -> None:
    sink = FileSink(FileSinkConfig(file_path=tmp_path))
    await sink.write(WEB, msgs(b"a"))
    (tmp_path / "web" / "web_00000").rename(tmp_path / "shipped")
    await sink.write(WEB, msgs(b"b"))
    await sink.aclose()
    assert listing(tmp_path / "web") == {"web_00000": b"b"}
    assert (tmp_path / "shipped").read_bytes() == b"a"


async def test_category_names_are_filesystem_safe(tmp_path: Path) -> None:
    sink = FileSink(FileSinkConfig(file_path=tmp_path / "out"))
    await sink.write(PartitionId(b"../evil/x", 0), msgs(b"a"))
    await sink.write(PartitionId(b".", 0), msgs(b"b"))
    await sink.aclose()
    assert sorted(os.listdir(tmp_path / "out")) == ["%2E", "%2E.%2Fevil%2Fx"]
    assert os.listdir(tmp_path) == ["out"]
    assert listing(tmp_path / "out" / "%2E") == {"%2E_00000": b"b"}


async def test_failed_fsync_raises_sink_error_and_leaves_no_partial_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = FileSink(FileSinkConfig(file_path=tmp_path, add_newlines=True))
    await sink.write(WEB, msgs(b"ok"))

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(sink, "_fsync", failing)
    with pytest.raises(SinkError) as caught:
        await sink.write(WEB, msgs(b"lost", b"again"))
    assert caught.value.pid == WEB
    assert listing(tmp_path / "web") == {"web_00000": b"ok\n"}
    monkeypatch.undo()
    await sink.write(WEB, msgs(b"lost", b"again"))
    await sink.aclose()
    assert listing(tmp_path / "web") == {"web_00000": b"ok\nlost\nagain\n"}


async def test_writers_in_several_processes_share_a_category(tmp_path: Path) -> None:
    # Separate sink objects lock like separate processes (flock is per open file).
    config = FileSinkConfig(file_path=tmp_path, max_size=200, add_newlines=True)
    sinks = [FileSink(config), FileSink(config)]

    async def writer(index: int) -> None:
        for n in range(30):
            batch = [f"{index}-{n}-{i}".encode() for i in range(3)]
            await sinks[index].write(PartitionId(b"web", index), msgs(*batch))

    async with trio.open_nursery() as nursery:
        for index in range(2):
            nursery.start_soon(writer, index)
    for sink in sinks:
        await sink.aclose()
    files = listing(tmp_path / "web")
    assert len(files) > 2
    assert all(len(data) <= 200 for data in files.values())
    lines = b"".join(files[name] for name in sorted(files)).decode().split("\n")[:-1]
    assert sorted(lines) == sorted(
        f"{w}-{n}-{i}" for w in range(2) for n in range(30) for i in range(3)
    )
    for w in range(2):
        mine = [line for line in lines if line.startswith(f"{w}-")]
        assert mine == [f"{w}-{n}-{i}" for n in range(30) for i in range(3)]  # order kept
    assert current(tmp_path / "web") == max(files)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="rotate_period"):
        FileSinkConfig(file_path=Path("x"), rotate_period="weekly")
    assert FileSinkConfig(file_path=Path("x"), rotate_period="5m").rotate_period_s == 300
    assert FileSinkConfig(file_path=Path("x"), rotate_period="2d").rotate_period_s == 172800


async def test_open_files_are_bounded(tmp_path: Path) -> None:
    sink = FileSink(FileSinkConfig(file_path=tmp_path, max_open_files=2))
    for round_ in range(2):
        for name in (b"a", b"b", b"c", b"d"):
            await sink.write(PartitionId(name, 0), msgs(str(round_).encode()))
            assert len(sink._open) <= 2
    await sink.aclose()
    assert listing(tmp_path / "c") == {"c_00000": b"01"}
