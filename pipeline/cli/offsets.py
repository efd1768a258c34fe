"""``pipeline offsets ...`` and ``pipeline journal replay``: the operator's consumer tools."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

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
from pipeline.cli.common import (
    TIME,
    category_option,
    config_option,
    journal_options,
    json_option,
    load_config,
    offset_type,
    partition_option,
    require_known,
    run_async,
    select_partitions,
    target_option,
    text,
    time_option,
    tool_logs,
    write_json_lines,
)
from pipeline.config import PipelineConfig
from pipeline.consumer_app import build_coordinator, known_groups
from pipeline.replay import ReplayRange, plan_replay, replay

# --max-retry-time: long enough to ride out an upstream's restart, short enough that a replay
# to a wrong address ends while someone still watches it.
DEFAULT_MAX_RETRY_S = 300.0


def _journal(config: PipelineConfig) -> dict[PartitionId, PartitionInfo]:
    journal_dir = config.journal.dir
    if not journal_dir.is_dir():
        raise click.ClickException(f"no journal at {journal_dir}")
    return {info.pid: info for info in list_partitions(journal_dir)}


@click.group("offsets")
def offsets_group() -> None:
    """Show, reset and delete consumer groups' committed offsets."""


@offsets_group.command("show")
@journal_options
@click.option(
    "--group",
    "-g",
    "groups",
    multiple=True,
    help="Only these groups (default: every configured group and every group with stored offsets).",
)
@json_option("One JSON object per group and partition.")
def show_command(
    config_path: Path | None, journal_dir: Path | None, groups: tuple[str, ...], as_json: bool
) -> None:
    """Committed offset, high-water mark and lag per group and partition.

    A group marked * is not in the configuration but has stored offsets: it still holds
    retention back (``pipeline offsets delete --group NAME`` forgets it).
    """
    config = load_config(config_path, journal__dir=journal_dir)
    rows = run_async(_offset_rows, config, list(groups), errors=(CoordinationError,))
    if as_json:
        write_json_lines(sys.stdout, rows)
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


async def require_groups(config: PipelineConfig, names: list[str]) -> list[str]:
    """``names``, or every group when empty; exit 1 naming the groups when one is unknown
    (a group is known when it is configured or has stored offsets)."""
    known = await _group_names(config)
    for name in names:
        require_known("consumer group", name, known)
    return names or known


async def _offset_rows(config: PipelineConfig, names: list[str]) -> list[dict[str, Any]]:
    names = await require_groups(config, names)
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
        for pid in sorted(pids, key=lambda p: (p.category, p.partition)):
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


@dataclass(frozen=True)
class OffsetTarget:
    """Where ``offsets reset --to`` moves a group: ``kind`` is earliest, latest, offset or
    time; ``value`` the offset or the time in ms."""

    kind: str
    value: int = 0


class OffsetTargetParam(click.ParamType[OffsetTarget, Any]):
    name = "target"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> OffsetTarget:
        if isinstance(value, OffsetTarget):
            return value
        word = str(value)
        if word in ("earliest", "latest"):
            return OffsetTarget(word)
        if word.startswith("time:"):
            try:
                return OffsetTarget("time", TIME.convert(word.removeprefix("time:"), param, ctx))
            except click.BadParameter as exc:
                self.fail(f"{word!r}: {exc.message}", param, ctx)
        if word.isdigit():
            return OffsetTarget("offset", int(word))
        self.fail(f"{word!r}: use earliest, latest, an offset or time:<time>", param, ctx)


@offsets_group.command("reset")
@journal_options
@click.option("--group", "-g", "group", required=True, help="The group whose offsets move.")
@category_option
@partition_option
@click.option(
    "--to",
    "target",
    type=OffsetTargetParam(),
    required=True,
    help="earliest, latest, an offset, or time:<time> (a time as --from-time takes it: ISO "
    "8601, -10m, ms since the epoch): the first message at or after it.",
)
@click.option("--force", is_flag=True, help="Reset even while members are active.")
def reset_command(
    config_path: Path | None,
    journal_dir: Path | None,
    group: str,
    category: str | None,
    partition: int | None,
    target: OffsetTarget,
    force: bool,
) -> None:
    """Move a group's committed offsets (refused while members are active unless --force).

    A configured group moves in the partitions its categories match; a group known only from
    its stored offsets, in those.
    """
    config = load_config(config_path, journal__dir=journal_dir)
    tool_logs(config)
    done = run_async(
        _reset,
        config,
        group,
        category,
        partition,
        target,
        force,
        errors=(CoordinationError, JournalError),
    )
    write_json_lines(
        sys.stdout,
        (
            {"group": group, "category": text(pid.category), "partition": pid.partition}
            | {"offset": offset}
            for pid, offset in done
        ),
    )


def _resolve(config: PipelineConfig, pid: PartitionId, target: OffsetTarget) -> int:
    """The offset ``target`` names in ``pid``, which must lie between its earliest offset and
    its high-water mark (an offset outside could never be consumed or committed past)."""
    where = f"{text(pid.category)}/{pid.partition}"
    with open_reader(config.journal.dir, pid, None, config.journal.settings) as reader:
        earliest, latest = reader.earliest_offset(), reader.high_water_mark()
        if target.kind == "earliest":
            return earliest
        if target.kind == "latest":
            return latest
        if target.kind == "time":
            reader.seek_time(target.value)
            return reader.position
    offset = target.value
    if not earliest <= offset <= latest:
        raise click.BadParameter(
            f"{offset} is outside {where}'s offsets {earliest}..{latest}", param_hint="'--to'"
        )
    return offset


async def _reset(
    config: PipelineConfig,
    group: str,
    category: str | None,
    partition: int | None,
    target: OffsetTarget,
    force: bool,
) -> list[tuple[PartitionId, int]]:
    await require_groups(config, [group])
    coordinator = build_coordinator(config, group)
    journal = _journal(config)
    section = next((s for s in config.consumers if s.name == group), None)
    if section is not None:
        matches = CategoryMatcher(section.group.categories)
        candidates = [p for p in journal if matches(p.category)]
    else:
        candidates = [p for p in await coordinator.all_committed() if p in journal]
    pids = select_partitions(candidates, category, partition, f"group {group!r}")
    if not pids:
        raise click.ClickException(f"group {group!r} matches no partitions of the journal")
    done = []
    for pid in pids:
        offset = _resolve(config, pid, target)
        try:
            await coordinator.reset(pid, offset, force=force)
        except ResetRefused as exc:
            raise click.ClickException(f"{exc} (stop the members, or pass --force)") from exc
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
    committed, members = run_async(_group_state, config, group, errors=(CoordinationError,))
    if not committed:
        raise click.ClickException(f"group {group!r} has no stored offsets: nothing to delete")
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
    tool_logs(config)
    deleted = run_async(_delete, config, group, force, errors=(CoordinationError,))
    write_json_lines(
        sys.stdout, [{"group": group, "partitions": deleted, "configured": configured}]
    )


async def _group_state(
    config: PipelineConfig, group: str
) -> tuple[dict[PartitionId, int | None], list[str]]:
    await require_groups(config, [group])
    coordinator = build_coordinator(config, group)
    return await coordinator.all_committed(), await coordinator.members()


async def _delete(config: PipelineConfig, group: str, force: bool) -> int:
    try:
        return await build_coordinator(config, group).delete(force=force)
    except RefusedWhileActive as exc:
        raise click.ClickException(f"{exc} (stop the members, or pass --force)") from exc


@click.command("replay")
@journal_options
@click.option("--category", "-c", required=True, help="The category to replay.")
@partition_option
@click.option("--from-offset", type=offset_type, help="The first offset (default: the earliest).")
@click.option("--to-offset", type=offset_type, help="The end offset, exclusive.")
@time_option("--from-time", "From the first message at or after this time")
@time_option("--to-time", "Up to the first message at or after this time, exclusive")
@target_option("--to-scribe", default=None, what="Forward to this Scribe server")
@click.option(
    "--to-files",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write Scribe-style files under this directory.",
)
@click.option("--add-newlines", is_flag=True, help="With --to-files: a newline after each message.")
@click.option(
    "--max-retry-time",
    "max_retry_s",
    type=click.FloatRange(min=0, min_open=True, max=86400),
    default=DEFAULT_MAX_RETRY_S,
    show_default=True,
    help="With --target: seconds a batch may go undelivered (retried with backoff, each "
    "retry logged with its reason) before the replay stops with exit 1.",
)
def replay_command(
    config_path: Path | None,
    journal_dir: Path | None,
    category: str,
    partition: int | None,
    from_offset: int | None,
    to_offset: int | None,
    from_time: int | None,
    to_time: int | None,
    target: tuple[str, int] | None,
    to_files: Path | None,
    add_newlines: bool,
    max_retry_s: float,
) -> None:
    """Replay a range of a category into files or to a Scribe server, with progress."""
    if (target is None) == (to_files is None):
        raise click.UsageError("give exactly one of --target (--to-scribe) and --to-files")
    config = load_config(config_path, journal__dir=journal_dir)
    pids = select_partitions(_journal(config), category, partition, str(config.journal.dir))
    bounds = ReplayRange(from_offset, from_time, to_offset, to_time)
    try:
        plans = [
            plan_replay(config.journal.dir, pid, bounds, config.journal.settings) for pid in pids
        ]
    except JournalError as exc:
        raise click.ClickException(str(exc)) from exc
    sink: Sink
    if target is not None:
        host, port = target
        sink = ForwardSink(ForwardSinkConfig(host=host, port=port), give_up_after_s=max_retry_s)
        tool_logs(config)  # each retry with its peer, reason, attempt and delay
    else:
        assert to_files is not None
        sink = FileSink(FileSinkConfig(file_path=to_files, add_newlines=add_newlines))
    total = sum(p.messages for p in plans)
    with click.progressbar(
        length=total, label=f"replaying {total} messages", file=sys.stderr
    ) as bar:
        delivered = 0

        def progress(messages: int) -> None:
            nonlocal delivered
            delivered += messages
            bar.update(messages)

        async def run() -> int:
            written = 0
            try:
                for plan in plans:
                    written += await replay(
                        config.journal.dir,
                        plan,
                        sink,
                        progress=progress,
                        config=config.journal.settings,
                    )
            except SinkError as exc:
                limit = f" (--max-retry-time {max_retry_s:g})" if target is not None else ""
                raise click.ClickException(
                    f"replay stopped after {delivered} of {total} messages: {exc}{limit}"
                ) from exc
            finally:
                await sink.aclose()
            return written

        written = run_async(run, errors=(JournalError, SinkError))
    write_json_lines(
        sys.stdout, [{"category": category, "partitions": len(plans), "messages": written}]
    )
