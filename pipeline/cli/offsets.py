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
    Coordinator,
    DeleteRefused,
    FileSink,
    FileSinkConfig,
    ForwardSink,
    ForwardSinkConfig,
    RefusedWhileActive,
    RemoteReadConfig,
    ResetRefused,
    Sink,
    SinkError,
    open_remote_source,
)
from consumers.coordination import journal_of
from journal import JournalError, PartitionId, PartitionInfo, list_partitions, open_reader
from pipeline.cli.common import (
    FETCH_ADDRESS,
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
    timeout_option,
    tool_logs,
    write_json_lines,
)
from pipeline.cluster_view import cluster_state, group_names, registered_servers
from pipeline.config import PipelineConfig
from pipeline.consumer_app import build_coordinator, local_journal_id
from pipeline.consumer_config import CoordinationKind
from pipeline.remote_replay import plan_remote, replay_remote
from pipeline.replay import ReplayPlan, ReplayRange, plan_replay, replay
from scribe_compat import AsyncFetchClient, ClientError

# --max-retry-time: long enough to ride out an upstream's restart, short enough that a replay
# to a wrong address ends while someone still watches it.
DEFAULT_MAX_RETRY_S = 300.0
# Each registered server is asked for its high-water marks within this (an operator waits).
REGISTRY_TIMEOUT_S = 10.0


journal_id_option = click.option(
    "--journal-id",
    "journal_id",
    help="A registered journal (its id, or a prefix only it has, as `pipeline cluster status` "
    "shows it).",
)


def _journal(config: PipelineConfig) -> dict[PartitionId, PartitionInfo]:
    journal_dir = config.journal.dir
    if not journal_dir.is_dir():
        raise click.ClickException(f"no journal at {journal_dir}")
    return {info.pid: info for info in list_partitions(journal_dir)}


def reads_registry(config: PipelineConfig, group: str) -> bool:
    """Whether ``group`` reads the journal registry (its units live on many servers)."""
    section = next((s for s in config.consumers if s.name == group), None)
    return section is not None and section.group.journals == "registry"


def uses_registry(config: PipelineConfig) -> bool:
    return config.coordination.kind is CoordinationKind.ZOOKEEPER


def _local_journal(config: PipelineConfig) -> dict[PartitionId, PartitionInfo]:
    """This host's journal, or none (a consumer host of a registry group may have none)."""
    return _journal(config) if config.journal.dir.is_dir() else {}


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

    With ZooKeeper, a group's units on every registered server are shown too, with their
    journal (high-water marks asked of each server's fetch service).  A group marked * is not
    in the configuration but has stored offsets: it still holds retention back (``pipeline
    offsets delete --group NAME`` forgets it).
    """
    config = load_config(config_path, journal__dir=journal_dir)
    rows = run_async(_offset_rows, config, list(groups), errors=(CoordinationError,))
    if as_json:
        write_json_lines(sys.stdout, rows)
        return
    units = any(r["journal_id"] is not None for r in rows)
    journal_head = f"{'JOURNAL':8} " if units else ""
    click.echo(
        f"{'GROUP':20} {journal_head}{'CATEGORY':28} {'PART':>4} {'COMMITTED':>12} "
        f"{'NEXT':>12} {'LAG':>10}"
    )
    for r in rows:
        committed = "-" if r["committed"] is None else r["committed"]
        group = r["group"][:19] + ("" if r["configured"] else "*")
        journal = f"{(r['journal_id'] or '-')[:8]:8} " if units else ""
        high = "-" if r["high_water_mark"] is None else r["high_water_mark"]
        lag = "-" if r["lag"] is None else r["lag"]
        click.echo(
            f"{group:20} {journal}{r['category'][:28]:28} {r['partition']:>4} "
            f"{committed:>12} {high:>12} {lag:>10}"
        )
    if any(not r["configured"] for r in rows):
        click.echo("* not in the configuration: its offsets still hold retention back", err=True)


async def require_groups(config: PipelineConfig, names: list[str]) -> list[str]:
    """``names``, or every group when empty; exit 1 naming the groups when one is unknown
    (a group is known when it is configured or has stored offsets)."""
    known = await group_names(config)
    for name in names:
        require_known("consumer group", name, known)
    return names or known


async def _offset_rows(config: PipelineConfig, names: list[str]) -> list[dict[str, Any]]:
    names = await require_groups(config, names)
    registry = uses_registry(config)
    journal = _local_journal(config) if registry else _journal(config)
    state = await cluster_state(config, names, REGISTRY_TIMEOUT_S) if registry else None
    configured = {s.name for s in config.consumers}
    rows: list[dict[str, Any]] = []
    for name in names:
        coordinator = build_coordinator(config, name)
        members = await coordinator.members()
        committed = {
            pid: offset
            for pid, offset in (await coordinator.all_committed()).items()
            if journal_of(pid) is None
        }
        patterns = next((s.group.categories for s in config.consumers if s.name == name), ())
        matches = CategoryMatcher(patterns)
        pids = set(committed)
        if not reads_registry(config, name):
            pids |= {pid for pid in journal if matches(pid.category)}
        for pid in sorted(pids, key=lambda p: (p.category, p.partition)):
            info = journal.get(pid)
            high = info.high_water_mark if info and info.high_water_mark is not None else 0
            earliest = info.earliest_offset if info else 0
            offset = committed.get(pid)
            rows.append(
                {
                    "group": name,
                    "journal_id": None,
                    "category": text(pid.category),
                    "partition": pid.partition,
                    "committed": offset,
                    "high_water_mark": high,
                    "lag": max(0, high - max(offset or 0, earliest)),
                    "members": members,
                    "configured": name in configured,
                }
            )
        group_view = None if state is None else next(g for g in state.groups if g.name == name)
        for unit in [] if group_view is None else group_view.units:
            rows.append(
                {
                    "group": name,
                    "journal_id": unit.unit.journal_id,
                    "category": text(unit.unit.category),
                    "partition": unit.unit.partition,
                    "committed": unit.committed,
                    "high_water_mark": unit.high_water_mark,
                    "lag": unit.lag,
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
@journal_id_option
@click.option("--force", is_flag=True, help="Reset even while members are active.")
def reset_command(
    config_path: Path | None,
    journal_dir: Path | None,
    group: str,
    category: str | None,
    partition: int | None,
    target: OffsetTarget,
    journal_id: str | None,
    force: bool,
) -> None:
    """Move a group's committed offsets (refused while members are active unless --force).

    A configured group moves in the partitions its categories match; a group known only from
    its stored offsets, in those.  A group reading the registry moves in its units on every
    registered server (or on one, --journal-id), each resolved through its fetch service.
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
        journal_id,
        force,
        errors=(CoordinationError, JournalError),
    )
    write_json_lines(
        sys.stdout,
        (
            {"group": group, "journal_id": journal_of(pid)}
            | {"category": text(pid.category), "partition": pid.partition, "offset": offset}
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
    journal_id: str | None,
    force: bool,
) -> list[tuple[PartitionId, int]]:
    await require_groups(config, [group])
    if reads_registry(config, group) or journal_id is not None:
        return await _reset_units(config, group, category, partition, target, journal_id, force)
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
        await _reset_one(coordinator, pid, offset, force)
        done.append((pid, offset))
    return done


async def _reset_one(coordinator: Coordinator, pid: PartitionId, offset: int, force: bool) -> None:
    try:
        await coordinator.reset(pid, offset, force=force)
    except ResetRefused as exc:
        raise click.ClickException(f"{exc} (stop the members, or pass --force)") from exc


async def _reset_units(
    config: PipelineConfig,
    group: str,
    category: str | None,
    partition: int | None,
    target: OffsetTarget,
    journal_id: str | None,
    force: bool,
) -> list[tuple[PartitionId, int]]:
    """``_reset`` for a group's units on the registered servers."""
    if not uses_registry(config):
        raise click.ClickException('--journal-id needs [coordination] kind = "zookeeper"')
    state = await cluster_state(config, [group], REGISTRY_TIMEOUT_S)
    units = state.groups[0].units
    if journal_id is not None:
        wanted = pick_journal(journal_id, {u.unit.journal_id for u in units})
        units = [u for u in units if u.unit.journal_id == wanted]
    chosen = set(
        select_partitions([u.unit for u in units], category, partition, f"group {group!r}")
    )
    if not chosen:
        raise click.ClickException(f"group {group!r} has no units on the registered servers")
    coordinator = build_coordinator(config, group)
    done: list[tuple[PartitionId, int]] = []
    for view in (u for u in units if u.unit in chosen):
        server = state.server(view.unit.journal_id)
        if server is None or not server.alive or view.high_water_mark is None:
            raise click.ClickException(
                f"{view.unit}: its server is not registered or does not answer; "
                "reset it when it is back"
            )
        registration = server.registration
        offset = await resolve_remote(
            registration.fetch_host,
            registration.fetch_port,
            view.unit.partition_id,
            view.earliest or 0,
            view.high_water_mark,
            target,
        )
        await _reset_one(coordinator, view.unit, offset, force)
        done.append((view.unit, offset))
    return done


def pick_journal(given: str, known: set[str]) -> str:
    """The journal id ``given`` names: in full, or by a prefix only one journal has (as
    ``pipeline cluster status`` shows the first 8 digits)."""
    matches = sorted(j for j in known if j.startswith(given.lower().replace("-", "")))
    if len(matches) != 1:
        listed = ", ".join(sorted(known)) or "none"
        how = "is ambiguous" if matches else "is not known"
        raise click.ClickException(f"journal {given!r} {how} (journals: {listed})")
    return matches[0]


async def resolve_remote(
    host: str,
    port: int,
    pid: PartitionId,
    earliest: int,
    high_water_mark: int,
    target: OffsetTarget,
) -> int:
    """``_resolve`` for a partition of a remote journal, through its fetch service."""
    where = f"{text(pid.category)}/{pid.partition}"
    if target.kind == "earliest":
        return earliest
    if target.kind == "latest":
        return high_water_mark
    if target.kind == "time":
        try:
            async with await AsyncFetchClient.connect(host, port, REGISTRY_TIMEOUT_S) as client:
                return await client.offset_for_time(pid.category, pid.partition, target.value)
        except ClientError as exc:
            raise click.ClickException(f"{host}:{port}: {exc}") from exc
    if not earliest <= target.value <= high_water_mark:
        raise click.BadParameter(
            f"{target.value} is outside {where}'s offsets {earliest}..{high_water_mark}",
            param_hint="'--to'",
        )
    return target.value


def _replay_source(
    config: PipelineConfig,
    journal_id: str | None,
    server: tuple[str, int] | None,
    timeout_s: float,
) -> tuple[str, int] | None:
    """The fetch service a replay reads (None: this host's journal files)."""
    if server is not None:
        return server
    if journal_id is None:
        return None
    local = local_journal_id(config)
    if local is not None and local.startswith(journal_id.lower().replace("-", "")):
        return None
    if not uses_registry(config):
        raise click.ClickException(
            f"journal {journal_id!r} is not this host's, and the registry needs "
            '[coordination] kind = "zookeeper"'
        )
    servers = run_async(registered_servers, config, timeout_s, errors=(CoordinationError,))
    by_id = {view.registration.journal_id: view.registration for view in servers}
    registration = by_id[pick_journal(journal_id, set(by_id))]
    return registration.fetch_host, registration.fetch_port


async def _plan_remote(
    address: tuple[str, int],
    category: str,
    partition: int | None,
    bounds: ReplayRange,
    timeout_s: float,
) -> list[ReplayPlan]:
    host, port = address
    async with await AsyncFetchClient.connect(host, port, timeout_s) as client:
        description = await client.describe()
        states = {PartitionId(p.category, p.partition): p for p in description.partitions}
        pids = select_partitions(states, category, partition, f"{host}:{port}")
        return [await plan_remote(client, states[pid], bounds) for pid in pids]


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
@journal_id_option
@click.option(
    "--server",
    "server",
    type=FETCH_ADDRESS,
    help="Replay from the journal of the log server whose fetch service is at host:port.",
)
@timeout_option
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
    journal_id: str | None,
    server: tuple[str, int] | None,
    timeout: float,
) -> None:
    """Replay a range of a category into files or to a Scribe server, with progress.

    From this host's journal, or another server's through its fetch service: --server
    host:port, or --journal-id (a registered journal, found in ZooKeeper's registry).
    """
    if (target is None) == (to_files is None):
        raise click.UsageError("give exactly one of --target (--to-scribe) and --to-files")
    if journal_id is not None and server is not None:
        raise click.UsageError("give at most one of --journal-id and --server")
    config = load_config(config_path, journal__dir=journal_dir)
    bounds = ReplayRange(from_offset, from_time, to_offset, to_time)
    remote = _replay_source(config, journal_id, server, timeout)
    if remote is None:
        pids = select_partitions(_journal(config), category, partition, str(config.journal.dir))
        try:
            plans = [
                plan_replay(config.journal.dir, pid, bounds, config.journal.settings)
                for pid in pids
            ]
        except JournalError as exc:
            raise click.ClickException(str(exc)) from exc
    else:
        plans = run_async(
            _plan_remote, remote, category, partition, bounds, timeout, errors=(ClientError,)
        )
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

        async def replay_all() -> int:
            written = 0
            if remote is None:
                for plan in plans:
                    written += await replay(
                        config.journal.dir,
                        plan,
                        sink,
                        progress=progress,
                        config=config.journal.settings,
                    )
                return written
            read = RemoteReadConfig(timeout_s=timeout)
            async with open_remote_source(*remote, read) as source:
                for plan in plans:
                    written += await replay_remote(source, plan, sink, progress=progress)
            return written

        async def run() -> int:
            try:
                return await replay_all()
            except SinkError as exc:
                limit = f" (--max-retry-time {max_retry_s:g})" if target is not None else ""
                raise click.ClickException(
                    f"replay stopped after {delivered} of {total} messages: {exc}{limit}"
                ) from exc
            finally:
                await sink.aclose()

        written = run_async(run, errors=(JournalError, SinkError, ClientError))
    write_json_lines(
        sys.stdout, [{"category": category, "partitions": len(plans), "messages": written}]
    )
