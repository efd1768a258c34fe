"""``pipeline journal ...``: list, dump, verify, tail and repair journals on this host.

These read the journal directory directly, so they work beside a running server (readers never
see past the durable high-water mark) and without one.  Output for machines is JSON lines.
"""

from __future__ import annotations

import contextlib
import sys
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click
import trio

from journal import (
    JournalError,
    JournalMessage,
    JournalReader,
    PartitionId,
    PartitionInfo,
    RepairResult,
    UnknownJournal,
    UnknownPartition,
    VerifyProblem,
    list_partition_ids,
    list_partitions,
    open_reader,
    read_journal_id,
    repair,
    verify,
)
from pipeline.cli.common import (
    category_bytes,
    category_option,
    journal_dir_of,
    journal_options,
    json_option,
    metadata_record,
    offset_type,
    partition_option,
    run_async,
    select_partitions,
    text,
    time_option,
    with_message,
    write_json_lines,
)

# How often ``tail`` looks for partitions created after it started: listing the directory is
# cheap, and a new category's first messages show up at most this late.
TAIL_RESCAN_S = 0.5


def message_record(pid: PartitionId, message: JournalMessage) -> dict[str, Any]:
    """One journal message as a JSON-ready dict; non-UTF-8 bytes go out as base64."""
    record: dict[str, Any] = {
        "category": text(pid.category),
        "partition": pid.partition,
        "offset": message.offset,
        "timestamp": message.timestamp_ms,
    }
    with_message(record, message.message)
    if message.metadata:
        record["metadata"] = metadata_record(message.metadata)
    return record


def _require_journal(journal_dir: Path) -> None:
    if not journal_dir.is_dir():
        raise click.ClickException(f"no journal at {journal_dir}")


def _select(journal_dir: Path, category: str | None, partition: int | None) -> list[PartitionInfo]:
    _require_journal(journal_dir)
    infos = {info.pid: info for info in list_partitions(journal_dir)}
    return [infos[p] for p in select_partitions(infos, category, partition, str(journal_dir))]


@click.group("journal")
def journal_group() -> None:
    """Inspect, verify and repair the write-ahead journal."""


@journal_group.command("ls")
@journal_options
@json_option("One JSON object per partition.")
def ls_command(config_path: Path | None, journal_dir: Path | None, as_json: bool) -> None:
    """List partitions with their offsets, sizes and segments, after the journal's identity."""
    journal_dir = journal_dir_of(config_path, journal_dir)
    infos = _select(journal_dir, None, None)
    journal_id = _journal_id(journal_dir)
    if as_json:
        records = [_info_record(info) for info in infos]
        if journal_id is not None:
            for record in records:
                record["journal_id"] = str(journal_id)
        write_json_lines(sys.stdout, records)
        return
    if journal_id is not None:
        click.echo(f"journal {journal_id}")
    click.echo(
        f"{'CATEGORY':32} {'PART':>4} {'EARLIEST':>12} {'NEXT':>12} {'SEGS':>5} {'BYTES':>14}"
    )
    for info in infos:
        r = _info_record(info)
        click.echo(
            f"{r['category'][:32]:32} {r['partition']:>4} {r['earliest_offset']:>12} "
            f"{r['high_water_mark']:>12} {r['segments']:>5} {r['bytes']:>14}"
        )


def _journal_id(journal_dir: Path) -> uuid.UUID | None:
    """The journal's identity; None when no writer has opened it since identities exist."""
    try:
        return read_journal_id(journal_dir)
    except UnknownJournal:
        return None
    except JournalError as exc:
        raise click.ClickException(str(exc)) from exc


def _info_record(info: PartitionInfo) -> dict[str, Any]:
    return {
        "category": text(info.pid.category),
        "partition": info.pid.partition,
        "earliest_offset": info.earliest_offset,
        "high_water_mark": info.high_water_mark,
        "segments": info.segments,
        "bytes": info.size_bytes,
        "last_timestamp": info.last_timestamp_ms,
    }


@journal_group.command("dump")
@journal_options
@category_option
@partition_option
@click.option(
    "--from-offset", type=offset_type, help="Start at this offset (default: the earliest)."
)
@time_option("--from-time", "Start at the first message at or after this time")
@click.option(
    "--limit", type=click.IntRange(min=1), help="Stop after this many messages per partition."
)
def dump_command(
    config_path: Path | None,
    journal_dir: Path | None,
    category: str | None,
    partition: int | None,
    from_offset: int | None,
    from_time: int | None,
    limit: int | None,
) -> None:
    """Print messages as JSON lines (category, partition, offset, timestamp, message)."""
    journal_dir = journal_dir_of(config_path, journal_dir)
    for info in _select(journal_dir, category, partition):
        reader = _open(journal_dir, info, from_offset, from_time)
        try:
            write_json_lines(sys.stdout, _records(info.pid, _drain(reader, limit)))
        except JournalError as exc:
            raise click.ClickException(str(exc)) from exc
        finally:
            reader.close()


def _open(
    journal_dir: Path, info: PartitionInfo, from_offset: int | None, from_time: int | None
) -> JournalReader:
    start = info.earliest_offset if from_offset is None else from_offset
    try:
        reader = open_reader(journal_dir, info.pid, start)
        if from_time is not None:
            reader.seek_time(from_time)
    except JournalError as exc:
        raise click.ClickException(str(exc)) from exc
    return reader


def _drain(reader: JournalReader, limit: int | None) -> Iterable[JournalMessage]:
    remaining = limit
    while remaining is None or remaining > 0:
        batch = reader.read(max_messages=1000 if remaining is None else min(remaining, 1000))
        if not batch:
            return
        yield from batch
        if remaining is not None:
            remaining -= len(batch)


def _records(pid: PartitionId, messages: Iterable[JournalMessage]) -> Iterable[dict[str, Any]]:
    return (message_record(pid, message) for message in messages)


@journal_group.command("tail")
@journal_options
@category_option
@partition_option
@click.option("--from-beginning", is_flag=True, help="Start at the earliest offset, not the end.")
@click.option("--count", type=click.IntRange(min=1), help="Exit after printing this many messages.")
def tail_command(
    config_path: Path | None,
    journal_dir: Path | None,
    category: str | None,
    partition: int | None,
    from_beginning: bool,
    count: int | None,
) -> None:
    """Follow partitions and print new messages as JSON lines (Ctrl-C stops).

    Like ``tail -F``: partitions created later (a new category, or the one ``-c`` names
    before it exists) are followed from their first message as they appear.
    """
    journal_dir = journal_dir_of(config_path, journal_dir)
    _require_journal(journal_dir)
    wanted = None if category is None else category_bytes(category)

    def matches(pid: PartitionId) -> bool:
        return (wanted is None or pid.category == wanted) and (
            partition is None or pid.partition == partition
        )

    present = {pid for pid in list_partition_ids(journal_dir) if matches(pid)}
    if not present:
        what = "partitions" if category is None else f"category {category!r}"
        if partition is not None:
            what = f"partition {partition}" + ("" if category is None else f" of {category!r}")
        click.echo(f"waiting for {what} to appear in {journal_dir} (Ctrl-C stops)", err=True)
    with contextlib.suppress(KeyboardInterrupt):
        run_async(
            _tail, journal_dir, matches, present, from_beginning, count, errors=(JournalError,)
        )


async def _tail(
    journal_dir: Path,
    matches: Callable[[PartitionId], bool],
    present: set[PartitionId],
    from_beginning: bool,
    count: int | None,
) -> None:
    """Follow every matching partition, those ``present`` at the start from their end (or
    beginning), those appearing later from their beginning."""
    printed = 0
    following: set[PartitionId] = set()
    async with trio.open_nursery() as nursery:

        async def follow(reader: JournalReader) -> None:
            nonlocal printed
            with reader:
                while True:
                    batch = await reader.read_wait()
                    if count is not None:
                        batch = batch[: count - printed]
                    write_json_lines(sys.stdout, _records(reader.pid, batch))
                    printed += len(batch)
                    if count is not None and printed >= count:
                        nursery.cancel_scope.cancel()
                        return

        while True:
            for pid in list_partition_ids(journal_dir):
                if pid in following or not matches(pid):
                    continue
                try:
                    reader = open_reader(journal_dir, pid, None)
                except UnknownPartition:
                    continue  # still being created: the next scan opens it
                if pid in present and not from_beginning:
                    reader.seek(reader.high_water_mark())
                elif pid not in present:
                    click.echo(f"following {text(pid.category)}/{pid.partition}", err=True)
                following.add(pid)
                nursery.start_soon(follow, reader)
            await trio.sleep(TAIL_RESCAN_S)


@journal_group.command("verify")
@journal_options
@category_option
@partition_option
def verify_command(
    config_path: Path | None, journal_dir: Path | None, category: str | None, partition: int | None
) -> None:
    """Check every batch's checksum and offsets; exit 1 when any problem is found."""
    journal_dir = journal_dir_of(config_path, journal_dir)
    infos = _select(journal_dir, category, partition)
    problems = 0
    with click.progressbar(infos, label="verifying", file=sys.stderr) as bar:
        for info in bar:
            for problem in verify(journal_dir, info.pid):
                problems += 1
                write_json_lines(sys.stdout, [_problem_record(problem)])
    click.echo(f"{len(infos)} partitions verified, {problems} problems", err=True)
    if problems:
        sys.exit(1)


def _problem_record(problem: VerifyProblem) -> dict[str, Any]:
    return {
        "category": text(problem.pid.category),
        "partition": problem.pid.partition,
        "file": str(problem.file),
        "position": problem.position,
        "reason": problem.reason,
        "fatal": problem.fatal,
    }


@journal_group.command("repair")
@journal_options
@click.option("--category", "-c", required=True, help="The category (exact, as text).")
@click.option("--partition", "-p", type=click.IntRange(min=0), required=True, help="The partition.")
@click.option(
    "--salvage/--no-salvage",
    default=True,
    show_default=True,
    help="Keep the intact batches found after the damage, at new offsets.",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def repair_command(
    config_path: Path | None,
    journal_dir: Path | None,
    category: str,
    partition: int,
    salvage: bool,
    yes: bool,
) -> None:
    """Cut a damaged partition at its first invalid batch (the cut bytes are kept aside).

    The intact batches after the damage are salvaged at new offsets (after the high-water mark:
    offsets are never reused); the offsets cut are a gap that verify accepts and consumers skip,
    logging and counting it.  Stop the server first: repair rewrites the partition's files.
    """
    journal_dir = journal_dir_of(config_path, journal_dir)
    _require_journal(journal_dir)
    (pid,) = select_partitions(
        list_partition_ids(journal_dir), category, partition, str(journal_dir)
    )
    if not yes:
        click.confirm(f"cut {category}/{partition} at its first damage?", abort=True)
    try:
        result = repair(journal_dir, pid, salvage=salvage)
    except JournalError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        # E.g. a full disk while salvaging: what was cut stays in its side files, and a second
        # run finishes the partition (it salvages only what it cuts itself).
        raise click.ClickException(
            f"repair of {category}/{partition} stopped: {exc}; the cut bytes stay in their side "
            "files; run repair again once the cause is fixed"
        ) from exc
    click.echo(_repair_summary(result), err=True)
    record = {
        "category": category,
        "partition": partition,
        "cut_file": None if result.cut_file is None else str(result.cut_file),
        "cut_position": result.cut_position,
        "side_files": [str(p) for p in result.side_files],
        "bytes_removed": result.bytes_removed,
        "next_offset": result.next_offset,
        "indexes_rebuilt": result.indexes_rebuilt,
        "gap": None if result.gap is None else list(result.gap),
        "salvaged_messages": result.salvaged_messages,
        "salvaged_batches": result.salvaged_batches,
    }
    write_json_lines(sys.stdout, [record])


def _repair_summary(result: RepairResult) -> str:
    """What repair did, in one line for the operator."""
    if result.cut_file is None and result.gap is None:
        return f"{result.pid}: no damage found; {result.indexes_rebuilt} indexes rebuilt"
    words = [str(result.pid)]
    if result.cut_file is not None:
        words.append(f"cut at {result.cut_file} byte {result.cut_position}")
    if result.gap is not None:
        start, end = result.gap
        words.append(f"offsets {start}..{end - 1} are a documented gap")
    if result.salvaged_messages:
        first = result.next_offset - result.salvaged_messages
        words.append(
            f"salvaged {result.salvaged_messages} messages ({result.salvaged_batches} batches) "
            f"found intact after the damage, now at offsets {first}..{result.next_offset - 1}"
        )
    else:
        words.append("salvaged no messages")
    side = ", ".join(str(p) for p in result.side_files)
    if side:
        words.append(f"the cut bytes are kept in {side}")
    return ": ".join(words[:2]) + "".join(f"; {w}" for w in words[2:])
