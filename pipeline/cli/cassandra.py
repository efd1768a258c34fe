"""``pipeline schema``, ``pipeline deadletters`` and ``pipeline events``: the Cassandra tools.

Thin click commands over `pipeline.cassandra_queries`: they parse flags, open one session on the
``[cassandra]`` cluster (never creating the keyspace, except ``schema apply``), and print.
Output for machines is JSON lines; progress goes to standard error.

``--group`` names a consumer group with ``sink = "cassandra"``.  ``schema`` takes every such
group without it; ``deadletters list`` every group found in the table; the others the only
Cassandra group (``events``: the only ``events`` group) when there is exactly one.

Exit codes: 0 success; 1 the command's own failure (the schema differs or does not fit, dead
letters still fail, nothing found, Cassandra unreachable or refusing: one line naming it);
2 usage (also a missing ``--group`` when several groups could be meant, a time range of too
many buckets); 78 invalid configuration (also a ``--group`` that is not such a group).
"""

from __future__ import annotations

import json
import logging
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import trio

from consumers import SinkError
from consumers.cassandra import CassandraSession, open_cassandra
from consumers.errors import SchemaMismatch, StorageError
from consumers.sinks.cassandra import DEAD_LETTERS, DeadLetter, EventsOptions
from consumers.sinks.cassandra import schema as schema_module
from pipeline import cassandra_queries as queries
from pipeline import logs
from pipeline.cli.common import (
    CommandError,
    InvalidConfigError,
    category_bytes,
    config_option,
    error_line,
    group_section,
    json_option,
    load_config,
    metadata_record,
    text,
    time_option,
    with_message,
)
from pipeline.config import PipelineConfig
from pipeline.consumer_app import build_materializer
from pipeline.consumer_config import ConsumerSection
from pipeline.errors import find_error
from pipeline.times import iso

T = TypeVar("T")

group_option = click.option(
    "--group", "-g", "group_name", help='The consumer group (one with sink = "cassandra").'
)
json_lines_option = json_option("One JSON object per line.")


def _fail(message: str) -> NoReturn:
    raise CommandError(" ".join(message.split()))


def _misconfigured(message: str) -> NoReturn:
    raise InvalidConfigError(" ".join(message.split()))


def _run(config: PipelineConfig, work: Callable[[CassandraSession], Awaitable[T]]) -> T:
    """``work(session)`` in trio on a session of the configured cluster (the keyspace is not
    created); Cassandra's errors become one line on stderr and exit 1."""

    async def main() -> T:
        async with open_cassandra(config.cassandra, create_keyspace=False) as session:
            return await work(session)

    # The sink's warnings (dead letters a replay rewrote) as the daemons log them.  The
    # driver's connection warnings are left out: the one line of an error below says it all.
    logs.configure("warning", config.log.format)
    logging.getLogger("cassandra").setLevel(logging.CRITICAL + 1)
    try:
        return trio.run(main)
    except (StorageError, SinkError, BaseExceptionGroup) as exc:
        if (refused := find_error(exc, click.ClickException)) is not None:
            raise refused from None  # a command's own error, from inside a nursery
        error = find_error(exc, StorageError) or find_error(exc, SinkError)
        if error is None:
            raise
        if isinstance(error, SchemaMismatch):
            for problem in error.problems:
                error_line(problem)
            sys.exit(1)
        _fail(str(error))


def _cassandra_group(config: PipelineConfig, name: str) -> ConsumerSection:
    section = group_section(config, name)
    if section.group.sink != "cassandra" or section.cassandra is None:
        _misconfigured(
            f"group {name!r} does not write to Cassandra (sink = {section.group.sink!r})"
        )
    return section


def _only_group(
    config: PipelineConfig, name: str | None, materializer: str | None = None
) -> ConsumerSection:
    """``--group``, or the only Cassandra group (of ``materializer``) when there is one."""
    if name is not None:
        section = _cassandra_group(config, name)
        if materializer is not None and _materializer(section) != materializer:
            _misconfigured(
                f"group {name!r} runs the {_materializer(section)} materializer, not {materializer}"
            )
        return section
    candidates = [
        s
        for s in queries.cassandra_sections(config)
        if materializer is None or _materializer(s) == materializer
    ]
    kind = "Cassandra" if materializer is None else f"{materializer} materializer"
    if not candidates:
        what = "writes to Cassandra" if materializer is None else f"runs the {kind}"
        _misconfigured(f"no consumer group {what}")
    if len(candidates) > 1:
        names = ", ".join(s.name for s in candidates)
        raise click.UsageError(f"--group is required: the {kind} groups are {names}")
    return candidates[0]


def _materializer(section: ConsumerSection) -> str:
    assert section.cassandra is not None
    return section.cassandra.materializer


# -- schema ----------------------------------------------------------------------------------


@click.group("schema")
def schema_group() -> None:
    """The pipeline's Cassandra tables: print, create or migrate, and compare them."""


def _plan(
    config_path: Path | None, group_name: str | None
) -> tuple[PipelineConfig, queries.SchemaPlan]:
    config = load_config(config_path)
    if group_name is not None:
        sections = [_cassandra_group(config, group_name)]
    else:
        sections = queries.cassandra_sections(config)
    return config, queries.plan_schema(config, sections)


def _problem_line(problem: queries.SchemaProblem) -> str:
    return (
        problem.problem if problem.group is None else f"group {problem.group!r}: {problem.problem}"
    )


@schema_group.command("show")
@config_option
@group_option
def schema_show(config_path: Path | None, group_name: str | None) -> None:
    """Print the CQL of every table the Cassandra groups own (without connecting)."""
    _, plan = _plan(config_path, group_name)
    click.echo(queries.schema_cql(plan), nl=False)
    for problem in plan.conflicts:
        error_line(_problem_line(problem))
    if plan.conflicts:
        sys.exit(1)


@schema_group.command("apply")
@config_option
@group_option
def schema_apply(config_path: Path | None, group_name: str | None) -> None:
    """Create the keyspace and tables, migrate them, then check each group as its sink does;
    exit 1 naming each problem."""
    config, plan = _plan(config_path, group_name)
    done, problems = _run(config, lambda session: queries.apply_schema(session, config, plan))
    for line in done:
        click.echo(line)
    if not done and not problems:
        click.echo("schema up to date")
    for problem in problems:
        error_line(_problem_line(problem))
    if problems:
        sys.exit(1)


@schema_group.command("diff")
@config_option
@group_option
@json_lines_option
def schema_diff(config_path: Path | None, group_name: str | None, as_json: bool) -> None:
    """Print every difference between the configuration and the cluster, changing nothing;
    exit 1 when there is any."""
    config, plan = _plan(config_path, group_name)
    problems = _run(config, lambda session: queries.diff_schema(session, plan))
    for problem in problems:
        click.echo(json.dumps(problem.record()) if as_json else _problem_line(problem))
    if problems:
        sys.exit(1)
    if not as_json:
        click.echo("schema up to date")


# -- dead letters ----------------------------------------------------------------------------


@click.group("deadletters")
def deadletters_group() -> None:
    """Events a consumer group could not materialize: list, show and replay them."""


async def _has_dead_letters_table(session: CassandraSession, keyspace: str) -> bool:
    return bool(await schema_module.read_tables(session, keyspace, [DEAD_LETTERS.name]))


def _letter_record(letter: DeadLetter) -> dict[str, Any]:
    event = letter.event
    return {
        "group": letter.group,
        "category": text(event.category),
        "journal_id": str(event.journal_id),
        "partition": event.partition,
        "offset": event.offset,
        "event_time": event.time_ms,
        "time_us": event.time_us,
        "materializer": letter.materializer,
        "error": letter.error,
        "message_bytes": len(event.message),
        "failed_at": letter.failed_at_ms,
    }


@deadletters_group.command("list")
@config_option
@group_option
@click.option("--category", "-c", help="Only this category (exact, as text).")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many.")
@json_lines_option
def deadletters_list(
    config_path: Path | None,
    group_name: str | None,
    category: str | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """One line per dead letter (of --group, or of every group that has any)."""
    config = load_config(config_path)
    keyspace = config.cassandra.keyspace
    raw = None if category is None else category_bytes(category)

    async def work(session: CassandraSession) -> list[DeadLetter]:
        if not await _has_dead_letters_table(session, keyspace):
            return []
        if group_name is not None:
            groups = [group_name]
        else:
            groups = await queries.dead_letter_groups(session, keyspace)
        return await queries.list_letters(session, keyspace, groups, category=raw, limit=limit)

    letters = _run(config, work)
    if as_json:
        for letter in letters:
            click.echo(json.dumps(_letter_record(letter)))
        return
    click.echo(
        f"{'GROUP':16} {'CATEGORY':24} {'PART':>4} {'OFFSET':>10} {'EVENT TIME':24} "
        f"{'MATERIALIZER':12} {'BYTES':>9} {'JOURNAL':36} ERROR"
    )
    for letter in letters:
        r = _letter_record(letter)
        click.echo(
            f"{r['group'][:16]:16} {r['category'][:24]:24} {r['partition']:>4} "
            f"{r['offset']:>10} {iso(r['event_time']):24} {r['materializer'][:12]:12} "
            f"{r['message_bytes']:>9} {r['journal_id']:36} {' '.join(r['error'].split())}"
        )


@deadletters_group.command("show")
@config_option
@group_option
@click.option("--category", "-c", required=True, help="The category (exact, as text).")
@click.option("--partition", "-p", type=click.IntRange(min=0), required=True)
@click.option("--offset", type=click.IntRange(min=0), required=True)
@click.option("--journal-id", type=click.UUID, help="The origin journal (when several have one).")
def deadletters_show(
    config_path: Path | None,
    group_name: str | None,
    category: str,
    partition: int,
    offset: int,
    journal_id: uuid.UUID | None,
) -> None:
    """Print one dead letter whole as JSON (the message as text, or base64)."""
    config = load_config(config_path)
    group = group_name if group_name is not None else _only_group(config, None).name
    keyspace = config.cassandra.keyspace
    raw = category_bytes(category)

    async def work(session: CassandraSession) -> list[DeadLetter]:
        if not await _has_dead_letters_table(session, keyspace):
            return []
        return await queries.find_letters(
            session, keyspace, group, raw, partition, offset, journal_id
        )

    found = _run(config, work)
    where = f"{category}/{partition}@{offset}"
    if not found:
        _fail(f"no dead letter of group {group!r} at {where}")
    if len(found) > 1:
        journals = ", ".join(str(letter.event.journal_id) for letter in found)
        _fail(f"dead letters at {where} from several journals: pass --journal-id ({journals})")
    letter = found[0]
    record = with_message(_letter_record(letter), letter.event.message)
    if letter.event.metadata:
        record["metadata"] = metadata_record(letter.event.metadata)
    click.echo(json.dumps(record))


@deadletters_group.command("replay")
@config_option
@group_option
@click.option("--category", "-c", help="Only this category (exact, as text).")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Materialize without writing or deleting anything (values Cassandra itself refuses "
    "show only in a real replay).",
)
def deadletters_replay(
    config_path: Path | None, group_name: str | None, category: str | None, dry_run: bool
) -> None:
    """Run dead letters through the group's materializer as configured now; delete those
    written, keep (updated) those still failing; exit 1 when some still fail."""
    config = load_config(config_path)
    section = _only_group(config, group_name)
    keyspace = config.cassandra.keyspace
    raw = None if category is None else category_bytes(category)

    async def work(session: CassandraSession) -> queries.ReplayOutcome:
        if not await _has_dead_letters_table(session, keyspace):
            return queries.ReplayOutcome([], [])
        letters = await queries.list_letters(session, keyspace, [section.name], category=raw)
        if not letters:
            return queries.ReplayOutcome([], [])
        if dry_run:
            assert section.cassandra is not None
            materializer = build_materializer(section.cassandra)
            return await queries.dry_run_letters(materializer, session, keyspace, letters)
        sink = queries.group_sink(config, section, session)
        await sink.start()
        label = f"replaying {len(letters)} dead letters of {section.name}"
        with click.progressbar(length=len(letters), label=label, file=sys.stderr) as bar:
            return await queries.replay_letters(
                sink, session, keyspace, letters, progress=bar.update
            )

    outcome = _run(config, work)
    for letter, reason in outcome.failing:
        click.echo(f"still failing: {letter.event.position}: {' '.join(reason.split())}", err=True)
    verb = "would replay" if dry_run else "replayed"
    click.echo(f"{verb} {len(outcome.replayed)}, still failing {len(outcome.failing)}")
    if outcome.failing:
        sys.exit(1)


# -- events ----------------------------------------------------------------------------------


@click.command("events")
@config_option
@click.option("--category", "-c", required=True, help="The category (exact, as text).")
@time_option("--since", "Events at or after this time", default="-10m")
@time_option("--until", "Events before this time", default="now")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many events.")
@click.option(
    "--max-buckets",
    type=click.IntRange(min=1),
    default=queries.DEFAULT_MAX_BUCKETS,
    show_default=True,
    help="Refuse a range of more buckets (one query each).",
)
@group_option
def events_command(
    config_path: Path | None,
    category: str,
    since: int,
    until: int,
    limit: int | None,
    max_buckets: int,
    group_name: str | None,
) -> None:
    """Print a category's rows of the events table as JSON lines, oldest first."""
    config = load_config(config_path)
    section = _only_group(config, group_name, "events")
    assert section.cassandra is not None
    options: EventsOptions = section.cassandra.options
    since_ms, until_ms = since, until
    if since_ms >= until_ms:
        raise click.UsageError(
            f"--since ({iso(since_ms)}) must be before --until ({iso(until_ms)})"
        )
    try:
        queries.bucket_starts(since_ms, until_ms, options.bucket_s, max_buckets)
    except queries.TooManyBuckets as exc:
        raise click.UsageError(str(exc)) from None
    keyspace = config.cassandra.keyspace
    raw = category_bytes(category)

    async def work(session: CassandraSession) -> None:
        if not await schema_module.read_tables(session, keyspace, [options.table]):
            _fail(
                f"table {keyspace}.{options.table} does not exist (group {section.name!r} has "
                "not started yet: pipeline schema apply creates it)"
            )
        async for event in queries.read_events(
            session,
            keyspace,
            options,
            raw,
            since_ms,
            until_ms,
            limit=limit,
            max_buckets=max_buckets,
        ):
            click.echo(json.dumps(_event_record(event)))

    _run(config, work)


def _event_record(event: queries.StoredEvent) -> dict[str, Any]:
    record = with_message(
        {
            "category": text(event.category),
            "bucket": event.bucket_ms,
            "event_time": event.event_time_ms,
            "journal_id": str(event.journal_id),
            "partition": event.partition,
            "offset": event.offset,
        },
        event.message,
    )
    if event.metadata:
        record["metadata"] = metadata_record(event.metadata)
    return record
