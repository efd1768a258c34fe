"""What ``pipeline schema``, ``pipeline deadletters`` and ``pipeline events`` ask of Cassandra.

Plain functions over a `CassandraSession` and the configuration, returning plain values: the
click layer (`pipeline.cli.cassandra`) parses flags, opens the session and prints.  Nothing here
prints or exits, so tests call these without click.

Tables are always named with their keyspace, so a session need not ``USE`` it, and a command
that only reads never creates the keyspace.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from consumers.cassandra import CassandraSession, Replication, ReplicationStrategy
from consumers.errors import SchemaMismatch
from consumers.origin import JournalIdentity
from consumers.sinks.cassandra import (
    DEAD_LETTERS,
    SCHEMA_VERSIONS,
    CassandraSink,
    DeadLetter,
    Event,
    EventsOptions,
    LiveTable,
    MappingMaterializer,
    Materializer,
    MaterializerError,
    TableSpec,
    delete_dead_letter,
    get_dead_letter,
    list_dead_letters,
    schema,
)
from consumers.sinks.cassandra import deadletters as deadletters_module
from pipeline.config import PipelineConfig
from pipeline.consumer_app import build_materializer
from pipeline.consumer_config import ConsumerSection

# ``pipeline events`` reads one partition per bucket: ten thousand buckets are over a year of
# the default hourly buckets, and about ten seconds of queries against one local node.
DEFAULT_MAX_BUCKETS = 10_000
# Rows per query when reading events back: a page of 1000 rows of 200 bytes is 200 KB, so a
# bucket of any size is read in bounded memory.
EVENTS_PAGE_ROWS = 1000
# Dead letters replayed per write: the sink batches rows by partition key within it.
REPLAY_CHUNK = 100


def cassandra_sections(config: PipelineConfig) -> list[ConsumerSection]:
    """The configured groups that write to Cassandra, in configuration order."""
    return [s for s in config.consumers if s.group.sink == "cassandra" and s.cassandra]


def group_sink(
    config: PipelineConfig, section: ConsumerSection, session: CassandraSession
) -> CassandraSink:
    """The group's sink as ``pipeline consume`` builds it (`build_materializer`), on
    ``session``."""
    assert section.cassandra is not None, "a Cassandra group"
    return CassandraSink(
        session,
        build_materializer(section.cassandra),
        group=section.name,
        journal_id=JournalIdentity(config.journal.dir),
        config=config.cassandra,
    )


# -- schema ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SchemaProblem:
    """One difference between what the configuration needs and what the cluster has.

    ``group`` is None for what every group shares (the keyspace, ``schema_versions``,
    ``dead_letters``); ``table`` is None when the problem is not one table's.
    """

    problem: str
    group: str | None = None
    table: str | None = None

    def record(self) -> dict[str, Any]:
        return {"group": self.group, "table": self.table, "problem": self.problem}


@dataclass(frozen=True)
class OwnedTable:
    """A table the pipeline creates and migrates; ``group`` None when every group shares it."""

    spec: TableSpec
    group: str | None


@dataclass(frozen=True)
class SchemaPlan:
    """The tables the selected groups need: the ones the pipeline owns (each group's, then
    ``schema_versions`` and ``dead_letters``), and per group its materializer."""

    keyspace: str
    replication: Replication
    tables: tuple[OwnedTable, ...]
    groups: tuple[tuple[str, Materializer], ...]
    conflicts: tuple[SchemaProblem, ...] = ()

    def foreign(self) -> list[tuple[str, Materializer, str]]:
        """(group, materializer, table) for each table a group writes but does not own."""
        owned = {t.spec.name for t in self.tables}
        return [
            (group, materializer, name)
            for group, materializer in self.groups
            for name in materializer.writes()
            if name not in owned
        ]


def plan_schema(config: PipelineConfig, sections: Sequence[ConsumerSection]) -> SchemaPlan:
    """The schema of ``sections`` (Cassandra groups), without connecting."""
    tables: dict[str, OwnedTable] = {}
    groups: list[tuple[str, Materializer]] = []
    conflicts: list[SchemaProblem] = []
    for section in sections:
        assert section.cassandra is not None
        materializer = build_materializer(section.cassandra)
        groups.append((section.name, materializer))
        for spec in materializer.tables():
            seen = tables.get(spec.name)
            if seen is None:
                tables[spec.name] = OwnedTable(spec, section.name)
            elif seen.spec != spec:
                conflicts.append(
                    SchemaProblem(
                        f"groups {seen.group!r} and {section.name!r} declare table "
                        f"{spec.name!r} differently: give one of them another table",
                        section.name,
                        spec.name,
                    )
                )
    shared = [OwnedTable(SCHEMA_VERSIONS, None), OwnedTable(DEAD_LETTERS, None)]
    for table in shared:
        if table.spec.name in tables:
            conflicts.append(
                SchemaProblem(
                    f"group {tables[table.spec.name].group!r} declares table "
                    f"{table.spec.name!r}, which the pipeline keeps for itself",
                    tables[table.spec.name].group,
                    table.spec.name,
                )
            )
    return SchemaPlan(
        config.cassandra.keyspace,
        config.cassandra.replication,
        (*tables.values(), *shared),
        tuple(groups),
        tuple(conflicts),
    )


def schema_cql(plan: SchemaPlan) -> str:
    """Every statement of the plan as CQL (`schema.cql_of`), with a comment naming the owner."""
    keyspace = plan.keyspace
    parts = [
        f"-- keyspace {keyspace}: `pipeline schema apply` creates and migrates what follows",
        f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {plan.replication.cql()};",
    ]
    kinds = dict(plan.groups)
    for table in plan.tables:
        spec = table.spec
        if table.group is None:
            owner = "every group"
        else:
            owner = f"group {table.group!r} ({kinds[table.group].name} materializer)"
        parts.append(f"\n-- {owner}: table {spec.name}, version {spec.version}")
        parts.append(schema.cql_of(spec, keyspace))
    for group, materializer, name in plan.foreign():
        parts.append(
            f"\n-- group {group!r} ({materializer.name} materializer) also writes "
            f"{keyspace}.{name}, a table you create (docs/tables.md)"
        )
        if isinstance(materializer, MappingMaterializer):
            options = materializer.options
            lines = {column: f"{column} <- {source}" for column, source in options.columns.items()}
            lines.update(
                {column: f"{column} = {value!r}" for column, value in options.constants.items()}
            )
            parts += [f"--   {lines[column]}" for column in sorted(lines)]
    return "\n".join(parts) + "\n"


async def keyspace_replication(session: CassandraSession, keyspace: str) -> dict[str, str] | None:
    """The keyspace's replication map as system_schema has it; None when there is none."""
    rows = await session.execute(
        "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s", (keyspace,)
    )
    row = rows.one()
    return None if row is None else {str(k): str(v) for k, v in dict(row[0]).items()}


def _replication_fits(live: Mapping[str, str], wanted: Replication) -> bool:
    entries = dict(live)
    strategy = entries.pop("class", "").rsplit(".", 1)[-1]
    if wanted.strategy is ReplicationStrategy.SIMPLE:
        expected = {"replication_factor": str(wanted.factor)}
    else:
        expected = {dc: str(n) for dc, n in wanted.datacenters.items()}
    return strategy == wanted.strategy.value and entries == expected


async def diff_schema(session: CassandraSession, plan: SchemaPlan) -> list[SchemaProblem]:
    """Every difference between the plan and the cluster, changing nothing."""
    keyspace = plan.keyspace
    found = list(plan.conflicts)
    replication = await keyspace_replication(session, keyspace)
    if replication is None:
        found.append(SchemaProblem(f"keyspace {keyspace!r} does not exist"))
    elif not _replication_fits(replication, plan.replication):
        found.append(
            SchemaProblem(
                f"keyspace {keyspace!r} has replication {replication}, configured "
                f"{plan.replication.cql()} (apply does not change it: ALTER KEYSPACE, then repair)"
            )
        )
    names = [t.spec.name for t in plan.tables] + [name for _, _, name in plan.foreign()]
    live = await schema.read_tables(session, keyspace, names)
    versions = await schema.applied_versions(session, keyspace)
    for table in plan.tables:
        spec = table.spec
        found += [SchemaProblem(p, table.group, spec.name) for p in schema.problems([spec], live)]
        if spec.name not in live or spec is SCHEMA_VERSIONS:
            continue
        recorded = versions.get(spec.name)
        if recorded is None:
            problem = f"table {spec.name!r} has no version in schema_versions (apply adopts it)"
        elif recorded < spec.version:
            problem = (
                f"table {spec.name!r} is at version {recorded}, this pipeline's is "
                f"{spec.version} (apply migrates it)"
            )
        elif recorded > spec.version:
            problem = (
                f"table {spec.name!r} is at version {recorded}, newer than this pipeline's "
                f"{spec.version}: upgrade the pipeline"
            )
        else:
            continue
        found.append(SchemaProblem(problem, table.group, spec.name))
    for group, _, name in plan.foreign():
        if name not in live:
            found.append(SchemaProblem(f"table {name!r} does not exist", group, name))
    for group, materializer in plan.groups:
        writes = {*materializer.writes(), DEAD_LETTERS.name}
        if not writes <= set(live):
            continue  # reported above: a check of missing tables says nothing more
        foreign = [n for g, _, n in plan.foreign() if g == group]
        unfit = check_materializer(materializer, {n: live[n] for n in writes})
        if unfit is not None:
            only = foreign[0] if len(foreign) == 1 else None
            found.append(SchemaProblem(unfit, group, only))
    return found


def check_materializer(materializer: Materializer, live: Mapping[str, LiveTable]) -> str | None:
    """Why the live tables do not fit the materializer (its own `check`), or None."""
    try:
        materializer.check(live)
    except MaterializerError as exc:
        return f"{materializer.name} materializer: {exc}"
    return None


async def apply_schema(
    session: CassandraSession, config: PipelineConfig, plan: SchemaPlan
) -> tuple[list[str], list[SchemaProblem]]:
    """Create the keyspace when missing, apply every group's tables and ``dead_letters``
    (`schema.apply`), then check each group as its sink does at start.

    Returns what was done, one line each, and what still does not fit.
    """
    keyspace = plan.keyspace
    done: list[str] = []
    if await keyspace_replication(session, keyspace) is None:
        await session.create_keyspace(keyspace, plan.replication)
        done.append(f"created keyspace {keyspace} with replication {plan.replication.cql()}")
    if plan.conflicts:
        return done, list(plan.conflicts)
    found: list[SchemaProblem] = []
    work: list[tuple[str, list[TableSpec]]] = [
        (f"group {group}", [*materializer.tables(), DEAD_LETTERS])
        for group, materializer in plan.groups
    ] or [("pipeline schema apply", [DEAD_LETTERS])]
    for owner, specs in work:
        try:
            done += await schema.apply(session, keyspace, specs, owner=owner)
        except SchemaMismatch as exc:
            group = owner.removeprefix("group ") if owner.startswith("group ") else None
            found += [SchemaProblem(p, group, _table_named(p)) for p in exc.problems]
    if found:
        return done, found
    sections = {s.name: s for s in cassandra_sections(config)}
    for group, _ in plan.groups:
        try:
            await group_sink(config, sections[group], session).start()
        except SchemaMismatch as exc:
            found += [SchemaProblem(p, group, _table_named(p)) for p in exc.problems]
    return done, found


_TABLE_NAMED = re.compile(r"table '([a-z][a-z0-9_]*)'")


def _table_named(problem: str) -> str | None:
    """The table a problem sentence of `schema` or a materializer names first."""
    found = _TABLE_NAMED.search(problem)
    return None if found is None else found.group(1)


# -- dead letters ----------------------------------------------------------------------------


async def dead_letter_groups(session: CassandraSession, keyspace: str) -> list[str]:
    """Every group that has dead letters (also groups no longer configured)."""
    rows = await session.execute(
        f"SELECT DISTINCT consumer_group FROM {keyspace}.{deadletters_module.TABLE}"
    )
    return sorted(str(r[0]) for r in rows.rows)


async def list_letters(
    session: CassandraSession,
    keyspace: str,
    groups: Sequence[str],
    *,
    category: bytes | None = None,
    limit: int | None = None,
) -> list[DeadLetter]:
    """The dead letters of ``groups``, group by group in key order, at most ``limit``."""
    found: list[DeadLetter] = []
    for group in groups:
        remaining = None if limit is None else limit - len(found)
        if remaining is not None and remaining <= 0:
            break
        found += await list_dead_letters(
            session, keyspace, group, category=category, limit=remaining
        )
    return found


async def find_letters(
    session: CassandraSession,
    keyspace: str,
    group: str,
    category: bytes,
    partition: int,
    offset: int,
    journal_id: uuid.UUID | None = None,
) -> list[DeadLetter]:
    """The dead letters at ``category/partition@offset`` (of every journal, unless one is
    named): usually one."""
    if journal_id is not None:
        one = await get_dead_letter(
            session, keyspace, group, category, journal_id, partition, offset
        )
        return [] if one is None else [one]
    return [
        letter
        for letter in await list_dead_letters(session, keyspace, group, category=category)
        if letter.event.partition == partition and letter.event.offset == offset
    ]


_CUT = re.compile(r"\(message of \d+ bytes cut to \d+\)")


def was_cut(letter: DeadLetter) -> bool:
    """Whether the dead letter keeps only the start of its message (too large to keep)."""
    return (
        len(letter.event.message) == deadletters_module.MAX_KEPT_MESSAGE_BYTES
        and _CUT.search(letter.error) is not None
    )


CUT_REASON = (
    "the dead letter keeps only the start of the message: replay it from the journal "
    "(pipeline offsets reset), then delete the dead letter"
)


@dataclass
class ReplayOutcome:
    """Which dead letters were written (and deleted), which still fail and why."""

    replayed: list[DeadLetter]
    failing: list[tuple[DeadLetter, str]]


def _key(event: Event) -> tuple[bytes, uuid.UUID, int, int]:
    return (event.category, event.journal_id, event.partition, event.offset)


async def replay_letters(
    sink: CassandraSink,
    session: CassandraSession,
    keyspace: str,
    letters: Sequence[DeadLetter],
    *,
    progress: Callable[[int], None] = lambda _: None,
) -> ReplayOutcome:
    """Run the letters' events through ``sink`` (`CassandraSink.write_events`) and delete the
    dead letters of those written; the sink rewrites the ones still failing with their new
    reason.  Raises ``SinkError`` when Cassandra cannot take them for now (those deleted so far
    stay deleted, the rest stay)."""
    outcome = ReplayOutcome([], [])
    for start in range(0, len(letters), REPLAY_CHUNK):
        chunk = letters[start : start + REPLAY_CHUNK]
        whole = [letter for letter in chunk if not was_cut(letter)]
        outcome.failing += [(letter, CUT_REASON) for letter in chunk if was_cut(letter)]
        rejected = await sink.write_events([letter.event for letter in whole], "deadletters replay")
        reasons = {_key(r.event): r.reason for r in rejected}
        for letter in whole:
            reason = reasons.get(_key(letter.event))
            if reason is None:
                await delete_dead_letter(session, keyspace, letter)
                outcome.replayed.append(letter)
            else:
                outcome.failing.append((letter, reason))
        progress(len(chunk))
    return outcome


async def dry_run_letters(
    materializer: Materializer,
    session: CassandraSession,
    keyspace: str,
    letters: Sequence[DeadLetter],
) -> ReplayOutcome:
    """What `replay_letters` would do as far as the materializer and the live tables tell,
    writing nothing (values Cassandra itself refuses show only in a real replay).

    Raises `SchemaMismatch` when the tables do not fit the materializer.
    """
    writes = {*materializer.writes(), DEAD_LETTERS.name}
    live = await schema.read_tables(session, keyspace, writes)
    missing = sorted(writes - set(live))
    if missing:
        raise SchemaMismatch([f"table {name!r} does not exist" for name in missing])
    problem = check_materializer(materializer, live)
    if problem is not None:
        raise SchemaMismatch([problem])
    outcome = ReplayOutcome([], [])
    for letter in letters:
        reason = CUT_REASON if was_cut(letter) else _dry_run(materializer, live, letter.event)
        if reason is None:
            outcome.replayed.append(letter)
        else:
            outcome.failing.append((letter, reason))
    return outcome


def _dry_run(materializer: Materializer, live: Mapping[str, LiveTable], event: Event) -> str | None:
    try:
        out = materializer.materialize([event])
    except Exception as exc:
        return f"{materializer.name} materializer raised {exc!r}"
    if out.rejected:
        return out.rejected[0].reason
    for row in out.rows:
        table = live.get(row.table)
        if table is None:
            return f"table {row.table!r} is not one the materializer declared"
        unknown = sorted(set(row.values) - set(table.columns))
        if unknown:
            return f"table {row.table!r} has no column {unknown[0]!r}"
    return None


# -- events ----------------------------------------------------------------------------------


class TooManyBuckets(ValueError):  # noqa: N818 (a refusal, as the package's errors)
    """A time range spans more buckets than a read may query."""


def bucket_starts(since_ms: int, until_ms: int, bucket_s: int, max_buckets: int) -> range:
    """The start of every bucket holding times in ``[since_ms, until_ms)``, oldest first."""
    bucket_ms = bucket_s * 1000
    first = since_ms - since_ms % bucket_ms
    buckets = range(first, until_ms, bucket_ms) if until_ms > since_ms else range(0)
    if len(buckets) > max_buckets:
        raise TooManyBuckets(
            f"the range spans {len(buckets)} buckets of {bucket_s} s, more than {max_buckets}: "
            "narrow --since/--until or raise --max-buckets"
        )
    return buckets


@dataclass(frozen=True)
class StoredEvent:
    """A row of an events table."""

    category: bytes
    bucket_ms: int
    event_time_ms: int
    journal_id: uuid.UUID
    partition: int
    offset: int
    message: bytes
    metadata: dict[bytes, bytes] | None


_EVENT_COLUMNS = (
    "category, toUnixTimestamp(bucket), toUnixTimestamp(event_time), journal_id, partition,"
    " offset, message, metadata"
)


async def read_events(
    session: CassandraSession,
    keyspace: str,
    options: EventsOptions,
    category: bytes,
    since_ms: int,
    until_ms: int,
    *,
    limit: int | None = None,
    max_buckets: int = DEFAULT_MAX_BUCKETS,
    page_rows: int = EVENTS_PAGE_ROWS,
) -> AsyncIterator[StoredEvent]:
    """The events of ``category`` with ``since_ms <= event time < until_ms``, oldest first
    (then by journal, partition, offset), bucket by bucket, a page at a time.

    Raises `TooManyBuckets` (before any query) when the range spans more than ``max_buckets``.
    """
    buckets = bucket_starts(since_ms, until_ms, options.bucket_s, max_buckets)
    table = f"{keyspace}.{options.table}"
    where = f"SELECT {_EVENT_COLUMNS} FROM {table} WHERE category = ? AND bucket = ?"
    first = await session.prepare(f"{where} AND (event_time) >= (?) AND (event_time) < (?) LIMIT ?")
    # The next page starts after the last row's whole clustering key.
    after = await session.prepare(
        f"{where} AND (event_time, journal_id, partition, offset) > (?, ?, ?, ?)"
        " AND (event_time) < (?) LIMIT ?"
    )
    remaining = limit
    for bucket in buckets:
        last: StoredEvent | None = None
        while remaining is None or remaining > 0:
            size = page_rows if remaining is None else min(page_rows, remaining)
            if last is None:
                params: tuple[Any, ...] = (category, bucket, since_ms, until_ms, size)
                rows = await session.execute(first, params)
            else:
                key = (last.event_time_ms, last.journal_id, last.partition, last.offset)
                rows = await session.execute(after, (category, bucket, *key, until_ms, size))
            for row in rows.rows:
                last = _stored_event(row)
                yield last
            if remaining is not None:
                remaining -= len(rows)
            if len(rows) < size:
                break


def _stored_event(row: Sequence[Any]) -> StoredEvent:
    category, bucket, event_time, journal_id, partition, offset, message, metadata = row
    return StoredEvent(
        bytes(category),
        int(bucket),
        int(event_time),
        journal_id,
        int(partition),
        int(offset),
        bytes(message or b""),
        {bytes(k): bytes(v) for k, v in metadata.items()} if metadata else None,
    )
