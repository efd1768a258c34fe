"""``pipeline offsets ...`` and ``pipeline journal replay``: the operator's consumer tools."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import trio

from consumers import (
    CategoryMatcher,
    CoordinationError,
    DeleteRefused,
    FileSink,
    FileSinkConfig,
    ForwardSink,
    ForwardSinkConfig,
    RefusedWhileActive,
    ResetRefused,
    Sink,
    SinkError,
)
from journal import JournalError, PartitionId, PartitionInfo, list_partitions, open_reader
from pipeline.cli_common import category_bytes, config_option, group_section, load_config, text
from pipeline.cli_tools import parse_host_port
from pipeline.config import PipelineConfig
from pipeline.consumer_app import build_coordinator, known_groups
from pipeline.replay import ReplayRange, plan_replay, replay


def _journal(config: PipelineConfig) -> dict[PartitionId, PartitionInfo]:
    journal_dir = config.journal.dir
    if not journal_dir.is_dir():
        raise click.ClickException(f"no journal at {journal_dir}")
    return {info.pid: info for info in list_partitions(journal_dir)}


def _select(
    pids: list[PartitionId], category: str | None, partition: int | None
) -> list[PartitionId]:
    if category is not None:
        raw = category_bytes(category)
        pids = [p for p in pids if p.category == raw]
    if partition is not None:
        pids = [p for p in pids if p.partition == partition]
    return sorted(pids, key=lambda p: (p.category, p.partition))


@click.group("offsets")
def offsets_group() -> None:
    """Show, reset and delete consumer groups' committed offsets."""


@offsets_group.command("show")
@config_option
@click.option(
    "--group",
    "-g",
    "groups",
    multiple=True,
    help="Only these groups (default: every configured group and every group with stored offsets).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per group and partition.")
def show_command(config_path: Path | None, groups: tuple[str, ...], as_json: bool) -> None:
    """Committed offset, high-water mark and lag per group and partition.

    A group marked * is not in the configuration but has stored offsets: it still holds
    retention back (``pipeline offsets delete --group NAME`` forgets it).
    """
    config = load_config(config_path)
    rows = trio.run(_offset_rows, config, list(groups))
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    click.echo(
        f"{'GROUP':20} {'CATEGORY':28} {'PART':>4} {'COMMITTED':>12} {'NEXT':>12} {'LAG':>10}"
    )
    for r in rows:
        committed = "-" if r["committed"] is None else r["committed"]
        group = r["group"][:19] + ("" if r["configured"] else "*")
        click.echo(
            f"{group:20} {r['category'][:28]:28} {r['partition']:>4} "
            f"{committed:>12} {r['high_water_mark']:>12} {r['lag']:>10}"
        )
    if any(not r["configured"] for r in rows):
        click.echo("* not in the configuration: its offsets still hold retention back", err=True)


async def _group_names(config: PipelineConfig) -> list[str]:
    """Every configured group, then every other group with stored offsets."""
    configured = [s.name for s in config.consumers]
    return configured + [g for g in await known_groups(config) if g not in configured]


async def _offset_rows(config: PipelineConfig, names: list[str]) -> list[dict[str, Any]]:
    try:
        return await _offset_rows_unchecked(config, names or await _group_names(config))
    except CoordinationError as exc:
        raise click.ClickException(str(exc)) from exc


async def _offset_rows_unchecked(config: PipelineConfig, names: list[str]) -> list[dict[str, Any]]:
    journal = _journal(config)
    configured = {s.name for s in config.consumers}
    rows: list[dict[str, Any]] = []
    for name in names:
        coordinator = build_coordinator(config, name)
        members = await coordinator.members()
        committed = await coordinator.all_committed()
        patterns = next((s.group.categories for s in config.consumers if s.name == name), ())
        matches = CategoryMatcher(patterns)
        pids = set(committed) | {pid for pid in journal if matches(pid.category)}
        for pid in _select(list(pids), None, None):
            info = journal.get(pid)
            high = info.high_water_mark if info and info.high_water_mark is not None else 0
            earliest = info.earliest_offset if info else 0
            offset = committed.get(pid)
            rows.append(
                {
                    "group": name,
                    "category": text(pid.category),
                    "partition": pid.partition,
                    "committed": offset,
                    "high_water_mark": high,
                    "lag": max(0, high - max(offset or 0, earliest)),
                    "members": members,
                    "configured": name in configured,
                }
            )
    return rows


@offsets_group.command("reset")
@config_option
@click.option("--group", "-g", "group", required=True)
@click.option("--category", "-c", help="Only this category (default: all of the group's).")
@click.option("--partition", "-p", type=int, help="Only this partition.")
@click.option(
    "--to",
    "target",
    required=True,
    help="earliest, latest, an offset, or time:<ms since the epoch>.",
)
@click.option("--force", is_flag=True, help="Reset even while members are active.")
def reset_command(
    config_path: Path | None,
    group: str,
    category: str | None,
    partition: int | None,
    target: str,
    force: bool,
) -> None:
    """Move a group's committed offsets (refused while members are active unless --force)."""
    config = load_config(config_path)
    section = group_section(config, group)
    matches = CategoryMatcher(section.group.categories)
    pids = _select([p for p in _journal(config) if matches(p.category)], category, partition)
    if not pids:
        raise click.ClickException("no matching partitions")
    try:
        for pid, offset in trio.run(_reset, config, group, pids, target, force):
            click.echo(
                json.dumps(
                    {
                        "group": group,
                        "category": text(pid.category),
                        "partition": pid.partition,
                        "offset": offset,
                    }
                )
            )
    except ResetRefused as exc:
        raise click.ClickException(f"{exc} (stop the members, or pass --force)") from exc
    except (CoordinationError, JournalError) as exc:
        raise click.ClickException(str(exc)) from exc


def _resolve(config: PipelineConfig, pid: PartitionId, target: str) -> int:
    """The offset ``target`` names in ``pid``, which must lie between its earliest offset and
    its high-water mark (an offset outside could never be consumed or committed past)."""
    where = f"{text(pid.category)}/{pid.partition}"
    with open_reader(config.journal.dir, pid, None, config.journal.settings) as reader:
        earliest, latest = reader.earliest_offset(), reader.high_water_mark()
        if target == "earliest":
            return earliest
        if target == "latest":
            return latest
        if target.startswith("time:"):
            try:
                reader.seek_time(int(target.removeprefix("time:")))
            except ValueError:
                raise click.BadParameter(f"{target!r}: time:<ms since the epoch>") from None
            return reader.position
    if not target.isdigit():
        raise click.BadParameter(f"{target!r}: use earliest, latest, an offset or time:<ms>")
    offset = int(target)
    if not earliest <= offset <= latest:
        raise click.BadParameter(f"{offset} is outside {where}'s offsets {earliest}..{latest}")
    return offset


async def _reset(
    config: PipelineConfig, group: str, pids: list[PartitionId], target: str, force: bool
) -> list[tuple[PartitionId, int]]:
    coordinator = build_coordinator(config, group)
    done = []
    for pid in pids:
        offset = _resolve(config, pid, target)
        await coordinator.reset(pid, offset, force=force)
        done.append((pid, offset))
    return done


@offsets_group.command("delete")
@config_option
@click.option("--group", "-g", "group", required=True, help="The group whose offsets go.")
@click.option(
    "--force",
    is_flag=True,
    help="Delete even while members are active (they start over from the earliest offsets).",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def delete_command(config_path: Path | None, group: str, force: bool, yes: bool) -> None:
    """Forget a group's committed offsets, so that it no longer holds retention back.

    For a group taken out of the configuration.  Refused while members are active unless
    --force.  A group still configured starts over from the earliest offsets.
    """
    config = load_config(config_path)
    configured = any(s.name == group for s in config.consumers)
    try:
        committed, members = trio.run(_group_state, config, group)
    except CoordinationError as exc:
        raise click.ClickException(str(exc)) from exc
    if not committed:
        known = trio.run(_group_names, config)
        raise click.ClickException(
            f"group {group!r} has no stored offsets (groups: {', '.join(known) or 'none'})"
        )
    if members and not force:
        raise click.ClickException(
            f"{DeleteRefused(group, members)} (stop the members, or pass --force)"
        )
    if not yes:
        still = (
            " (still configured: it starts over from the earliest offsets)" if configured else ""
        )
        click.confirm(
            f"delete the offsets of group {group!r} in {len(committed)} partitions{still}?",
            abort=True,
            err=True,  # stdout stays the JSON result
        )
    try:
        deleted = trio.run(_delete, config, group, force)
    except RefusedWhileActive as exc:
        raise click.ClickException(f"{exc} (stop the members, or pass --force)") from exc
    except CoordinationError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps({"group": group, "partitions": deleted, "configured": configured}))


async def _group_state(
    config: PipelineConfig, group: str
) -> tuple[dict[PartitionId, int | None], list[str]]:
    coordinator = build_coordinator(config, group)
    return await coordinator.all_committed(), await coordinator.members()


async def _delete(config: PipelineConfig, group: str, force: bool) -> int:
    return await build_coordinator(config, group).delete(force=force)


@click.command("replay")
@config_option
@click.option("--category", "-c", required=True, help="The category to replay.")
@click.option("--partition", "-p", type=int, help="Only this partition (default: all).")
@click.option("--from-offset", type=int)
@click.option("--to-offset", type=int, help="Exclusive.")
@click.option("--from-time", type=int, help="ms since the epoch.")
@click.option("--to-time", type=int, help="ms since the epoch, exclusive.")
@click.option("--to-scribe", help="Forward to this Scribe server, host[:port].")
@click.option(
    "--to-files",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write Scribe-style files under this directory.",
)
@click.option("--add-newlines", is_flag=True, help="With --to-files: a newline after each message.")
def replay_command(
    config_path: Path | None,
    category: str,
    partition: int | None,
    from_offset: int | None,
    to_offset: int | None,
    from_time: int | None,
    to_time: int | None,
    to_scribe: str | None,
    to_files: Path | None,
    add_newlines: bool,
) -> None:
    """Replay a range of a category into files or to a Scribe server, with progress."""
    if (to_scribe is None) == (to_files is None):
        raise click.UsageError("give exactly one of --to-scribe and --to-files")
    config = load_config(config_path)
    pids = _select(list(_journal(config)), category, partition)
    if not pids:
        raise click.ClickException(f"no partitions of {category!r}")
    bounds = ReplayRange(from_offset, from_time, to_offset, to_time)
    try:
        plans = [
            plan_replay(config.journal.dir, pid, bounds, config.journal.settings) for pid in pids
        ]
    except JournalError as exc:
        raise click.ClickException(str(exc)) from exc
    sink: Sink
    if to_scribe is not None:
        host, port = parse_host_port(to_scribe)
        sink = ForwardSink(ForwardSinkConfig(host=host, port=port))
    else:
        assert to_files is not None
        sink = FileSink(FileSinkConfig(file_path=to_files, add_newlines=add_newlines))
    total = sum(p.messages for p in plans)
    with click.progressbar(
        length=total, label=f"replaying {total} messages", file=sys.stderr
    ) as bar:

        async def run() -> int:
            written = 0
            try:
                for plan in plans:
                    written += await replay(
                        config.journal.dir,
                        plan,
                        sink,
                        progress=bar.update,
                        config=config.journal.settings,
                    )
            finally:
                await sink.aclose()
            return written

        try:
            written = trio.run(run)
        except (JournalError, SinkError) as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps({"category": category, "partitions": len(plans), "messages": written}))
